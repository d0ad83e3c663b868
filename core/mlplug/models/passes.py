"""Built forward passes kept for reuse: build a decode step's graph once, compute it many times.

A decoder pass's graph depends on its batch size, the number of logits it returns and the
history length its KV cache reads; everything else (token ids, positions, cache cells, the mask,
which rows to return) is input data. :class:`PassCache` keeps the last few built passes keyed by
that shape, so a later pass of the same shape only writes its inputs and computes again, through
the public Context API (the backend keeps its translated graph between the computes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import numpy as np

    from ..context import Context
    from ..tensor import Tensor

__all__ = ["DEFAULT_KEPT_PASSES", "BuiltPass", "PassCache"]

#: Built passes a model keeps by default (least recently used ones are freed first).
DEFAULT_KEPT_PASSES: Final = 4


class BuiltPass:
    """One built forward pass: its context, its output and the input tensors to refill.

    :param ctx: the context that owns the graph (closed by :meth:`close`).
    :param output: the tensor to compute and read.
    :param inputs: the input tensors, in the order :meth:`run` gets their values.
    """

    __slots__ = ("ctx", "inputs", "output", "runs")

    def __init__(self, ctx: Context, output: Tensor, inputs: Sequence[Tensor]) -> None:
        self.ctx = ctx
        self.output = output
        self.inputs = tuple(inputs)
        #: Computes of this pass so far.
        self.runs = 0

    def run(self, values: Sequence[np.ndarray] | None = None) -> Tensor:
        """Write ``values`` into the inputs (None: they already hold them), compute, return output.

        :raises ShapeError: a value whose byte size differs from its input tensor's.
        """
        if values is not None:
            for t, v in zip(self.inputs, values, strict=True):
                t.from_bytes(v)
        self.ctx.compute(self.output)
        self.runs += 1
        return self.output

    def close(self) -> None:
        """Free the pass's context (its graph, inputs and the backend's graph state)."""
        self.ctx.close()


class PassCache:
    """The last ``kept`` built passes, keyed by their shape (least recently used freed first).

    :param kept: how many passes to keep (0 keeps none: every pass builds and is freed).
    """

    def __init__(self, kept: int = DEFAULT_KEPT_PASSES) -> None:
        self.kept = max(kept, 0)
        self._passes: OrderedDict[Hashable, BuiltPass] = OrderedDict()
        #: Passes built (a measure of how often reuse missed).
        self.builds = 0
        #: Passes run again from the cache.
        self.hits = 0

    def __len__(self) -> int:
        return len(self._passes)

    def __iter__(self) -> Iterator[BuiltPass]:
        """The kept passes, least recently used first."""
        return iter(list(self._passes.values()))

    def get(self, key: Hashable) -> BuiltPass | None:
        """Return the pass built for ``key`` (now the most recently used), or None."""
        built = self._passes.get(key)
        if built is not None:
            self._passes.move_to_end(key)
            self.hits += 1
        return built

    def put(self, key: Hashable, built: BuiltPass) -> bool:
        """Keep ``built`` under ``key``, freeing the least recently used beyond ``kept``.

        Returns False (and keeps nothing) when ``kept`` is 0: the caller then frees ``built``.
        """
        self.builds += 1
        if self.kept == 0:
            return False
        old = self._passes.pop(key, None)
        if old is not None and old is not built:
            old.close()
        self._passes[key] = built
        while len(self._passes) > self.kept:
            _, evicted = self._passes.popitem(last=False)
            evicted.close()
        return True

    def clear(self) -> None:
        """Free every kept pass."""
        passes = list(self._passes.values())
        self._passes.clear()
        for p in passes:
            p.close()
