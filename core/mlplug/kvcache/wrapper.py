"""A cache that routes each layer to one of several caches."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

from .base import KVCache

if TYPE_CHECKING:
    import numpy as np

    from ..context import Context
    from ..tensor import Tensor

__all__ = ["WrapperCache"]


class WrapperCache(KVCache):
    """Holds ``caches`` and sends layer ``i`` to ``caches[pick(i)]``.

    Gemma 3 uses one with a sliding-window cache for its local layers and a causal one for its
    global layers.
    """

    def __init__(self, caches: Sequence[KVCache], pick: Callable[[int], int]) -> None:
        self.caches = list(caches)
        self.pick = pick
        self.max_batch = min(c.max_batch for c in self.caches)

    @property
    def capacity(self) -> int:
        """The smallest capacity of the wrapped caches."""
        return min(c.capacity for c in self.caches)

    def begin(self, ctx: Context, positions: Sequence[int]) -> None:
        """Begin the pass in every wrapped cache."""
        for c in self.caches:
            c.begin(ctx, positions)

    def prepare(self, positions: Sequence[int]) -> Hashable | None:
        """Prepare every wrapped cache; the key is theirs together (None if any is None)."""
        keys = [c.prepare(positions) for c in self.caches]
        return None if any(k is None for k in keys) else tuple(keys)

    def bind(self, ctx: Context) -> list[Tensor]:
        """Bind every wrapped cache, in order; their tensors one after the other."""
        return [t for c in self.caches for t in c.bind(ctx)]

    def inputs(self) -> list[np.ndarray]:
        """The wrapped caches' inputs, in the order of :meth:`bind`."""
        return [a for c in self.caches for a in c.inputs()]

    def put(self, ctx: Context, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Write to (and read from) the cache that serves ``layer``."""
        return self.caches[self.pick(layer)].put(ctx, layer, k, v)

    def reset(self) -> None:
        """Reset every wrapped cache."""
        for c in self.caches:
            c.reset()

    def close(self) -> None:
        """Close every wrapped cache."""
        for c in self.caches:
            c.close()
