"""One misbehaving plugin, installed for real, harms nobody else.

Each test installs a fake distribution (``plugin_fakes.FakeSite``) next to the real cpu_numpy
plugin and runs ``mlplug ...`` or a Python snippet in a child process: the bad plugin is
reported with its reason, and cpu_numpy is still listed ``ok`` and still creates a backend.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plugin_fakes import HANG_GUARD_S, FakeSite, run_mlplug, run_python, with_default_sigint
from plugin_fakes import sources as src

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mlplug_cpu_numpy") is None,
    reason="needs mlplug-cpu-numpy",
)

#: Prints what new_backend gives for cpu_numpy, so tests see it still works.
CPU_NUMPY_WORKS = """
import mlplug
with mlplug.new_backend(None, backend="cpu_numpy") as be:
    print("created", type(be).__module__.split(".")[0], be.name)
"""


@pytest.fixture
def site(tmp_path: Path) -> FakeSite:
    """Return an empty folder of fake distributions."""
    return FakeSite(tmp_path / "site")


#: MLPLUG_PROBE_TIMEOUT for the tests with a hanging plugin. The hang always uses all of it, and
#: the well-behaved cpu_numpy probed beside it must finish within it: at 2 s it did not on a
#: loaded two-core machine; 5 s leaves it a margin and keeps each hang test near 6 s.
PROBE_TIMEOUT = "5"


def backends_json(site: FakeSite, plugins: str, **env: str) -> dict[str, list[dict[str, object]]]:
    """Run ``mlplug backends --json`` with MLPLUG_PLUGINS=plugins; rows grouped by name."""
    proc = run_mlplug("backends", "--json", env=site.env(MLPLUG_PLUGINS=plugins, **env))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows: dict[str, list[dict[str, object]]] = {}
    for row in json.loads(proc.stdout):
        rows.setdefault(str(row["name"]), []).append(row)
    return rows


def assert_cpu_numpy_ok(site: FakeSite, rows: dict[str, list[dict[str, object]]], plugins: str):  # type: ignore[no-untyped-def]
    """cpu_numpy is listed ok with its device, and creating it works (in a library process,
    which screens plugins for crashes when asked to with ``MLPLUG_SCREEN_PLUGINS=1``)."""
    assert [r["status"] for r in rows["cpu_numpy"]] == ["ok"]
    assert rows["cpu_numpy"][0]["devices"] == 1
    proc = run_python(CPU_NUMPY_WORKS, site.env(MLPLUG_PLUGINS=plugins, MLPLUG_SCREEN_PLUGINS="1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["created", "mlplug_cpu_numpy", "cpu_numpy"]


def one_error_line(stderr: str) -> str:
    """The single ``error:`` line of ``stderr`` (and no traceback)."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, stderr
    return lines[0]


# -- plugins that break the hook contract ------------------------------------------------------


def test_misspelt_hook_is_an_error_row(site: FakeSite) -> None:
    """A plugin implementing ``mlplug_register_backend`` (singular) is listed as an error
    naming the unknown hook; ``mlplug backends`` and cpu_numpy keep working."""
    site.add("misspelt", src.MISSPELT_HOOK)
    rows = backends_json(site, "cpu_numpy,misspelt")
    (row,) = rows["misspelt"]
    assert row["status"] == "error"
    assert "mlplug_register_backend" in str(row["error"])
    assert "unknown hook" in str(row["error"])
    assert_cpu_numpy_ok(site, rows, "cpu_numpy,misspelt")


def test_bad_hook_signature_is_an_error_row(site: FakeSite) -> None:
    """A hook asking for an argument mlplug does not pass is an error naming that argument."""
    site.add("badsig", src.BAD_SIGNATURE)
    rows = backends_json(site, "cpu_numpy,badsig")
    (row,) = rows["badsig"]
    assert row["status"] == "error"
    assert "config" in str(row["error"])
    assert_cpu_numpy_ok(site, rows, "cpu_numpy,badsig")


def test_hook_that_raises_registers_nothing(site: FakeSite) -> None:
    """A hook raising after one ``register`` call is an error; its half registration is gone."""
    site.add("hookraises", src.HOOK_RAISES)
    rows = backends_json(site, "cpu_numpy,hookraises")
    assert "half_registered" not in rows
    (row,) = rows["hookraises"]
    assert row["status"] == "error"
    assert row["error"] == "ValueError: the hook gave up half-way"
    assert_cpu_numpy_ok(site, rows, "cpu_numpy,hookraises")
    proc = run_mlplug("--debug", "backends", env=site.env(MLPLUG_PLUGINS="cpu_numpy,hookraises"))
    assert proc.returncode == 0
    assert "Traceback" in proc.stderr and "the hook gave up half-way" in proc.stderr


# -- plugins that take the interpreter down --------------------------------------------------


@pytest.mark.parametrize("source", [src.CRASH_AT_IMPORT, src.CRASH_IN_HOOK])
def test_plugin_crashing_the_interpreter_is_an_error_row(site: FakeSite, source: str) -> None:
    """A plugin whose import or hook calls ``os.abort()`` is reported as crashed; listing
    backends, listing devices and creating cpu_numpy all keep working."""
    site.add("crasher", source)
    rows = backends_json(site, "cpu_numpy,crasher")
    (row,) = rows["crasher"]
    assert row["status"] == "error"
    assert "crashed" in str(row["error"]) and "SIGABRT" in str(row["error"])
    assert_cpu_numpy_ok(site, rows, "cpu_numpy,crasher")
    proc = run_mlplug("devices", "--json", env=site.env(MLPLUG_PLUGINS="cpu_numpy,crasher"))
    assert proc.returncode == 0, proc.stderr
    assert [d["plugin"] for d in json.loads(proc.stdout)] == ["cpu_numpy"]


def test_plugin_hanging_at_import_is_an_error_row(site: FakeSite) -> None:
    """A plugin whose import never finishes is given up after MLPLUG_PROBE_TIMEOUT seconds
    and reported; the others load."""
    site.add("sleeper", src.HANG_AT_IMPORT)
    rows = backends_json(site, "cpu_numpy,sleeper", MLPLUG_PROBE_TIMEOUT=PROBE_TIMEOUT)
    (row,) = rows["sleeper"]
    assert row["status"] == "error"
    assert f"did not finish loading within {PROBE_TIMEOUT} s" in str(row["error"])
    assert [r["status"] for r in rows["cpu_numpy"]] == ["ok"]


def test_crashing_plugin_named_by_the_user_is_a_one_line_error(site: FakeSite) -> None:
    """Asking for a backend whose plugin crashed says which plugin and why, in one line."""
    site.add("crasher", src.CRASH_AT_IMPORT)
    proc = run_mlplug("devices", "--backend", "crasher", env=site.env(MLPLUG_PLUGINS="crasher"))
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "crasher" in line and "crashed" in line


# -- names owned, not raced --------------------------------------------------------------------


def test_impostor_name_is_a_conflict_naming_both_distributions(site: FakeSite) -> None:
    """A plugin registering ``cpu_numpy`` does not win by entry-point order: both claims are
    listed as ``conflict``, and asking for the name raises naming both distributions."""
    site.add("impostor", src.IMPOSTOR)
    rows = backends_json(site, "cpu_numpy,impostor")
    claims = rows["cpu_numpy"]
    assert sorted(str(r["distribution"]) for r in claims) == ["fake-impostor", "mlplug-cpu-numpy"]
    assert {r["status"] for r in claims} == {"conflict"}
    assert "MLPLUG_DISABLE_PLUGINS" in str(claims[0]["error"])

    proc = run_python(
        """
        import mlplug
        from mlplug.errors import BackendAlreadyRegisteredError
        try:
            mlplug.new_backend(None, backend="cpu_numpy")
        except BackendAlreadyRegisteredError as exc:
            print(exc)
        """,
        site.env(MLPLUG_PLUGINS="cpu_numpy,impostor"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "mlplug-cpu-numpy" in proc.stdout and "fake-impostor" in proc.stdout

    env = site.env(MLPLUG_PLUGINS="cpu_numpy,impostor")
    proc = run_mlplug("devices", "-b", "cpu_numpy", env=env)
    assert proc.returncode == 1
    assert "fake-impostor" in one_error_line(proc.stderr)

    proc = run_mlplug("devices", env=env)  # every backend: the ambiguous name is skipped, said so
    assert proc.returncode == 0
    assert "mlplug: warning: backend 'cpu_numpy' skipped" in proc.stderr
    assert "fake-impostor" in proc.stderr


def test_user_resolves_a_conflict_by_disabling_the_impostor(site: FakeSite) -> None:
    """With MLPLUG_DISABLE_PLUGINS naming the impostor, ``cpu_numpy`` is the real plugin."""
    site.add("impostor", src.IMPOSTOR)
    rows = backends_json(site, "cpu_numpy,impostor", MLPLUG_DISABLE_PLUGINS="impostor")
    assert [r["distribution"] for r in rows["cpu_numpy"]] == ["mlplug-cpu-numpy"]
    env = site.env(MLPLUG_PLUGINS="cpu_numpy,impostor", MLPLUG_DISABLE_PLUGINS="impostor")
    proc = run_python(CPU_NUMPY_WORKS, env)
    assert proc.stdout.split() == ["created", "mlplug_cpu_numpy", "cpu_numpy"], proc.stderr


def test_unnamed_new_backend_skips_an_ambiguous_name(site: FakeSite) -> None:
    """``new_backend(None)`` never picks a name two plugins claim; it warns and goes on."""
    site.add("impostor", src.IMPOSTOR)
    site.add("fine", src.FINE)
    proc = run_python(
        "import mlplug; print(mlplug.new_backend(None))",
        site.env(MLPLUG_PLUGINS="cpu_numpy,impostor,fine"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "fine backend"
    assert "BackendSkippedWarning" in proc.stderr and "cpu_numpy" in proc.stderr


# -- factories that raise ----------------------------------------------------------------------


def test_named_factory_plain_exception_is_backend_load_error(site: FakeSite) -> None:
    """A factory raising RuntimeError gives BackendLoadError naming the backend, with the
    RuntimeError as its cause."""
    site.add("raiser", src.FACTORY_RAISES)
    proc = run_python(
        """
        import mlplug
        from mlplug.errors import BackendLoadError
        try:
            mlplug.new_backend(None, backend="raiser")
        except BackendLoadError as exc:
            print(exc.backend, type(exc.__cause__).__name__)
        """,
        site.env(MLPLUG_PLUGINS="cpu_numpy,raiser"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["raiser", "RuntimeError"]


def test_unnamed_new_backend_falls_back_past_a_raising_factory(site: FakeSite) -> None:
    """The highest-priority backend raising RuntimeError is skipped, with a warning naming it
    and why; cpu_numpy is created."""
    site.add("raiser", src.FACTORY_RAISES)
    proc = run_python(
        """
        import warnings
        import mlplug
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            be = mlplug.new_backend(None)
        print(be.name)
        for w in caught:
            print(w.category.__name__, w.message)
        """,
        site.env(MLPLUG_PLUGINS="cpu_numpy,raiser"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "cpu_numpy"
    assert any(
        line.startswith("BackendSkippedWarning") and "raiser" in line and "exploded" in line
        for line in lines[1:]
    ), lines


def test_cli_shows_a_plugin_exception_as_one_line(site: FakeSite, tmp_path: Path) -> None:
    """``mlplug inspect --backend raiser`` prints one line naming the backend and the error,
    exit 1; ``--debug`` adds the traceback."""
    from gguf import GGMLQuantizationType as Q
    from model_files import write_llama_gguf

    model = write_llama_gguf(tmp_path / "tiny.gguf", type_mix=(Q.F16,), n_vocab=40).path
    site.add("raiser", src.FACTORY_RAISES)
    env = site.env(MLPLUG_PLUGINS="cpu_numpy,raiser")
    proc = run_mlplug("inspect", str(model), "--backend", "raiser", env=env)
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert line.startswith("mlplug: error: ")
    assert "'raiser'" in line and "the raiser factory exploded" in line

    proc = run_mlplug("--debug", "inspect", str(model), "--backend", "raiser", env=env)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "RuntimeError: the raiser factory exploded" in proc.stderr


# -- device probes ------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def test_hanging_probe_times_out_per_mlplug_probe_timeout(site: FakeSite, tmp_path: Path) -> None:
    """A device enumerator that never returns is an error row after MLPLUG_PROBE_TIMEOUT
    seconds, and neither it nor the process it started survives."""
    site.add("hang", src.HANGING_PROBE)
    pids = tmp_path / "pids"
    rows = backends_json(
        site, "cpu_numpy,hang", MLPLUG_PROBE_TIMEOUT=PROBE_TIMEOUT, FAKE_HANG_PIDS=str(pids)
    )
    (row,) = rows["hang"]
    assert row["status"] == "error"
    assert f"timed out after {PROBE_TIMEOUT} s" in str(row["error"])
    assert [r["status"] for r in rows["cpu_numpy"]] == ["ok"]
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid)


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan"])
def test_invalid_probe_timeout_is_a_usage_error(site: FakeSite, value: str) -> None:
    """An unusable MLPLUG_PROBE_TIMEOUT exits 2 naming the variable."""
    proc = run_mlplug("backends", env=site.env(MLPLUG_PROBE_TIMEOUT=value))
    assert proc.returncode == 2
    assert "MLPLUG_PROBE_TIMEOUT" in one_error_line(proc.stderr)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupting_backends_kills_the_probe(
    site: FakeSite, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """Ctrl-C (or SIGTERM) while a device probe hangs: exit 130 (143), one line on stderr, no
    traceback, and no probe process (nor anything it started) survives."""
    site.add("hang", src.HANGING_PROBE)
    pids = tmp_path / "pids"
    env = site.env(MLPLUG_PLUGINS="cpu_numpy,hang", MLPLUG_PROBE_TIMEOUT="100",
                   FAKE_HANG_PIDS=str(pids))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlplug", "backends"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=with_default_sigint,
    )
    try:
        guard = time.monotonic() + HANG_GUARD_S
        while not pids.exists() and proc.poll() is None and time.monotonic() < guard:
            time.sleep(0.05)
        assert pids.exists(), proc.communicate(timeout=HANG_GUARD_S)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    probe, helper = map(int, pids.read_text().split())
    guard = time.monotonic() + HANG_GUARD_S  # the kernel may take a moment to reap
    while (_alive(probe) or _alive(helper)) and time.monotonic() < guard:
        time.sleep(0.05)
    assert not _alive(probe)
    assert not _alive(helper)
    assert _group_members(probe) == []  # nor anything else in the probe's process group


def test_screening_is_the_cli_default_and_opt_in_for_libraries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A library process does not pay for the crash screen unless asked; the CLI screens."""
    from mlplug import _plugin_screen

    monkeypatch.delenv("MLPLUG_SCREEN_PLUGINS", raising=False)
    monkeypatch.setitem(_plugin_screen._DEFAULT, "screen", False)
    assert not _plugin_screen.screen_enabled()
    monkeypatch.setenv("MLPLUG_SCREEN_PLUGINS", "1")
    assert _plugin_screen.screen_enabled()
    _plugin_screen.screen_by_default()
    monkeypatch.setenv("MLPLUG_SCREEN_PLUGINS", "0")
    assert not _plugin_screen.screen_enabled()
    monkeypatch.delenv("MLPLUG_SCREEN_PLUGINS")
    assert _plugin_screen.screen_enabled()
