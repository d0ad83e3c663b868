"""Device enumeration in child processes, so listing plugins loads no native library here.

``mlplug backends`` must not import torch or open libggml in its own process (the import rule
that tests/core/test_import_rule.py checks), yet it reports how many devices each backend sees.
Each entry-point backend is therefore enumerated by ``python -m mlplug.cli._probe NAME`` in a
child process (all in parallel); the child prints one JSON object. A plugin that crashes the
interpreter (a segfault in a native library) or hangs past ``MLPLUG_PROBE_TIMEOUT`` seconds
(default 30) is reported as that backend's error instead of taking the CLI down. Each child runs
in its own session and its process group is killed when the command is done with it, or
interrupted.

Backends registered in this process (``mlplug.register_backend``) are enumerated in process,
and so is everything when ``MLPLUG_STRICT_PLUGINS`` is set, so that the original exception
propagates with its traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from .._child_processes import (
    ChildResult,
    child_env,
    finish_child,
    kill_child,
    probe_timeout,
    start_child,
)
from ..buildinfo import BuildInfo
from ..device import DeviceInfo

__all__ = ["ProbeResult", "enumerate_devices", "main"]

_IN_PROCESS: Final = "<in-process>"


@dataclass
class ProbeResult:
    """The devices one backend enumerated, or why it could not, and its build."""

    backend: str
    devices: list[DeviceInfo] = field(default_factory=list)
    error: str = ""
    #: What the backend's native library was built with (None: the plugin does not say).
    build: BuildInfo | None = None
    #: Why the build could not be described ("" when it was, or when the plugin does not say).
    build_error: str = ""

    @property
    def ok(self) -> bool:
        """Whether enumeration succeeded."""
        return not self.error


def _strict() -> bool:
    return os.environ.get("MLPLUG_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def _in_process(name: str) -> ProbeResult:
    from ..registry import manager

    try:
        result = ProbeResult(name, devices=list(manager().devices(name)))
    except Exception as exc:
        if _strict():
            raise
        return ProbeResult(name, error=f"{type(exc).__name__}: {exc}")
    try:
        result.build = manager().build_info(name)
    except Exception as exc:
        if _strict():
            raise
        result.build_error = f"{type(exc).__name__}: {exc}"
    return result


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _parse(name: str, result: ChildResult, timeout: float) -> ProbeResult:
    if result.timed_out:
        return ProbeResult(
            name, error=f"device enumeration timed out after {timeout:g} s (MLPLUG_PROBE_TIMEOUT)"
        )
    try:
        data = json.loads(result.stdout)
        if data.get("ok"):
            devices = [DeviceInfo.from_json_dict(d) for d in data["devices"]]
            build = data.get("build")
            return ProbeResult(
                name,
                devices=devices,
                build=BuildInfo.from_json_dict(build) if build is not None else None,
                build_error=str(data.get("build_error", "")),
            )
        return ProbeResult(name, error=str(data["error"]))
    except (ValueError, KeyError, TypeError, AttributeError):  # PluginError is a TypeError
        detail = _last_line(result.stderr) or _last_line(result.stdout) or "no output"
        return ProbeResult(
            name,
            error=f"device enumeration crashed (exit code {result.returncode}): {detail}",
        )


def enumerate_devices(names: Sequence[str], timeout: float | None = None) -> dict[str, ProbeResult]:
    """Return the devices of each backend in ``names``, keyed by name, in the order given.

    Entry-point backends are enumerated in child processes in parallel, each child loading only
    the plugin that owns the backend; in-process registrations (and everything under
    ``MLPLUG_STRICT_PLUGINS``) in this process. Every child runs in its own process group, which
    is killed when this call returns, however it returns (timeout, exception, Ctrl-C).

    :param names: registered backend names.
    :param timeout: seconds the children may take (default ``$MLPLUG_PROBE_TIMEOUT``, else 30).
    :raises ConfigError: if ``MLPLUG_PROBE_TIMEOUT`` is invalid.
    """
    from ..registry import manager

    limit = probe_timeout() if timeout is None else timeout
    entries = {e.name: e for e in manager().backends()}
    children: dict[str, subprocess.Popen[str]] = {}
    results: dict[str, ProbeResult] = {}
    local = _strict()
    try:
        for name in names:
            entry = entries.get(name)
            if local or entry is None or entry.plugin == _IN_PROCESS or entry.devices is None:
                continue
            # The child loads only this backend's plugin; the parent has screened it already.
            env = child_env(MLPLUG_PLUGINS=entry.plugin, MLPLUG_SCREEN_PLUGINS="0")
            env.pop("MLPLUG_DISABLE_PLUGINS", None)
            try:
                children[name] = start_child([sys.executable, "-m", "mlplug.cli._probe", name], env)
            except OSError as exc:
                results[name] = ProbeResult(name, error=f"cannot start device probe: {exc}")
        deadline = time.monotonic() + limit
        for name in names:
            if name in children:
                result = finish_child(children.pop(name), deadline - time.monotonic())
                results[name] = _parse(name, result, limit)
            elif name not in results:
                results[name] = _in_process(name)
    finally:
        for proc in children.values():
            kill_child(proc)
    return {name: results[name] for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    """Enumerate the devices of the backend named in ``argv`` and print them as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m mlplug.cli._probe BACKEND", file=sys.stderr)
        return 2
    # Anything the plugin prints (native libraries log to fd 1 too) goes to stderr, so that
    # stdout carries only the JSON answer.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        result = _in_process(args[0])
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    if result.ok:
        payload: dict[str, object] = {
            "ok": True,
            "devices": [d.to_json_dict() for d in result.devices],
            "build": result.build.to_json_dict() if result.build is not None else None,
            "build_error": result.build_error,
        }
    else:
        payload = {"ok": False, "error": result.error}
    sys.stdout.write(json.dumps(payload) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
