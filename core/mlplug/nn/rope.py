"""Rotary position embeddings: mode, base, frequency scale and per-pair frequency factors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

__all__ = ["ROPE_NEOX", "ROPE_NORMAL", "RoPE"]

#: Rotate adjacent pairs ``(x[2i], x[2i+1])`` (llama-style files).
ROPE_NORMAL: Final = 0
#: Rotate ``(x[i], x[i + dim/2])`` (NeoX / Gemma-style files).
ROPE_NEOX: Final = 2


@dataclass(frozen=True)
class RoPE:
    """How to rotate ``[head_dim, heads, T]`` by position.

    Pair ``i`` turns by ``position * scale * base^(-2i/dim) / factors[i]``.
    """

    #: Number of leading dims of each head that rotate (even).
    dim: int
    #: Frequency base (theta).
    base: float = 10000.0
    #: Frequency scale (1 / linear scaling factor).
    scale: float = 1.0
    #: :data:`ROPE_NORMAL` or :data:`ROPE_NEOX`.
    mode: int = ROPE_NORMAL
    #: Optional F32 ``[dim / 2]`` frequency divisors (llama 3's ``rope_freqs``).
    factors: Tensor | None = None

    def forward(self, ctx: Context, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x`` ``[head_dim, heads, T]`` at ``positions`` (I32 ``[T]``)."""
        return x.rope(
            ctx,
            positions,
            self.dim,
            self.base,
            self.scale,
            rope_type=self.mode,
            factors=self.factors,
        )
