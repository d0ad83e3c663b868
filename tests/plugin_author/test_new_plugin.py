"""``mlplug new-plugin``: what it writes, what it refuses, and that the result runs.

These tests render plugins into temporary folders and run them from there with this
checkout's core; ``test_plugin_install.py`` installs them into fresh virtual environments.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

import mlplug as ml
from mlplug.cli import main
from mlplug.conformance import all_cases
from mlplug.dtypes import DType
from mlplug.registry import manager

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

#: The ops the generated kernels implement (both engines).
STARTER_OPS = {"add", "sub", "mul", "div", "scale", "contiguous", "view", "reshape", "permute"}


def new_plugin(*argv: str) -> tuple[int, str, str]:
    """Run ``mlplug new-plugin ARGV`` in-process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["new-plugin", *argv])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "name", ["1bad", "my-backend", "class", "Tiny", "_hidden", "na\u00efve", "a b", "x" * 25]
)
def test_a_bad_name_is_a_usage_error(tmp_path: Path, name: str) -> None:
    """A name that cannot be a backend, package and distribution name: exit 2, nothing written."""
    code, _, err = new_plugin(name, "--dir", str(tmp_path / "out"))
    assert code == 2
    assert err.startswith("mlplug new-plugin: error:") and repr(name) in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.fixture
def taken_name() -> Iterator[str]:
    """A backend name registered in this process for the duration of a test."""
    name = "scaffold_taken"
    ml.register_backend(name, lambda model_path, params: None)  # type: ignore[arg-type,return-value]
    try:
        yield name
    finally:
        manager().unregister_backend(name)


def test_a_taken_backend_name_is_refused(tmp_path: Path, taken_name: str) -> None:
    """A name some installed plugin already registers would collide: exit 2, naming it."""
    code, _, err = new_plugin(taken_name, "--dir", str(tmp_path / "out"))
    assert code == 2
    assert f"{taken_name!r} is already taken" in err
    assert not (tmp_path / "out").exists()


def test_a_non_empty_folder_is_refused_an_empty_one_is_used(tmp_path: Path) -> None:
    """Nothing is overwritten: a folder with files (or a file) is refused, an empty one filled."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    code, _, err = new_plugin("scaffold_dir", "--dir", str(full))
    assert code == 2 and "is not empty" in err
    assert sorted(p.name for p in full.iterdir()) == ["notes.txt"]
    code, _, err = new_plugin("scaffold_dir", "--dir", str(full / "notes.txt"))
    assert code == 2 and "not a directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = new_plugin("scaffold_dir", "--dir", str(empty))
    assert code == 0 and (empty / "pyproject.toml").is_file()
    assert "pip install" in out and "mlplug conformance --backend scaffold_dir" in out


def test_default_folder_is_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``--dir`` the distribution goes to ``./NAME``."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = new_plugin("scaffold_here")
    assert code == 0, out
    assert (tmp_path / "scaffold_here" / "mlplug_scaffold_here" / "plugin.py").is_file()
    assert "pip install './scaffold_here[test]'" in out


def test_an_unknown_engine_is_a_usage_error(tmp_path: Path) -> None:
    """``--engine`` takes ``array`` or ``graph``."""
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
        main(["new-plugin", "scaffold_x", "--dir", str(tmp_path / "x"), "--engine", "eager"])
    assert exc.value.code == 2


ENGINE_FILES = {
    "array": {"backend.py", "context.py", "kernels.py"},
    "graph": {"backend.py", "context.py", "executor.py", "lowerings.py"},
}


@pytest.mark.parametrize("engine", ["array", "graph"])
def test_the_distribution_is_complete(tmp_path: Path, engine: str) -> None:
    """pyproject (version, build system, entry point, package data), package, tests, tox, CI."""
    name = f"scaffold_{engine}"
    code, _, err = new_plugin(name, "--dir", str(tmp_path), "--engine", engine)
    assert code == 0, err
    package = tmp_path / f"mlplug_{name}"
    assert {p.name for p in package.iterdir()} == {
        "__init__.py", "plugin.py", "device.py", "xfails.txt", *ENGINE_FILES[engine]
    }  # fmt: skip
    meta = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"
    assert meta["project"]["name"] == f"mlplug-{name.replace('_', '-')}"
    assert meta["project"]["version"]
    assert meta["project"]["entry-points"]["mlplug"] == {name: f"mlplug_{name}.plugin"}
    assert "xfails.txt" in meta["tool"]["setuptools"]["package-data"][f"mlplug_{name}"]
    assert f"--mlplug-backend {name}" in meta["tool"]["pytest"]["ini_options"]["addopts"]
    assert "test_op" in (tmp_path / "tests" / "test_conformance.py").read_text()
    tox = configparser.ConfigParser()
    tox.read(tmp_path / "tox.ini")
    assert "pytest" in tox["testenv"]["commands"]
    ci = yaml.safe_load((tmp_path / ".github" / "workflows" / "conformance.yml").read_text())
    runs = [step.get("run", "") for step in ci["jobs"]["conformance"]["steps"]]
    assert any("pip install" in r for r in runs) and any("pytest" in r for r in runs)
    assert any(f"mlplug conformance --backend {name}" in r for r in runs)
    readme = (tmp_path / "README.md").read_text()
    assert "What to fill in next" in readme and "{{" not in readme
    for path in tmp_path.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


@pytest.mark.parametrize("engine", ["array", "graph"])
def test_the_generated_code_is_lint_clean(tmp_path: Path, engine: str) -> None:
    """What an author starts from passes ruff (check and format) with the project's rules,
    even with the longest name allowed."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    name = f"scaffold_{engine}".ljust(24, "x")
    assert new_plugin(name, "--dir", str(tmp_path), "--engine", engine)[0] == 0
    config = Path(__file__).resolve().parents[2] / "pyproject.toml"
    for args in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            [ruff, *args, "--config", str(config), str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def f32_cases_of(ops: set[str]) -> set[str]:
    """Ids of the catalogue cases of ``ops`` whose inputs and result are all F32."""
    return {
        c.id
        for c in all_cases()
        if c.op in ops
        and all(a.dtype == DType.F32 for a in c.args)
        and c.out_dtype in (None, DType.F32)
    }


@pytest.mark.parametrize("engine", ["array", "graph"])
def test_the_generated_backend_passes_what_it_implements(
    tmp_path: Path, engine: str, statuses: Callable[[str, Path], dict[str, str]]
) -> None:
    """No case fails; every F32 case of the starter ops passes (ggml tiling included); every
    other case is unsupported, never a failure."""
    name = f"scaffold_{engine}"
    assert new_plugin(name, "--dir", str(tmp_path), "--engine", engine)[0] == 0
    got = statuses(name, tmp_path)
    assert len(got) == len(all_cases())
    assert {s for s in got.values()} <= {"pass", "unsupported"}
    assert f32_cases_of(STARTER_OPS) <= {c for c, s in got.items() if s == "pass"}
    for gold in ("add-f32-gold1-6+2", "mul-f32-tile-8x6x4x2", "add-f32-tile-dim0-6x4x3"):
        assert got[gold] == "pass"


def test_both_engines_agree_case_by_case(
    tmp_path: Path, statuses: Callable[[str, Path], dict[str, str]]
) -> None:
    """The array and graph skeletons implement the same ops: the same status for every case."""
    found = {}
    for engine in ("array", "graph"):
        folder = tmp_path / engine
        assert new_plugin(f"scaffold_{engine}", "--dir", str(folder), "--engine", engine)[0] == 0
        found[engine] = statuses(f"scaffold_{engine}", folder)
    assert found["array"] == found["graph"]


CLI_RUN = """
import importlib, sys
import mlplug as ml
from mlplug.cli import main
name = sys.argv[1]
importlib.import_module(f"mlplug_{name}.plugin").mlplug_register_backends(ml.register_backend)
sys.exit(main(["conformance", "--backend", name, "-q", "--markdown", "c.md"]))
"""


def test_conformance_says_what_to_implement_next(tmp_path: Path) -> None:
    """``mlplug conformance --backend NAME`` on a new plugin: exit 0, the matrix, then the ranked
    to-do list per op family; ``--markdown`` adds the badge and the same list."""
    name = "scaffold_cli"
    assert new_plugin(name, "--dir", str(tmp_path))[0] == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLUG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *(p for p in sys.path if p)])
    proc = subprocess.run(
        [sys.executable, "-c", CLI_RUN, name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{name}: " in out and " 0 failed" in out
    todo = out[out.index(f"implement next on {name}, by op family") :].splitlines()[1:]
    families = [line.split()[0] for line in todo if line.strip()]
    assert {"linalg", "reduce", "nn", "dtypes"} <= set(families)
    assert "mulmat (" in next(line for line in todo if line.split()[0] == "linalg")
    md = (tmp_path / "c.md").read_text()
    assert f"https://img.shields.io/badge/{name.replace('_', '__')}-" in md
    assert f"### Implement next on {name}" in md
