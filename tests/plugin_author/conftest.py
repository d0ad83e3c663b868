"""Fixtures of the plugin-author tests: a wheel cache and fresh virtual environments.

The ``venv`` tests install a generated plugin into a new virtual environment as its author
would, with the core built from this checkout. To keep that fast, one session fixture builds a
wheel of the core and collects the wheels of its dependencies (and pytest, setuptools) once,
and one environment holding the core is made once; each test installs its own plugin into it
with ``--no-index --find-links`` on that cache.
Collecting the dependencies needs the package index (or a pip cache holding them): without
one, the ``venv`` tests skip, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``venv`` marker (tests that build virtual environments; slower)."""
    config.addinivalue_line(
        "markers", "venv: installs packages into a fresh virtual environment (about 20 s each)"
    )


def clean_env() -> dict[str, str]:
    """The environment of a clean shell: no PYTHONPATH, no MLPLUG_* variables, no venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("MLPLUG_")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(
    cmd: list[str], cwd: Path, timeout: int = 600, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a clean environment (plus ``extra_env``); return the finished process."""
    env = {**clean_env(), **(extra_env or {})}
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def copy_core(dest: Path) -> Path:
    """Copy what building the core needs (pyproject, README, core/) to ``dest``; return it."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(
        ROOT / "core", dest / "core", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return dest


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of wheels: the core from this checkout, its dependencies, pytest, setuptools."""
    base = tmp_path_factory.mktemp("wheelhouse")
    house = base / "wheels"
    core = copy_core(base / "core-src")
    pip = [sys.executable, "-m", "pip"]
    # With setuptools at hand the core's wheel builds offline; else pip fetches the backend.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    built = run(
        [*pip, "wheel", "-q", "--no-deps", *isolation, "--wheel-dir", str(house), str(core)], base
    )
    assert built.returncode == 0, f"building the core's wheel failed:\n{built.stderr}"
    wheels = sorted(house.glob("mlplug-*.whl"))
    assert len(wheels) == 1, sorted(p.name for p in house.iterdir())
    wanted = [str(wheels[0]), "pytest", "setuptools>=68"]
    deps = run([*pip, "wheel", "-q", "--wheel-dir", str(house), *wanted], base)
    if deps.returncode != 0:
        pytest.skip(f"cannot collect the core's dependencies (no package index?): {deps.stderr}")
    return house


@dataclass
class Venv:
    """A fresh virtual environment that installs from the wheel cache only."""

    path: Path
    wheelhouse: Path

    @property
    def python(self) -> str:
        """Its interpreter."""
        sub = "Scripts" if os.name == "nt" else "bin"
        return str(self.path / sub / ("python.exe" if os.name == "nt" else "python"))

    def bin(self, name: str) -> str:
        """A console script installed in it (``mlplug``, ``pytest``)."""
        return str(Path(self.python).parent / name)

    def pip_install(self, *specs: str, cwd: Path) -> None:
        """``pip install SPECS`` from the wheel cache; fail the test with pip's output."""
        pip = [self.python, "-m", "pip", "install", "-q", "--no-index"]
        proc = run([*pip, "--find-links", str(self.wheelhouse), *specs], cwd)
        assert proc.returncode == 0, f"pip install {' '.join(specs)} failed:\n{proc.stderr}"


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Venv:
    """A new virtual environment (with pip) holding the core (``pip install mlplug``), made once.

    The tests share it, each installing a plugin of its own name (``mygraph``, ``tiny``, the
    README's ``mybackend``) and checking only that backend, so they do not see each other's
    plugins; sharing saves a virtual environment and a core install per test (about 10 s).
    """
    base = tmp_path_factory.mktemp("venv")
    path = base / "venv"
    proc = run([sys.executable, "-m", "venv", str(path)], base)
    assert proc.returncode == 0, proc.stderr
    env = Venv(path, wheelhouse)
    env.pip_install("mlplug", cwd=base)
    return env


#: Run in a fresh interpreter with a rendered plugin folder on the path: registers its backend
#: in-process and prints ``{case id: status}`` of the whole catalogue as JSON.
_STATUSES = """
import importlib, json, sys
import mlplug as ml
from mlplug import conformance
name = sys.argv[1]
importlib.import_module(f"mlplug_{name}.plugin").mlplug_register_backends(ml.register_backend)
report = conformance.run([name], None)
print(json.dumps({r.case: r.status for r in report.results}))
"""


def catalogue_statuses(name: str, plugin_dir: Path) -> dict[str, str]:
    """Return each conformance case's status on the plugin in ``plugin_dir`` (not installed).

    The plugin's package is imported from its folder by this checkout's core, in a child
    process (its backend registration stays out of the test process).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLUG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_dir), *(p for p in sys.path if p)])
    proc = subprocess.run(
        [sys.executable, "-c", _STATUSES, name],
        cwd=plugin_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    statuses: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return statuses


@pytest.fixture
def statuses() -> Callable[[str, Path], dict[str, str]]:
    """:func:`catalogue_statuses`: the expected outcome of every case on a rendered plugin."""
    return catalogue_statuses


@pytest.fixture
def shell() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`run`: a command in the environment of a clean shell."""
    return run
