"""Fused ops against their decomposition (filled in below)."""

from __future__ import annotations

from .case import Case

__all__ = ["cases"]


def cases() -> list[Case]:
    """Return the fused-op cases."""
    return []
