"""The numpy kernels, one function per primitive op, gathered into :data:`KERNELS`."""

from __future__ import annotations

from . import elementwise, layout, linalg, nn, reduce  # noqa: F401  (register kernels)
from ._registry import KERNELS, implements

__all__ = ["KERNELS", "implements"]
