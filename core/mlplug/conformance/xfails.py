"""A backend's declared known failures: ``xfails.txt`` and ``Backend.known_failures()``.

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

__all__ = ["known_failures", "parse_xfails", "xfails_file"]


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
    module = sys.modules.get(type(backend).__module__)
    file = getattr(module, "__file__", None)
    if file is None:
        return None
    top = type(backend).__module__.split(".")[0]
    pkg = Path(file).resolve().parent
    while pkg.name != top and pkg.parent != pkg:
        pkg = pkg.parent
    inside = pkg / "xfails.txt"
    if inside.is_file():
        return inside
    root = pkg.parent
    beside = root / "xfails.txt"
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
    from .cases import all_cases

    decl = declared(backend)
    if not decl:
        return {}
    out: dict[str, str] = {}
    for c in cases if cases is not None else all_cases():
        for pattern, reason in decl.items():
            if c.id == pattern or fnmatch.fnmatchcase(c.id, pattern):
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
