"""The torch kernels, one function per primitive op, gathered into :data:`KERNELS`."""

from __future__ import annotations

from . import attention, elementwise, layout, linalg, nn, reduce  # noqa: F401  (register kernels)
from ._registry import KERNELS, PREPARERS, implements

__all__ = ["KERNELS", "PREPARERS", "implements"]
