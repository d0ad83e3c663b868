"""The plugin crash screen: load each entry-point plugin in a throwaway child first.

A plugin whose import (or registration hook) kills the interpreter, ``os.abort()`` or a
segfault in a native library, cannot be caught in process. Before the plugin manager imports
plugins it runs ``python -m mlplug._plugin_screen NAME...``: the child imports the plugins one
after the other, reporting ``start NAME`` and ``done NAME`` on its own pipe. A child that dies
(or runs past ``MLPLUG_PROBE_TIMEOUT``) between ``start`` and ``done`` names the culprit, which
is then reported as an error and never imported here; a fresh child screens the plugins after it.

Exceptions are not the screen's business (the manager catches those in process with their
real type and message): the child only finds out which plugin takes the interpreter down.
The command line screens by default (it is where a user lists and diagnoses plugins; see
:func:`screen_by_default`); a library process screens when ``MLPLUG_SCREEN_PLUGINS=1``, because
the child costs about 0.3 s of start-up. ``MLPLUG_SCREEN_PLUGINS=0`` turns it off everywhere.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["main", "screen", "screen_enabled"]

_ENV: Final = "MLPLUG_SCREEN_PLUGINS"
_GROUP: Final = "mlplug"


_DEFAULT = {"screen": False}


def screen_by_default() -> None:
    """Screen plugins unless ``MLPLUG_SCREEN_PLUGINS`` says otherwise (the CLI calls this)."""
    _DEFAULT["screen"] = True


def screen_enabled() -> bool:
    """Whether plugins are screened in a child before they are imported here."""
    raw = os.environ.get(_ENV, "").strip().lower()
    if not raw:
        return _DEFAULT["screen"]
    return raw not in ("0", "false", "no", "off")


def _describe_exit(returncode: int | None, timeout: float) -> str:
    if returncode is None:
        return f"it did not finish loading within {timeout:g} s (MLPLUG_PROBE_TIMEOUT)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"it crashed the interpreter while loading ({name})"
    return f"it ended the interpreter while loading (exit code {returncode})"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def screen(names: Sequence[str]) -> dict[str, str]:
    """Return ``{plugin: reason}`` for the entry-point plugins in ``names`` that crash or hang
    the interpreter while loading; the others load safely (or fail with a plain exception).

    :raises ConfigError: if ``MLPLUG_PROBE_TIMEOUT`` is invalid.
    """
    from ._child_processes import child_env, finish_child, probe_timeout, start_child

    timeout = probe_timeout()
    bad: dict[str, str] = {}
    remaining = list(names)
    while remaining:
        try:
            proc = start_child(
                [sys.executable, "-m", "mlplug._plugin_screen", *remaining],
                child_env(**{_ENV: "0"}),
            )
        except OSError:
            return bad  # cannot screen: load in process as before
        result = finish_child(proc, timeout)
        started: str | None = None
        done: set[str] = set()
        for line in result.stdout.splitlines():
            verb, _, name = line.partition(" ")
            if verb == "start":
                started = name
            elif verb == "done":
                done.add(name)
        if result.returncode == 0 or started is None or started in done:
            return bad
        reason = _describe_exit(result.returncode, timeout)
        detail = _last_line(result.stderr)
        bad[started] = f"{reason}: {detail}" if detail and result.returncode else reason
        remaining = remaining[remaining.index(started) + 1 :] if started in remaining else []
    return bad


def _register_ignoring(*args: Any, **kwargs: Any) -> None:
    """The ``register`` callable handed to plugins under screening: accepts anything."""


def _load(ep: Any) -> None:
    import pluggy

    from . import hookspecs

    pm = pluggy.PluginManager(_GROUP)
    pm.add_hookspecs(hookspecs)
    module = ep.load()
    pm.register(module, name=ep.name)
    pm.hook.mlplug_register_backends(register=_register_ignoring)


def main(argv: Sequence[str] | None = None) -> int:
    """Import the plugins named in ``argv`` one by one, reporting progress on stdout."""
    import importlib_metadata

    names = list(sys.argv[1:] if argv is None else argv)
    eps = {ep.name: ep for ep in importlib_metadata.entry_points(group=_GROUP)}
    # Plugins may print to fd 1; the progress lines get a private copy of it.
    sys.stdout.flush()
    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for name in names:
        report.write(f"start {name}\n")
        report.flush()
        ep = eps.get(name)
        if ep is not None:
            try:
                _load(ep)
            except BaseException:  # only crashes matter here
                pass
        report.write(f"done {name}\n")
        report.flush()
    report.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
