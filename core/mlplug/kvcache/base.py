"""The interface every KV cache offers to :func:`mlplug.nn.attention`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

from ..errors import ShapeError

if TYPE_CHECKING:
    import numpy as np

    from ..context import Context
    from ..tensor import Tensor

__all__ = ["KVCache"]


class KVCache(ABC):
    """Keys and values of one sequence for some layers of a model.

    A forward pass calls :meth:`begin` once with its positions (this picks the cells and builds
    the mask), then :meth:`put` once per attention layer.

    A cache whose graph inputs are plain host arrays can also let a built pass run again with new
    positions (the decoder's pass reuse): :meth:`prepare` picks the cells and returns the shape
    the pass's graph depends on, :meth:`bind` creates the input tensors of a new graph from it,
    and :meth:`inputs` gives the values to write into the input tensors of an already-built graph
    (:meth:`refill`). The defaults say "not reusable": every pass then builds.
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

    def prepare(self, positions: Sequence[int]) -> Hashable | None:
        """Reserve cells for ``positions``; return what the pass's graph shape depends on.

        Two passes whose :meth:`prepare` results (and batch shapes) are equal build the same
        graph, differing only in :meth:`inputs`. None (the default) means the cache cannot
        refill a built graph, so every pass builds through :meth:`begin`.

        :raises ShapeError: as :meth:`begin`.
        """
        return None

    def bind(self, ctx: Context) -> list[Tensor]:
        """Create the input tensors of the prepared pass in ``ctx`` (as :meth:`begin` does).

        Returns them in the order of :meth:`inputs`. Only called after :meth:`prepare` returned
        a key.
        """
        msg = f"{type(self).__name__} cannot bind a prepared pass"
        raise NotImplementedError(msg)

    def inputs(self) -> list[np.ndarray]:
        """Return the prepared pass's input values, one array per tensor of :meth:`bind`."""
        msg = f"{type(self).__name__} has no refillable inputs"
        raise NotImplementedError(msg)

    def refill(self, tensors: Sequence[Tensor]) -> None:
        """Write the prepared pass's :meth:`inputs` into ``tensors`` (from an earlier bind)."""
        values = self.inputs()
        if len(values) != len(tensors):
            msg = f"refill got {len(tensors)} tensors for {len(values)} cache inputs"
            raise ShapeError(msg, op="kvcache")
        for t, v in zip(tensors, values, strict=True):
            t.from_bytes(v)

    @abstractmethod
    def reset(self) -> None:
        """Forget every cached position."""

    @abstractmethod
    def close(self) -> None:
        """Free the cache tensors (idempotent)."""
