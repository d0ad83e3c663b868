"""The kernel table and its ``@implements`` decorator (see :mod:`mlplug.kernels`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplug.plugin_api import Preparer, implementer

#: Primitive op name -> ``kernel(ctx, node)``.
KERNELS: dict[str, Callable[..., Any]] = {}

#: ``@implements("add", ...)``: register the decorated function as those primitives' kernel.
implements = implementer(KERNELS)

#: Kernel -> its preparer (``TorchContext.preparers``): binds a decode step's arrays once for a
#: graph that is computed again, and returns the step that repeats the kernel's work.
PREPARERS: dict[Callable[..., Any], Preparer] = {}


def prepares(kernel: Callable[..., Any]) -> Callable[[Preparer], Preparer]:
    """``@prepares(kernel)``: register the decorated function as ``kernel``'s preparer."""

    def register(fn: Preparer) -> Preparer:
        PREPARERS[kernel] = fn
        return fn

    return register
