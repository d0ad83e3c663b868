"""The kernel table and its ``@implements`` decorator (see :mod:`mlplug.kernels`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplug.plugin_api import implementer

#: Primitive op name -> ``kernel(ctx, node)``.
KERNELS: dict[str, Callable[..., Any]] = {}

#: ``@implements("add", ...)``: register the decorated function as those primitives' kernel.
implements = implementer(KERNELS)
