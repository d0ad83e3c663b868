"""The torch kernels, one function per primitive op, gathered into :data:`KERNELS`."""

from __future__ import annotations

from ._registry import KERNELS, implements
from . import attention, elementwise, layout, linalg, nn, reduce  # noqa: F401  (register kernels)

__all__ = ["KERNELS", "implements"]
