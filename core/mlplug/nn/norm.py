"""Normalisation layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

__all__ = ["LayerNorm", "RMSNorm"]


@dataclass(frozen=True)
class RMSNorm:
    """``rms_norm(x, eps) * weight`` over dim 0."""

    weight: Tensor
    eps: float

    def forward(self, ctx: Context, x: Tensor) -> Tensor:
        """Normalise every row of ``x`` and multiply by the weight."""
        return x.rms_norm(ctx, self.weight, self.eps)


@dataclass(frozen=True)
class LayerNorm:
    """``norm(x, eps) * weight + bias`` over dim 0."""

    weight: Tensor
    bias: Tensor | None
    eps: float

    def forward(self, ctx: Context, x: Tensor) -> Tensor:
        """Normalise every row of ``x`` to zero mean and unit variance, then scale and shift."""
        return x.layer_norm(ctx, self.weight, self.bias, self.eps)
