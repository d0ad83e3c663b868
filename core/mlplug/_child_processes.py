"""Child processes that never outlive mlplug: each runs in its own session and is killed with
its whole process group when the caller is done with it, or when this interpreter exits.

Used for the plugin crash screen (:mod:`mlplug._plugin_screen`) and the CLI's device probes.
The time a child may take is ``MLPLUG_PROBE_TIMEOUT`` seconds (:func:`probe_timeout`).
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from .errors import ConfigError

__all__ = [
    "DEFAULT_PROBE_TIMEOUT",
    "ChildResult",
    "child_env",
    "env_seconds",
    "finish_child",
    "kill_child",
    "kill_all_children",
    "live_children",
    "probe_timeout",
    "start_child",
]

#: Seconds a child may take when ``MLPLUG_PROBE_TIMEOUT`` is not set.
DEFAULT_PROBE_TIMEOUT: Final = 30.0
_TIMEOUT_VAR: Final = "MLPLUG_PROBE_TIMEOUT"

_lock = threading.Lock()
_children: dict[int, subprocess.Popen[str]] = {}


def env_seconds(variable: str, default: float) -> float:
    """Return the seconds in environment variable ``variable``, or ``default`` when it is unset
    or blank: the one rule for every ``MLPLUG_*`` timeout.

    :raises ConfigError: if the variable is not a positive, finite number of seconds.
    """
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(variable, raw, f"a positive number of seconds, e.g. {default:g}")
    return value


def probe_timeout() -> float:
    """Return the seconds a child may take: ``$MLPLUG_PROBE_TIMEOUT``, else 30.

    :raises ConfigError: if the variable is not a positive, finite number of seconds.
    """
    return env_seconds(_TIMEOUT_VAR, DEFAULT_PROBE_TIMEOUT)


def child_env(**extra: str) -> dict[str, str]:
    """Return this process's environment for a child, with ``PYTHONPATH`` set to ``sys.path`` so
    the child finds exactly the plugins this process finds (even after ``sys.path`` changed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra)
    return env


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: a pre-exec hook having the kernel SIGKILL the child if mlplug itself dies (even by
    SIGKILL). ``prctl`` is looked up here, in the parent, so the hook only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))

    return hook


def start_child(
    argv: Sequence[str], env: dict[str, str], *, stdin: int | None = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """Start ``argv`` in a new session (its own process group), text pipes for stdout/stderr.

    The child is remembered until :func:`kill_child`; any still alive when the interpreter exits
    are killed.
    """
    proc = subprocess.Popen(
        list(argv),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_parent_death_signal(),
    )
    with _lock:
        _children[proc.pid] = proc
    return proc


def kill_child(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` and everything in its process group, then reap it (idempotent)."""
    with _lock:
        _children.pop(proc.pid, None)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    except OSError:  # pragma: no cover - no process groups on this platform
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a kernel that ignores SIGKILL
        pass
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


@dataclass
class ChildResult:
    """How a child ended: its exit code (None if it was killed for taking too long) and output."""

    returncode: int | None
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        """Whether the child was killed for running past its time."""
        return self.returncode is None


def finish_child(proc: subprocess.Popen[str], timeout: float) -> ChildResult:
    """Wait up to ``timeout`` seconds for ``proc``; kill its process group however this ends
    (done, timed out, interrupted) and return what it wrote."""
    try:
        try:
            out, err = proc.communicate(timeout=max(timeout, 0.0))
            return ChildResult(proc.returncode, out or "", err or "")
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            out, err = proc.communicate()
            return ChildResult(None, out or "", err or "")
    finally:
        kill_child(proc)


def live_children() -> list[int]:
    """Return the pids of the children started here and not yet killed."""
    with _lock:
        return list(_children)


def kill_all_children() -> None:
    """Kill every child (and its process group) started here and not yet killed."""
    with _lock:
        procs = list(_children.values())
    for proc in procs:
        kill_child(proc)


atexit.register(kill_all_children)
