"""Linear and Embedding layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

__all__ = ["Embedding", "Linear"]


@dataclass(frozen=True)
class Linear:
    """``y = W x (+ b)``: ``weight`` is ``[in, out]`` (ggml order), ``bias`` ``[out]``."""

    weight: Tensor
    bias: Tensor | None = None

    def forward(self, ctx: Context, x: Tensor) -> Tensor:
        """Return ``weight · x`` plus the bias when there is one; ``x`` is ``[in, ...]``."""
        y = self.weight.mulmat(ctx, x)
        return y if self.bias is None else y.add(ctx, self.bias)


@dataclass(frozen=True)
class Embedding:
    """A lookup table ``weight`` ``[dim, vocab]``: token ids select its rows."""

    weight: Tensor

    def forward(self, ctx: Context, ids: Tensor) -> Tensor:
        """Return the rows of ``ids`` (an I32 tensor of ``T`` ids) as ``[dim, T]`` float32."""
        return self.weight.rows(ctx, ids)
