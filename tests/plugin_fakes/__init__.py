"""Fake backend plugins installed for real: a distribution written into a temporary folder.

:class:`FakeSite` writes ``<dist>-<version>.dist-info/METADATA`` and ``entry_points.txt`` next
to the plugin module, so that a child Python with the folder on ``PYTHONPATH`` discovers the
plugin through the ``mlplug`` entry-point group exactly as it would an installed one. The
sources in :mod:`plugin_fakes.sources` are the misbehaving plugins the isolation tests install.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

__all__ = ["FakeSite", "run_mlplug", "run_python", "with_default_sigint"]

#: Hang guard for every child (no test relies on it: they finish in seconds).
HANG_GUARD_S = 120


def with_default_sigint() -> None:
    """A ``preexec_fn`` giving a child the default SIGINT disposition.

    A shell without job control starts background commands with SIGINT ignored, and children
    inherit that: a test suite run as ``pytest ... &`` (as some CI runners do) would start every
    child deaf to Ctrl-C, and Python then installs no KeyboardInterrupt handler. The tests that
    send SIGINT start their child with this, so they test the program, not how pytest was run.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class FakeSite:
    """A folder of throwaway plugin distributions, put on PYTHONPATH of child processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, source: str, *, dist: str | None = None, version: str = "0.1") -> str:
        """Install module ``name`` as entry point ``name`` of distribution ``dist``
        (default ``fake-<name>``); return the distribution name."""
        dist = dist or f"fake-{name}"
        (self.root / f"{name}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[mlplug]\n{name} = {name}\n")
        return dist

    def env(self, **extra: str) -> dict[str, str]:
        """Return an environment whose children see these plugins and the installed ones
        (the folder is prepended to the current PYTHONPATH); no MLPLUG_* variable leaks in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLUG_")}
        paths = [str(self.root), *os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
        env.update(extra)
        return env


def run_mlplug(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mlplug ARGS`` in a child and return it, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "mlplug", *args],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=HANG_GUARD_S,
        check=False,
    )


def run_python(code: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a child and return it, output captured."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=HANG_GUARD_S,
        check=False,
    )
