"""The kernel table and its ``@implements`` decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplug.ops import PRIMITIVES

KERNELS: dict[str, Callable[..., Any]] = {}


def implements(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the kernel of the primitive ops ``names``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            if name not in PRIMITIVES:
                msg = f"{name!r} is not a primitive op of mlplug.ops"
                raise KeyError(msg)
            KERNELS[name] = fn
        return fn

    return deco
