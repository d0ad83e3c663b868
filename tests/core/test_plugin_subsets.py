"""The test suite collects with any subset of the plugins installed.

A child ``pytest --collect-only tests plugins`` runs with some installed plugins hidden: the
``sitecustomize`` in ``tests/hidden_plugins`` makes their modules (and torch) unimportable and
their distributions invisible to ``importlib.metadata``, exactly as if they had never been
installed. Every test module of a hidden plugin must skip itself and nothing may fail to import.
That the collected tests also pass is the ``subset-*`` tox environments' job (whole suite, real
installs of a subset); ``MLPLUG_TEST_HIDE=torch pytest tests plugins`` with ``tests/hidden_plugins``
on ``PYTHONPATH`` does the same in any environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HIDER = ROOT / "tests" / "hidden_plugins"

#: Hang guard only: collection takes seconds.
HANG_GUARD_S = 600


def _env(hide: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLUG_")}
    paths = [str(HIDER), *os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    env["MLPLUG_TEST_HIDE"] = hide
    return env


def test_hidden_plugin_is_absent() -> None:
    """Under the hider a plugin's module cannot be found and no entry point names it."""
    code = (
        "import importlib.util, importlib.metadata as m\n"
        "print(importlib.util.find_spec('mlplug_torch'), importlib.util.find_spec('torch'))\n"
        "print(sorted(e.name for e in m.entry_points(group='mlplug')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env("torch"),
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    specs, names = done.stdout.splitlines()
    assert specs == "None None"
    assert "torch" not in names


@pytest.mark.parametrize("hide", ["torch", "cpu_numpy,ggml,torch"])
def test_suite_collects_without_plugins(hide: str) -> None:
    """``pytest --collect-only tests plugins`` succeeds with these plugins uninstalled."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-rs", "-p", "no:cacheprovider"]
        + ["tests", "plugins"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(hide),
        timeout=HANG_GUARD_S,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "error" not in out.splitlines()[-1], out[-4000:]
    for plugin in hide.split(","):
        skipped = [line for line in out.splitlines() if f"plugins/{plugin}/tests/" in line]
        assert skipped and all(line.startswith("SKIPPED") for line in skipped), plugin
