"""A backend's declared known failures (``xfails.txt``, ``Backend.known_failures()``) and its
pinned unsupported set (``unsupported.txt``).

``xfails.txt`` ships inside the plugin's package (declare it as package data so installed
plugins keep it); one in the plugin's root, beside its ``pyproject.toml``, is read too, and a
backend class may name the file instead with its :attr:`Backend.xfails_path` class attribute.
Format, one entry per line::

    # comments and blank lines are ignored
    mulmat-q4_k-256x3x2   k-quant dot product not implemented exactly (issue 12)
    rope-f16-*            F16 rope rounds the angle too early

The first field is a case id or a glob over case ids; the rest of the line is the reason.
A backend may also override :meth:`Backend.known_failures` (id or glob -> reason).
Known failures are strict: a declared case that passes is reported as ``xpass``, a failure.

``unsupported.txt`` (same place and format, beside ``xfails.txt``) pins the cases the backend
cannot run. When a plugin ships one, its support cannot shrink silently: a case that raises
``NotSupportedError`` but is not listed fails, and a listed case that runs is reported as
``xpass`` (remove it from the list). ``mlplug conformance --backend NAME --pin-unsupported``
prints the list of a run in this format. Without the file, unsupported cases are only counted.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..backend import Backend
    from .case import Case

__all__ = [
    "UNSUPPORTED_FILE",
    "known_failures",
    "parse_xfails",
    "pin_file",
    "pinned_unsupported",
    "xfails_file",
]

#: File name of a plugin's pinned unsupported set, beside its ``xfails.txt``.
UNSUPPORTED_FILE = "unsupported.txt"


def parse_xfails(text: str) -> dict[str, str]:
    """Parse the text of an ``xfails.txt``: ``{id or glob: reason}``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, *reason = line.split(maxsplit=1)
        out[key] = reason[0].strip() if reason else "declared known failure"
    return out


def xfails_file(backend: Backend) -> Path | None:
    """Return the ``xfails.txt`` of ``backend``'s plugin, or None if it has none."""
    explicit = backend.xfails_path
    if explicit is not None:
        path = Path(explicit)
        return path if path.is_file() else None
    return _plugin_file(backend, "xfails.txt")


def pin_file(backend: Backend) -> Path | None:
    """Return the ``unsupported.txt`` of ``backend``'s plugin, or None if it has none.

    It is looked for beside :attr:`Backend.xfails_path` when that is set, else where
    ``xfails.txt`` would be (inside the plugin's package, or in its root).
    """
    explicit = backend.xfails_path
    if explicit is not None:
        path = Path(explicit).with_name(UNSUPPORTED_FILE)
        return path if path.is_file() else None
    return _plugin_file(backend, UNSUPPORTED_FILE)


def _plugin_file(backend: Backend, filename: str) -> Path | None:
    module = sys.modules.get(type(backend).__module__)
    file = getattr(module, "__file__", None)
    if file is None:
        return None
    top = type(backend).__module__.split(".")[0]
    pkg = Path(file).resolve().parent
    while pkg.name != top and pkg.parent != pkg:
        pkg = pkg.parent
    inside = pkg / filename
    if inside.is_file():
        return inside
    root = pkg.parent
    beside = root / filename
    is_plugin_root = (root / "pyproject.toml").is_file() or (root / "setup.py").is_file()
    return beside if is_plugin_root and beside.is_file() else None


def declared(backend: Backend) -> dict[str, str]:
    """Return the raw declarations (ids or globs -> reason) of ``backend``."""
    out: dict[str, str] = {}
    path = xfails_file(backend)
    if path is not None:
        out.update(parse_xfails(path.read_text(encoding="utf-8")))
    extra = backend.known_failures()
    if isinstance(extra, Mapping):
        out.update({str(k): str(v) for k, v in extra.items()})
    return out


def known_failures(backend: Backend, cases: Iterable[Case] | None = None) -> dict[str, str]:
    """Return ``{case id: reason}`` for every catalogue case ``backend`` declares failing."""
    return _matching(declared(backend), cases)


def pinned_unsupported(
    backend: Backend, cases: Iterable[Case] | None = None
) -> dict[str, str] | None:
    """Return ``{case id: reason}`` of the cases ``backend`` pins as unsupported.

    None when the plugin ships no ``unsupported.txt`` (its support is not pinned); an empty
    dict when it ships one that lists nothing (every case must run).
    """
    path = pin_file(backend)
    if path is None:
        return None
    return _matching(parse_xfails(path.read_text(encoding="utf-8")), cases)


def _matching(decl: Mapping[str, str], cases: Iterable[Case] | None) -> dict[str, str]:
    from .cases import all_cases

    if not decl:
        return {}
    exact = {k: v for k, v in decl.items() if not any(ch in k for ch in "*?[")}
    globs = {k: v for k, v in decl.items() if k not in exact}
    out: dict[str, str] = {}
    for c in cases if cases is not None else all_cases():
        if c.id in exact:
            out[c.id] = exact[c.id]
            continue
        for pattern, reason in globs.items():
            if fnmatch.fnmatchcase(c.id, pattern):
                out[c.id] = reason
                break
    return out


def stale_entries(backend: Backend, cases: Iterable[Case] | None = None) -> list[str]:
    """Return declarations of ``backend`` that match no case (typos, removed cases)."""
    from .cases import all_cases

    ids = [c.id for c in (cases if cases is not None else all_cases())]
    return sorted(
        p for p in declared(backend) if not any(i == p or fnmatch.fnmatchcase(i, p) for i in ids)
    )
