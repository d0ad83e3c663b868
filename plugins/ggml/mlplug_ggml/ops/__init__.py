"""The ggml kernels, one function per primitive op, gathered into :data:`KERNELS`.

Each kernel builds the ggml tensor of one mlplug node (see :mod:`._registry`).
"""

from __future__ import annotations

from . import elementwise, layout, linalg, nn, reduce  # noqa: F401  (register kernels)
from ._registry import KERNELS, REQUIRES, Builder, GGMLKernel, implements

__all__ = ["KERNELS", "REQUIRES", "Builder", "GGMLKernel", "implements"]
