"""The interface every KV cache offers to :func:`mlplug.nn.attention`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

__all__ = ["KVCache"]


class KVCache(ABC):
    """Keys and values of one sequence for some layers of a model.

    A forward pass calls :meth:`begin` once with its positions (this picks the cells and builds
    the mask), then :meth:`put` once per attention layer.
    """

    #: Most tokens one forward pass may carry.
    max_batch: int

    @property
    @abstractmethod
    def capacity(self) -> int:
        """Highest position + 1 the cache can hold."""

    @abstractmethod
    def begin(self, ctx: Context, positions: Sequence[int]) -> None:
        """Reserve cells for ``positions`` and build this pass's cell indices and mask in ``ctx``.

        :raises ShapeError: too many tokens for one pass, or a position beyond :attr:`capacity`.
        """

    @abstractmethod
    def put(self, ctx: Context, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Write ``k``/``v`` ``[hd, H_kv, T]`` of ``layer``; return keys, values and the mask.

        Keys are ``[hd, H_kv, L]``; values the same, or ``[L, hd, H_kv]`` when the backend's
        cache config has ``permuted_v``; the mask is ``[L, T]`` (0 visible, -inf hidden).
        """

    @abstractmethod
    def reset(self) -> None:
        """Forget every cached position."""

    @abstractmethod
    def close(self) -> None:
        """Free the cache tensors (idempotent)."""
