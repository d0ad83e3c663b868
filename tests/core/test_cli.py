"""The ``mlplug`` command line: every subcommand, its --json shape, exit codes and errors.

Plugins are faked with throwaway distributions (a ``*.dist-info`` folder with an
``entry_points.txt``) on ``PYTHONPATH`` of a child process, so each test controls exactly which
plugins exist; ``MLPLUG_PLUGINS`` keeps the installed ones out where they would interfere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from mlplug.cli import build_parser, main
from mlplug.cli._common import Progress, format_table

FAKE_DEVICES = """
from mlplug.device import DeviceInfo
from mlplug.errors import BackendLoadError
from mlplug.hookspecs import hookimpl

GIB = 1 << 30


def _factory(model_path, params):
    raise BackendLoadError("fake backends do not compute", backend="{name}")


def _devices():
    return [{devices}]


@hookimpl
def mlplug_register_backends(register):
    register("{name}", _factory, priority={priority}, devices=_devices)
"""

CPU_A = (
    'DeviceInfo(id="0", library="cpu", name="CPU", description="Fake CPU",'
    " total_memory=8 * GIB, free_memory=4 * GIB)"
)
GPU_A = (
    'DeviceInfo(id="0", library="CUDA", name="CUDA0", description="Fake GPU",'
    ' pci_id="0000:01:00.0", total_memory=24 * GIB, free_memory=20 * GIB)'
)
CPU_B = 'DeviceInfo(id="cpu", library="CPU", name="CPU", description="Fake CPU")'
GPU_B = (
    'DeviceInfo(id="0", library="Vulkan", name="Vulkan0", description="Fake GPU",'
    ' pci_id="00000000:01:00.0", total_memory=24 * GIB)'
)
GPU_B2 = (
    'DeviceInfo(id="1", library="Vulkan", name="Vulkan1", description="Other GPU",'
    ' pci_id="0000:02:00.0", total_memory=8 * GIB)'
)

BROKEN_IMPORT = 'raise RuntimeError("fake plugin import failure")\n'

#: A plugin whose backend describes the build of its native library; ``{advice}`` is "" for a
#: build that suits the machine.
FAKE_BUILD = """
from mlplug.device import DeviceInfo
from mlplug.errors import BackendLoadError
from mlplug.hookspecs import hookimpl
from mlplug.plugin_api import BuildInfo


def _factory(model_path, params):
    raise BackendLoadError("fake backends do not compute", backend="fake_built")


def _devices():
    return [DeviceInfo(id="0", library="cpu", name="CPU", description="Fake CPU")]


def _build():
    return BuildInfo(
        summary="fakelib 1.2 from /opt/fake/libfake.so; CPU: AVX2",
        advice="{advice}",
        command="{command}",
        details={{"library": "/opt/fake/libfake.so", "cpu_features": {{"AVX2": "1"}}}},
    )


@hookimpl
def mlplug_register_backends(register):
    register("fake_built", _factory, devices=_devices, build=_build)
"""

BROKEN_BUILD = """
from mlplug.device import DeviceInfo
from mlplug.hookspecs import hookimpl


def _factory(model_path, params):
    raise RuntimeError("unused")


def _devices():
    return [DeviceInfo(id="0", library="cpu", name="CPU", description="Fake CPU")]


def _build():
    return {"summary": "not a BuildInfo"}


@hookimpl
def mlplug_register_backends(register):
    register("fake_badbuild", _factory, devices=_devices, build=_build)
"""

FASTER_ADVICE = "this CPU has AVX512, which the loaded fakelib was not built for."
FASTER_COMMAND = "pip install --no-binary fakelib fakelib"

BROKEN_DEVICES = """
from mlplug.hookspecs import hookimpl


def _factory(model_path, params):
    raise RuntimeError("unused")


def _devices():
    raise RuntimeError("no devices for you")


@hookimpl
def mlplug_register_backends(register):
    register("fake_nodev", _factory, devices=_devices)
"""

CRASHING_DEVICES = """
import os

from mlplug.hookspecs import hookimpl


def _factory(model_path, params):
    raise RuntimeError("unused")


def _devices():
    os.abort()


@hookimpl
def mlplug_register_backends(register):
    register("fake_crash", _factory, devices=_devices)
"""


class FakeSite:
    """A folder of throwaway plugin distributions, put on PYTHONPATH of child processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, source: str, version: str = "1.0") -> None:
        """Add distribution ``fake-<name>`` whose entry point ``name`` is module ``<name>``."""
        (self.root / f"{name}.py").write_text(textwrap.dedent(source))
        info = self.root / f"fake_{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fake-{name}\nVersion: {version}\n"
        )
        (info / "entry_points.txt").write_text(f"[mlplug]\n{name} = {name}\n")

    def add_devices(self, name: str, devices: list[str], priority: int = 0) -> None:
        """Add a plugin registering backend ``name`` that enumerates ``devices``."""
        source = FAKE_DEVICES.format(name=name, devices=", ".join(devices), priority=priority)
        self.add(name, source)

    def add_build(self, advice: str = "", command: str = "") -> None:
        """Add plugin ``fake_built``, whose backend describes its build (``advice``/``command``)."""
        self.add("fake_built", FAKE_BUILD.format(advice=advice, command=command))

    def env(self, **extra: str) -> dict[str, str]:
        """Return an environment for a child that sees these plugins (and the installed ones)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLUG_")}
        paths = [str(self.root), *sys.path]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env.update(extra)
        return env


@pytest.fixture
def site(tmp_path: Path) -> FakeSite:
    """Return an empty FakeSite."""
    return FakeSite(tmp_path / "site")


def mlplug(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mlplug ARGS`` in a child process and return it (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "mlplug", *args],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Check a user error: no traceback, one ``mlplug...: error:`` line naming ``needles``."""
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def has_cpu_numpy() -> bool:
    """Whether the cpu_numpy plugin is installed."""
    try:
        import mlplug_cpu_numpy  # noqa: F401
    except ImportError:
        return False
    return True


needs_cpu_numpy = pytest.mark.skipif(not has_cpu_numpy(), reason="needs mlplug-cpu-numpy")


# -- global options ----------------------------------------------------------------------------


def test_version_flag() -> None:
    """``--version`` prints mlplug's version and exits 0."""
    import mlplug as ml

    proc = mlplug("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"mlplug {ml.__version__}")


def test_help_lists_every_command() -> None:
    """``--help`` lists the six commands of README.md's CLI table, ``run`` included."""
    proc = mlplug("--help")
    assert proc.returncode == 0
    for command in ("backends", "devices", "conformance", "inspect", "bench", "run"):
        assert command in proc.stdout


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """``mlplug`` alone prints the usage to stderr and exits 2."""
    assert main([]) == 2
    assert "usage: mlplug" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error() -> None:
    """An unknown subcommand exits 2 with argparse's message."""
    proc = mlplug("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_console_script_entry_point_is_main() -> None:
    """The ``mlplug`` console script points at ``mlplug.cli:main``."""
    import importlib_metadata

    scripts = importlib_metadata.entry_points(group="console_scripts", name="mlplug")
    assert [ep.value for ep in scripts] == ["mlplug.cli:main"]


# -- backends ----------------------------------------------------------------------------------


def test_backends_json_lists_good_and_broken_plugins(site: FakeSite) -> None:
    """A plugin that fails to import is an error row with its message; the others are ok."""
    site.add_devices("fake_a", [CPU_A, GPU_A], priority=2)
    site.add("fake_broken", BROKEN_IMPORT)
    proc = mlplug("backends", "--json", env=site.env(MLPLUG_PLUGINS="fake_a,fake_broken"))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == ["fake_a", "fake_broken"]
    for row in rows:
        assert list(row) == [
            "name",
            "distribution",
            "version",
            "status",
            "error",
            "devices",
            "build",
        ]
    good, broken = rows
    assert good == {
        "name": "fake_a",
        "distribution": "fake-fake_a",
        "version": "1.0",
        "status": "ok",
        "error": "",
        "devices": 2,
        "build": None,
    }
    assert broken["status"] == "error"
    assert broken["distribution"] == "fake-fake_broken"
    assert broken["error"] == "RuntimeError: fake plugin import failure"
    assert broken["devices"] == 0
    assert broken["build"] is None


@needs_cpu_numpy
def test_backends_lists_cpu_numpy_next_to_a_broken_plugin(site: FakeSite) -> None:
    """With a broken plugin installed, cpu_numpy is still listed ok with its one device."""
    site.add("fake_broken", BROKEN_IMPORT)
    proc = mlplug("backends", "--json", env=site.env(MLPLUG_PLUGINS="cpu_numpy,fake_broken"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["cpu_numpy"]["status"] == "ok"
    assert rows["cpu_numpy"]["distribution"] == "mlplug-cpu-numpy"
    assert rows["cpu_numpy"]["devices"] == 1
    assert rows["fake_broken"]["status"] == "error"
    assert "fake plugin import failure" in rows["fake_broken"]["error"]


def test_backends_table_shows_error_message(site: FakeSite) -> None:
    """The terminal table has a row per plugin with status and error text."""
    site.add_devices("fake_a", [CPU_A], priority=2)
    site.add("fake_broken", BROKEN_IMPORT)
    proc = mlplug("backends", env=site.env(MLPLUG_PLUGINS="fake_a,fake_broken"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "DEVICES", "ERROR"]
    assert lines[1].split() == ["fake_a", "fake-fake_a", "1.0", "ok", "1"]
    assert lines[2].split()[:4] == ["fake_broken", "fake-fake_broken", "1.0", "error"]
    assert lines[2].endswith("RuntimeError: fake plugin import failure")


def test_backends_reports_device_enumeration_failure(site: FakeSite) -> None:
    """A backend whose device enumerator raises is an error row; the others are unaffected."""
    site.add_devices("fake_a", [CPU_A], priority=2)
    site.add("fake_nodev", BROKEN_DEVICES)
    proc = mlplug("backends", "--json", env=site.env(MLPLUG_PLUGINS="fake_a,fake_nodev"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["fake_a"]["status"] == "ok"
    assert rows["fake_nodev"]["status"] == "error"
    assert rows["fake_nodev"]["error"] == (
        "device enumeration failed: RuntimeError: no devices for you"
    )


def test_backends_survives_a_plugin_that_crashes_the_interpreter(site: FakeSite) -> None:
    """A device enumerator that aborts the process is reported, not fatal to the CLI."""
    site.add_devices("fake_a", [CPU_A], priority=2)
    site.add("fake_crash", CRASHING_DEVICES)
    proc = mlplug("backends", "--json", env=site.env(MLPLUG_PLUGINS="fake_a,fake_crash"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["fake_a"]["status"] == "ok"
    assert rows["fake_crash"]["status"] == "error"
    assert "crashed" in rows["fake_crash"]["error"]


def test_backends_json_carries_each_backends_build(site: FakeSite) -> None:
    """``backends --json``: ``build`` is the plugin's record (summary, advice, command, details);
    null for a backend whose plugin does not describe its build."""
    site.add_build(FASTER_ADVICE, FASTER_COMMAND)
    site.add_devices("fake_a", [CPU_A])
    proc = mlplug("backends", "--json", env=site.env(MLPLUG_PLUGINS="fake_built,fake_a"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["fake_built"]["build"] == {
        "summary": "fakelib 1.2 from /opt/fake/libfake.so; CPU: AVX2",
        "advice": FASTER_ADVICE,
        "command": FASTER_COMMAND,
        "details": {"library": "/opt/fake/libfake.so", "cpu_features": {"AVX2": "1"}},
    }
    assert rows["fake_a"]["build"] is None


def test_backends_table_says_when_a_faster_build_exists(site: FakeSite) -> None:
    """The text form lists each build under the table, with the advice and the command."""
    site.add_build(FASTER_ADVICE, FASTER_COMMAND)
    site.add_devices("fake_a", [CPU_A])
    proc = mlplug("backends", env=site.env(MLPLUG_PLUGINS="fake_built,fake_a"))
    assert proc.returncode == 0, proc.stderr
    block = proc.stdout.split("\nBuilds:\n", 1)[1].splitlines()
    assert block == [
        "  fake_built: fakelib 1.2 from /opt/fake/libfake.so; CPU: AVX2",
        f"    faster build available: {FASTER_ADVICE}",
        f"      {FASTER_COMMAND}",
    ]


def test_backends_table_without_advice_shows_only_the_summary(site: FakeSite) -> None:
    """A build that suits the machine is one summary line; no plugin with a build, no block."""
    site.add_build()
    site.add_devices("fake_a", [CPU_A])
    proc = mlplug("backends", env=site.env(MLPLUG_PLUGINS="fake_built,fake_a"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\nBuilds:\n", 1)[1].splitlines() == [
        "  fake_built: fakelib 1.2 from /opt/fake/libfake.so; CPU: AVX2"
    ]
    assert "faster build" not in proc.stdout
    proc = mlplug("backends", env=site.env(MLPLUG_PLUGINS="fake_a"))
    assert "Builds:" not in proc.stdout


def test_devices_json_and_table_show_the_build(site: FakeSite) -> None:
    """``devices --json``: each record carries its backend's ``build``; the text form ends with
    the builds block."""
    site.add_build(FASTER_ADVICE, FASTER_COMMAND)
    site.add_devices("fake_a", [GPU_A])
    env = site.env(MLPLUG_PLUGINS="fake_built,fake_a")
    proc = mlplug("devices", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    records = {r["plugin"]: r for r in json.loads(proc.stdout)}
    assert records["fake_built"]["build"]["summary"].startswith("fakelib 1.2")
    assert records["fake_built"]["build"]["command"] == FASTER_COMMAND
    assert records["fake_a"]["build"] is None
    proc = mlplug("devices", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Fake CPU" in proc.stdout
    builds = proc.stdout.split("\nBuilds:\n", 1)[1]
    assert "fake_built: fakelib 1.2" in builds and FASTER_COMMAND in builds


def test_a_broken_build_describer_is_a_warning(site: FakeSite) -> None:
    """A describer returning the wrong type: a warning naming the backend; devices still listed."""
    site.add("fake_badbuild", BROKEN_BUILD)
    env = site.env(MLPLUG_PLUGINS="fake_badbuild")
    proc = mlplug("devices", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [r["build"] for r in json.loads(proc.stdout)] == [None]
    assert "fake_badbuild" in proc.stderr and "not BuildInfo" in proc.stderr
    proc = mlplug("backends", "--json", env=env)
    row = json.loads(proc.stdout)[0]
    assert row["status"] == "ok" and row["build"] is None


def test_disable_plugins_hides_named_plugins(site: FakeSite) -> None:
    """MLPLUG_DISABLE_PLUGINS leaves the named plugins out entirely."""
    site.add_devices("fake_a", [CPU_A])
    site.add("fake_broken", BROKEN_IMPORT)
    env = site.env(MLPLUG_PLUGINS="fake_a,fake_broken", MLPLUG_DISABLE_PLUGINS="fake_broken")
    proc = mlplug("backends", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)] == ["fake_a"]


def test_plugins_allow_list_loads_only_those(site: FakeSite) -> None:
    """MLPLUG_PLUGINS loads only the plugins it names."""
    site.add_devices("fake_a", [CPU_A])
    site.add_devices("fake_b", [CPU_B])
    proc = mlplug("backends", "--json", env=site.env(MLPLUG_PLUGINS="fake_b"))
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)] == ["fake_b"]


def test_no_plugins_installed_message() -> None:
    """With no plugin, ``backends`` says so (exit 0) and ``--json`` is an empty list."""
    env = {**os.environ, "MLPLUG_PLUGINS": ""}
    proc = mlplug("backends", env=env)
    assert proc.returncode == 0
    assert "No backend plugin is installed" in proc.stdout
    proc = mlplug("backends", "--json", env=env)
    assert json.loads(proc.stdout) == []


def test_strict_plugins_reraises_import_error(site: FakeSite) -> None:
    """MLPLUG_STRICT_PLUGINS=1 turns a broken plugin into the original exception."""
    site.add("fake_broken", BROKEN_IMPORT)
    env = site.env(MLPLUG_PLUGINS="fake_broken", MLPLUG_STRICT_PLUGINS="1")
    proc = mlplug("backends", env=env)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "RuntimeError: fake plugin import failure" in proc.stderr


def test_strict_plugins_reraises_device_error(site: FakeSite) -> None:
    """Under MLPLUG_STRICT_PLUGINS a failing device enumerator raises in the CLI process."""
    site.add("fake_nodev", BROKEN_DEVICES)
    env = site.env(MLPLUG_PLUGINS="fake_nodev", MLPLUG_STRICT_PLUGINS="1")
    proc = mlplug("backends", env=env)
    assert proc.returncode != 0
    assert "RuntimeError: no devices for you" in proc.stderr


# -- devices -----------------------------------------------------------------------------------


def _two_fake_gpus_site(site: FakeSite) -> dict[str, str]:
    site.add_devices("fake_a", [CPU_A, GPU_A], priority=2)
    site.add_devices("fake_b", [CPU_B, GPU_B, GPU_B2], priority=1)
    return site.env(MLPLUG_PLUGINS="fake_a,fake_b")


def test_devices_json_records(site: FakeSite) -> None:
    """``devices --json``: DeviceInfo under Go keys, plus ``plugin`` and ``physical_device``."""
    proc = mlplug("devices", "--json", env=_two_fake_gpus_site(site))
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert [(r["plugin"], r["name"]) for r in records] == [
        ("fake_a", "CPU"),
        ("fake_a", "CUDA0"),
        ("fake_b", "CPU"),
        ("fake_b", "Vulkan0"),
        ("fake_b", "Vulkan1"),
    ]
    gpu = records[1]
    assert gpu["id"] == "0"
    assert gpu["backend"] == "CUDA"
    assert gpu["description"] == "Fake GPU"
    assert gpu["pci_id"] == "0000:01:00.0"
    assert gpu["total_memory"] == 24 << 30
    assert gpu["free_memory"] == 20 << 30
    keys = [r["physical_device"] for r in records]
    assert keys[0] == keys[2]  # one host CPU
    assert keys[1] == keys[3]  # one GPU, seen through CUDA and Vulkan
    assert len(set(keys)) == 3


def test_devices_table_shows_each_physical_device_once(site: FakeSite) -> None:
    """A device reached by two plugins is one row naming both, grouped by library."""
    proc = mlplug("devices", env=_two_fake_gpus_site(site))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("Fake GPU") == 1
    assert out.count("Fake CPU") == 1
    assert "cpu (1 device)" in out
    assert "CUDA (1 device)" in out
    assert "Vulkan (1 device)" in out
    gpu_row = next(line for line in out.splitlines() if "Fake GPU" in line)
    assert "fake_a:0" in gpu_row and "fake_b:Vulkan/0" in gpu_row
    assert "20.0 GiB" in gpu_row and "24.0 GiB" in gpu_row
    cpu_row = next(line for line in out.splitlines() if "Fake CPU" in line)
    assert "fake_a:0, fake_b:cpu" in cpu_row


def test_devices_backend_filter(site: FakeSite) -> None:
    """``--backend`` restricts the listing to that backend."""
    proc = mlplug("devices", "--json", "--backend", "fake_b", env=_two_fake_gpus_site(site))
    assert proc.returncode == 0, proc.stderr
    assert {r["plugin"] for r in json.loads(proc.stdout)} == {"fake_b"}


def test_devices_failing_backend_is_reported_not_fatal(site: FakeSite) -> None:
    """A backend whose enumeration raises is a warning; the others' devices are listed."""
    site.add_devices("fake_a", [CPU_A, GPU_A])
    site.add("fake_nodev", BROKEN_DEVICES)
    env = site.env(MLPLUG_PLUGINS="fake_a,fake_nodev")
    proc = mlplug("devices", "--json", env=env)
    assert proc.returncode == 0
    assert [r["name"] for r in json.loads(proc.stdout)] == ["CPU", "CUDA0"]
    assert "fake_nodev" in proc.stderr and "no devices for you" in proc.stderr
    proc = mlplug("devices", "--backend", "fake_nodev", env=env)
    assert proc.returncode == 1
    assert "no devices for you" in proc.stderr


def test_devices_unknown_backend(site: FakeSite) -> None:
    """An unknown ``--backend`` exits 2 naming it and the installed backends."""
    site.add_devices("fake_a", [CPU_A])
    proc = mlplug("devices", "--backend", "nope", env=site.env(MLPLUG_PLUGINS="fake_a"))
    assert proc.returncode == 2
    assert_one_line_error(proc, "'nope'", "fake_a")


@needs_cpu_numpy
def test_devices_cpu_numpy_reports_host_memory() -> None:
    """cpu_numpy's host CPU appears with its memory in human units."""
    proc = mlplug("devices", "--backend", "cpu_numpy")
    assert proc.returncode == 0, proc.stderr
    assert "cpu (1 device)" in proc.stdout
    assert "GiB" in proc.stdout
    assert "cpu_numpy:0" in proc.stdout


# -- inspect -----------------------------------------------------------------------------------


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """Return a small llama-like GGUF file with F16, Q8_0 and F32 tensors."""
    from gguf import GGMLQuantizationType as Q
    from model_files import write_llama_gguf

    return write_llama_gguf(tmp_path / "tiny.gguf", type_mix=(Q.F16, Q.Q8_0), n_vocab=40).path


def test_inspect_errors_are_one_line(tmp_path: Path) -> None:
    """A missing file, a directory and a non-GGUF file give one-line errors and exit 1."""
    missing = mlplug("inspect", str(tmp_path / "missing.gguf"))
    assert missing.returncode == 1
    assert_one_line_error(missing, "missing.gguf", "No such file")
    directory = mlplug("inspect", str(tmp_path))
    assert directory.returncode == 1
    assert_one_line_error(directory, "is a directory")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"NOPE" + bytes(60))
    bad = mlplug("inspect", str(junk))
    assert bad.returncode == 1
    assert_one_line_error(bad, "junk.gguf", "invalid file magic", "offset 0")


def test_inspect_truncated_file_names_offset(model: Path, tmp_path: Path) -> None:
    """A GGUF cut short reports the ModelFileError text with its byte offset."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.read_bytes()[:200])
    proc = mlplug("inspect", str(cut))
    assert proc.returncode == 1
    assert_one_line_error(proc, "cut.gguf", "offset")


def test_inspect_bad_gpu_layers_is_a_usage_error(model: Path) -> None:
    """A malformed ``--gpu-layers`` exits 2 before printing anything."""
    proc = mlplug("inspect", str(model), "--gpu-layers", "nonsense")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_line_error(proc, "--gpu-layers", "nonsense")


def test_inspect_unknown_backend(model: Path) -> None:
    """An unknown ``--backend`` exits 2 before printing anything."""
    proc = mlplug("inspect", str(model), "--backend", "nope")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_line_error(proc, "'nope'")


@needs_cpu_numpy
def test_inspect_json(model: Path) -> None:
    """``inspect --json``: architecture, full metadata, tensors and a BackendMemory dump."""
    proc = mlplug("inspect", str(model), "--json", "--backend", "cpu_numpy")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert list(data) == ["architecture", "metadata", "tensors", "memory"]
    assert data["architecture"] == "llama"
    assert data["metadata"]["llama.block_count"] == 2
    assert data["metadata"]["tokenizer.ggml.tokens"] == [f"tok{i}" for i in range(40)]
    tensors = {t["name"]: t for t in data["tensors"]}
    assert tensors["token_embd.weight"] == {
        "name": "token_embd.weight",
        "type": "F16",
        "shape": [64, 40],
        "bytes": 64 * 40 * 2,
    }
    assert tensors["blk.0.attn_q.weight"]["type"] == "Q8_0"
    assert tensors["blk.0.attn_q.weight"]["bytes"] == 64 * 64 // 32 * 34
    assert tensors["output_norm.weight"]["type"] == "F32"
    memory = data["memory"]
    assert set(memory) == {"input_weights", "cpu", "gpus"}
    assert set(memory["cpu"]) >= {"weights", "cache", "graph"}
    assert len(memory["cpu"]["weights"]) == 3  # two blocks and the output layer
    assert memory["gpus"] == []
    total = memory["input_weights"] + sum(memory["cpu"]["weights"])
    assert total >= sum(t["bytes"] for t in data["tensors"])


@needs_cpu_numpy
def test_inspect_terminal_summarises_long_arrays(model: Path) -> None:
    """The terminal view shortens the 40-token array and shows types, shapes and memory."""
    proc = mlplug("inspect", str(model), "--backend", "cpu_numpy")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "architecture: llama" in out
    tokens = next(line for line in out.splitlines() if "tokenizer.ggml.tokens" in line)
    assert "tok0" in tokens and "(40 items)" in tokens and "tok39" not in tokens
    embd = next(line for line in out.splitlines() if "token_embd.weight" in line)
    assert embd.split() == ["token_embd.weight", "F16", "64x40", "5.0", "KiB"]
    assert "1e-05" in out  # float32 metadata shown as float32, not 9.99999974e-06
    assert "memory estimate (backend cpu_numpy, dry run)" in out


@needs_cpu_numpy
def test_inspect_warns_about_devices_the_backend_lacks(model: Path) -> None:
    """Layers assigned to a GPU that cpu_numpy does not have are reported on stderr."""
    proc = mlplug("inspect", str(model), "-b", "cpu_numpy", "--gpu-layers", "CUDA:0=0-1")
    assert proc.returncode == 0, proc.stderr
    assert "no device CUDA:0" in proc.stderr


# -- conformance -------------------------------------------------------------------------------


class FakeReport:
    """Stands in for mlplug.conformance's report, to test the command's plumbing."""

    def __init__(self, failed: bool) -> None:
        self._failed = failed

    def to_json(self) -> str:
        return json.dumps({"backends": ["x"], "results": [], "summary": {}})

    def to_markdown(self) -> str:
        return "| op | x |\n|---|---|"

    def table(self) -> str:
        return "OP  x\nadd pass\n1 passed, 0 failed"

    def failed(self) -> bool:
        return self._failed


def _fake_conformance(monkeypatch: pytest.MonkeyPatch, failed: bool) -> list[tuple[Any, ...]]:
    import mlplug

    calls: list[tuple[Any, ...]] = []

    def run(backends: Any, op_pattern: Any, *, seed: int = 0, progress: Any = None) -> FakeReport:
        calls.append((backends, op_pattern, seed))
        if progress is not None:
            progress(1, 2, "x add")
            progress(2, 2, "x mul")
        return FakeReport(failed)

    module = types.ModuleType("mlplug.conformance")
    module.run = run  # type: ignore[attr-defined]
    module.all_cases = lambda: (types.SimpleNamespace(op="add", id="add-1"),)  # type: ignore[attr-defined]
    module.select = lambda cases, pattern: [c for c in cases if pattern in (None, c.op)]  # type: ignore[attr-defined]
    monkeypatch.setattr(mlplug, "conformance", module, raising=False)
    monkeypatch.setitem(sys.modules, "mlplug.conformance", module)
    return calls


@needs_cpu_numpy
@pytest.mark.parametrize(("failed", "code"), [(False, 0), (True, 1)])
def test_conformance_plumbing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    failed: bool,
    code: int,
) -> None:
    """Arguments reach ``conformance.run``; files are written; exit 1 iff a case failed."""
    calls = _fake_conformance(monkeypatch, failed)
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    argv = ["conformance", "-b", "cpu_numpy", "--op", "add", "--seed", "3", "--json",
            str(out_json), "--markdown", str(out_md)]  # fmt: skip
    assert main(argv) == code
    assert calls == [(["cpu_numpy"], "add", 3)]
    assert json.loads(out_json.read_text())["backends"] == ["x"]
    assert out_md.read_text().startswith("| op |")
    assert "1 passed, 0 failed" in capsys.readouterr().out


@needs_cpu_numpy
def test_conformance_json_to_stdout_replaces_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json -`` writes the JSON report to stdout instead of the table."""
    _fake_conformance(monkeypatch, failed=False)
    assert main(["conformance", "-b", "cpu_numpy", "--json", "-", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == []


def test_conformance_op_matching_nothing_is_a_usage_error() -> None:
    """``--op nosuchop`` runs nothing: exit 2, naming the pattern and how to list the ops."""
    proc = mlplug("conformance", "--op", "nosuchop")
    assert proc.returncode == 2
    assert_one_line_error(proc, "'nosuchop'", "mlplug conformance --list")


def test_conformance_list_shows_the_ops() -> None:
    """``conformance --list`` prints each op with its number of cases (``--op`` filters)."""
    proc = mlplug("conformance", "--list", "--op", "mul*")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["OP", "CASES"]
    ops = {line.split()[0]: int(line.split()[1]) for line in lines[1:]}
    assert "mulmat" in ops and all(op.startswith("mul") for op in ops)
    assert all(n > 0 for n in ops.values())


def test_conformance_unknown_backend() -> None:
    """An unknown backend exits 2 without running anything."""
    proc = mlplug("conformance", "--backend", "nope")
    assert proc.returncode == 2
    assert_one_line_error(proc, "'nope'")


@needs_cpu_numpy
def test_conformance_real_run_json_shape(tmp_path: Path) -> None:
    """A real run on cpu_numpy writes its report JSON and exits 0 iff nothing failed."""
    out = tmp_path / "report.json"
    proc = mlplug("conformance", "-b", "cpu_numpy", "--op", "add", "--json", str(out))
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(out.read_text())
    assert report["backends"] == ["cpu_numpy"]
    assert report["results"], "no case ran"
    for result in report["results"]:
        assert {"op", "case", "backend", "status", "max_abs_err", "nmse"} <= set(result)
        assert result["status"] in ("pass", "fail", "unsupported")
    failed = any(r["status"] == "fail" for r in report["results"])
    assert proc.returncode == (1 if failed else 0)
    assert "summary" in report
    assert proc.stdout.strip(), "no matrix printed"


# -- bench -------------------------------------------------------------------------------------


@needs_cpu_numpy
def test_bench_json_shape() -> None:
    """``bench --json`` gives one correct result per case with the numpy baseline and ratios."""
    proc = mlplug("bench", "-b", "cpu_numpy", "--quick", "--repeat", "1", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["backends"] == ["cpu_numpy"]
    assert data["repeat"] == 1
    assert "numpy" in data["environment"]
    ops = [(r["op"], r["shape"], r["mode"]) for r in data["results"]]
    assert ops == [
        ("matmul", [1024, 1024, 1024], "reuse"),
        ("elementwise", [4096, 256], "reuse"),
        ("elementwise", [4096], "reuse"),
        ("softmax", [4096, 32], "reuse"),
    ]
    for r in data["results"]:
        assert r["error"] == ""
        assert r["correct"] is True
        assert r["baseline"] == "numpy"
        assert r["seconds"] > 0 and r["baseline_seconds"] > 0
        assert r["ratio"] == pytest.approx(r["seconds"] / r["baseline_seconds"])


def test_bench_measures_torch_backend_against_torch() -> None:
    """The torch backend's plain library is torch (numpy is measured too)."""
    pytest.importorskip("mlplug_torch")
    pytest.importorskip("torch")
    proc = mlplug("bench", "-b", "torch", "--quick", "--repeat", "1", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert results
    for r in results:
        assert r["baseline"] == "torch"
        assert r["correct"] is True
        assert r["numpy_seconds"] > 0 and r["baseline_seconds"] > 0


@pytest.mark.parametrize("command", ["bench", "conformance"])
def test_commands_need_a_backend(command: str) -> None:
    """With no plugin installed, bench and conformance say so (exit 1, one line)."""
    proc = mlplug(command, env={**os.environ, "MLPLUG_PLUGINS": ""})
    assert proc.returncode == 1
    assert_one_line_error(proc, "no backend plugin is installed")


def test_bench_rejects_bad_repeat() -> None:
    """``--repeat 0`` is a usage error."""
    proc = mlplug("bench", "--repeat", "0")
    assert proc.returncode == 2
    assert "positive integer" in proc.stderr


def test_plain_library_from_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend whose distribution requires torch is measured against torch, else numpy."""
    import importlib_metadata

    from mlplug.cli.bench import plain_library
    from mlplug.registry import BackendEntry

    requires = {"needs-torch": ["torch>=2", "numpy"], "extra-torch": ['torch; extra == "x"']}
    monkeypatch.setattr(importlib_metadata, "requires", lambda dist: requires.get(dist, []))
    entry = BackendEntry(name="t", factory=lambda p, q: None, distribution="needs-torch")  # type: ignore[arg-type,return-value]
    assert plain_library(entry) == "torch"
    entry.distribution = "extra-torch"
    assert plain_library(entry) == "numpy"
    entry.distribution = "other"
    assert plain_library(entry) == "numpy"


# -- run ---------------------------------------------------------------------------------------


@needs_cpu_numpy  # with no backend plugin at all, run stops earlier: no backend
def test_run_missing_model_is_a_one_line_error(tmp_path: Path) -> None:
    """``run`` on a missing file exits 1 with the model-file error, no traceback."""
    proc = mlplug("run", str(tmp_path / "m.gguf"), "--prompt-tokens", "1,2,3", "-n", "4")
    assert proc.returncode == 1
    assert_one_line_error(proc, "cannot open model file")


@pytest.mark.parametrize("tokens", ["a,b", "", "1,,2", "1,-2", "1.5"])
def test_run_validates_prompt_tokens(tokens: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--prompt-tokens`` must be comma-separated token ids: anything else is a usage error."""
    with pytest.raises(SystemExit) as info:
        main(["run", "m.gguf", "--prompt-tokens", tokens])
    assert info.value.code == 2
    assert "comma-separated token ids" in capsys.readouterr().err


# -- interruption and errors from plugin code -------------------------------------------------


def test_ctrl_c_during_start_up_is_one_line_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while the command line is still being set up exits 130 with one line."""
    import mlplug.cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(mlplug.cli, "build_parser", interrupted)
    assert main(["backends"]) == 130
    assert capsys.readouterr().err == "mlplug: interrupted\n"


@pytest.mark.parametrize("debug", [False, True])
def test_unexpected_exception_is_one_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    """Any exception escaping a command is one ``mlplug: error:`` line, exit 1; ``--debug``
    shows its traceback too."""
    import mlplug.cli._devices

    def broken(args: object) -> int:
        msg = "plugin arithmetic"
        raise ZeroDivisionError(msg)

    monkeypatch.setattr(mlplug.cli._devices, "cmd_backends", broken)
    monkeypatch.delenv("MLPLUG_STRICT_PLUGINS", raising=False)
    assert main(["--debug", "backends"] if debug else ["backends"]) == 1
    err = capsys.readouterr().err
    assert ("Traceback" in err) is debug
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlplug: error: ZeroDivisionError: plugin arithmetic")


# -- helpers -----------------------------------------------------------------------------------


def test_format_table_aligns_columns() -> None:
    """Columns are padded to the widest cell; lines carry no trailing spaces."""
    table = format_table(["A", "LONGER"], [["xxxx", "y"], ["z", ""]])
    assert table.splitlines() == ["A     LONGER", "xxxx  y", "z"]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda p: p(3, 10, "mulmat"), "[3/10  30%] mulmat"),
        (lambda p: p(done=1, total=4, label="add"), "[1/4  25%] add"),
        (lambda p: p(0.5), "[50/100  50%]"),
        (lambda p: p("cpu_numpy add-f32 pass"), "[1] cpu_numpy add-f32 pass"),
    ],
)
def test_progress_accepts_common_call_shapes(
    call: Callable[[Progress], None], expected: str
) -> None:
    """Progress reads (done, total, label) positionally, by keyword, or as a fraction."""
    import io

    stream = io.StringIO()
    call(Progress(stream=stream, tty=True))
    assert stream.getvalue().removeprefix("\r\x1b[2K").startswith(expected)


def test_progress_counts_label_only_calls() -> None:
    """Calls with only a label count steps, against ``total`` when it is known."""
    import io

    stream = io.StringIO()
    progress = Progress(stream=stream, total=4, tty=True)
    progress("first")
    assert stream.getvalue().removeprefix("\r\x1b[2K").startswith("[1/4  25%] first")
    progress.finish()
    assert stream.getvalue().endswith("\r\x1b[2K")


def test_progress_in_a_log_stays_quiet_for_short_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal, nothing is printed during a run's first two seconds; then a line."""
    import io
    import types

    from mlplug.cli import _common

    now = [1000.0]  # a clock the test moves by hand: no dependence on the machine's speed
    monkeypatch.setattr(_common, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    stream = io.StringIO()
    progress = Progress(stream=stream, total=4, tty=False)
    progress("a")
    now[0] += 1.9
    progress("b")
    assert stream.getvalue() == ""
    now[0] += 0.2
    progress("c")
    assert stream.getvalue() == "[3/4  75%] c (2 s)\n"
    progress.finish()


def test_progress_disabled_writes_nothing() -> None:
    """``Progress(enabled=False)`` (``--quiet``) is silent."""
    import io

    stream = io.StringIO()
    progress = Progress(enabled=False, stream=stream, tty=True)
    progress(1, 2, "x")
    progress.finish()
    assert stream.getvalue() == ""


def test_parser_flags_match_the_readme() -> None:
    """Each command accepts the flags README.md's CLI table gives it."""
    parser = build_parser()
    parser.parse_args(["backends", "--json"])
    assert parser.parse_args(["--debug", "backends"]).debug is True
    parser.parse_args(["conformance", "--list"])
    parser.parse_args(["devices", "--backend", "b", "--json"])
    args = parser.parse_args(["conformance", "--backend", "a", "--backend", "b", "--op", "mul*"])
    assert args.backend == ["a", "b"]
    parser.parse_args(["conformance", "--json", "f.json", "--markdown", "f.md"])
    parser.parse_args(["inspect", "m.gguf", "--backend", "b", "--gpu-layers", "CUDA:0=0-3"])
    parser.parse_args(["inspect", "m.gguf", "--json"])
    args = parser.parse_args(["run", "m.gguf", "-b", "x", "--prompt-tokens", "1,2,3", "-n", "8"])
    assert args.prompt_tokens == [1, 2, 3] and args.n == 8
    parser.parse_args(["run", "m.gguf", "--prompt-tokens", "1", "--json", "--logits-out", "l.npy"])
    args = parser.parse_args(["bench", "-b", "a", "-b", "b", "--json", "--quick", "--repeat", "3"])
    assert args.backend == ["a", "b"] and args.repeat == 3
