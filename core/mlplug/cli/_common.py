"""Helpers shared by the subcommands: user errors, tables, JSON output, progress on stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import IO, Any, Final

from ..errors import BackendLoadError

__all__ = [
    "CommandError",
    "Progress",
    "UsageError",
    "check_backend_names",
    "dump_json",
    "format_table",
    "warn",
    "warn_conflicts",
    "write_text_file",
]

_PROGRESS_INTERVAL_TTY: Final = 0.1
_PROGRESS_INTERVAL_LOG: Final = 10.0
_PROGRESS_QUIET_START: Final = 2.0


class CommandError(Exception):
    """A command failed for a reason the user can act on; printed as one line, exit 1."""

    exit_code = 1


class UsageError(CommandError):
    """The command line names something that does not exist (unknown backend, bad spec); exit 2."""

    exit_code = 2


def warn(message: str) -> None:
    """Print ``mlplug: warning: <message>`` on stderr."""
    print(f"mlplug: warning: {message}", file=sys.stderr)


def warn_conflicts() -> None:
    """Warn about each backend name several plugins claim (a command over every backend skips
    it)."""
    from ..registry import conflict_hint, manager

    for name, claims in manager().conflicts().items():
        warn(f"backend {name!r} skipped: {conflict_hint(claims)}")


def check_backend_names(names: Sequence[str]) -> list[str]:
    """Return ``names`` without repeats after checking that each backend is installed.

    :raises UsageError: naming the unknown backend and the installed ones.
    """
    from ..registry import manager

    seen: list[str] = []
    for name in names:
        try:
            manager().get(name)
        except BackendLoadError as exc:
            raise UsageError(str(exc)) from exc
        if name not in seen:
            seen.append(name)
    return seen


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Return ``rows`` as left-aligned columns under ``headers`` (no trailing spaces)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def dump_json(data: Any, out: IO[str] | None = None) -> None:
    """Write ``data`` as indented JSON and a newline to ``out`` (default stdout)."""
    stream = sys.stdout if out is None else out
    stream.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_text_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (``-`` is stdout), ending it with a newline.

    :raises CommandError: if the file cannot be written.
    """
    if not text.endswith("\n"):
        text += "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise CommandError(msg) from exc


class Progress:
    """Show the progress of a long run on stderr.

    On a terminal one status line is redrawn (at most ten times a second); otherwise, once the run
    has taken two seconds, a line is printed at most every ten seconds, so CI logs show a long
    run is alive without flooding them.
    The object is a callable accepting ``(done, total, label)`` in any of the usual shapes:
    positional ints and a string, or keywords ``done``/``total``/``label``; a single float in
    ``[0, 1]`` is read as a fraction. A call with only a label counts as one step done (of
    ``total`` when given here).

    :param enabled: ``False`` makes every call a no-op.
    :param stream: where to write; default stderr.
    :param total: the number of steps, for calls that give only a label.
    :param tty: whether ``stream`` is a terminal; default: ask the stream.
    """

    def __init__(
        self,
        enabled: bool = True,
        stream: IO[str] | None = None,
        total: int | None = None,
        tty: bool | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.total = total
        self._count = 0
        if tty is None:
            tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.tty = tty
        self._last = 0.0
        self._start = time.monotonic()
        self._drawn = False

    def __call__(self, *args: object, **kwargs: object) -> None:
        """Record progress: ``progress(done, total, label)`` (see the class docstring)."""
        if not self.enabled:
            return
        done, total, label = _parse_progress(args, kwargs)
        self._count += 1
        if done is None and total is None:
            done, total = self._count, self.total
        now = time.monotonic()
        final = total is not None and done is not None and done >= total
        interval = _PROGRESS_INTERVAL_TTY if self.tty else _PROGRESS_INTERVAL_LOG
        if not final and now - self._last < interval:
            return
        if not self.tty and now - self._start < _PROGRESS_QUIET_START:
            return  # a short run leaves no progress lines in a log
        self._last = now
        if done is not None and total:
            text = f"[{done}/{total} {100.0 * done / total:3.0f}%]"
        elif done is not None:
            text = f"[{done}]"
        else:
            text = ""
        text = f"{text} {label}".strip() + f" ({now - self._start:.0f} s)"
        if self.tty:
            self.stream.write("\r\x1b[2K" + text[:200])
            self._drawn = True
        elif not final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the status line (terminal) so later output starts on a fresh line."""
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False


def _parse_progress(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> tuple[int | None, int | None, str]:
    done = kwargs.get("done", kwargs.get("current"))
    total = kwargs.get("total")
    label = kwargs.get("label", kwargs.get("message", kwargs.get("case", "")))
    ints = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
    texts = [a for a in args if isinstance(a, str)]
    floats = [a for a in args if isinstance(a, float)]
    if done is None and ints:
        done = ints[0]
    if total is None and len(ints) > 1:
        total = ints[1]
    if not label and texts:
        label = " ".join(texts)
    if done is None and floats and 0.0 <= floats[0] <= 1.0:
        done, total = round(floats[0] * 100), 100
    other = [a for a in args if not isinstance(a, (int, float, str))]
    if not label and other:
        label = str(other[0])
    return (
        done if isinstance(done, int) else None,
        total if isinstance(total, int) else None,
        str(label),
    )
