"""ArrayContext: the shared engine of backends that run each node eagerly over arrays.

numpy and torch (and any similar library) hold a root tensor's storage as one flat buffer and
see every tensor as a strided view of its root: views, permutes and in-place results then need
no kernel at all. Such a backend subclasses :class:`ArrayContext`, supplies storage hooks, and
fills its Backend's ``kernels`` table with ``kernel(ctx, node)`` functions that read their
sources through ``ctx`` and write the node's own view.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._tensorbase import LEAF
from .context import Context
from .errors import GraphError
from .ops import VIEW_OPS

if TYPE_CHECKING:
    from .backend import Backend
    from .tensor import Tensor

__all__ = ["ArrayContext", "Preparer", "Step"]

_T = TypeVar("_T")
_MISSING: Any = object()

#: One bound, ready-to-run computation of a node: called with no arguments on every compute.
Step = Callable[[], object]

#: ``preparer(ctx, node)``: bind a kernel's work for ``node`` once per plan and return the
#: :data:`Step` that repeats it, or None to run the kernel itself for this node.
Preparer = Callable[[Any, "Tensor"], "Step | None"]


class ArrayContext(Context):
    """A context whose tensors are views of flat per-root buffers, computed node by node."""

    #: Every op result keeps its buffer until the context closes (see Context.reuses_scratch).
    reuses_scratch = False

    #: Kernel -> its :data:`Preparer`. A subclass lists the kernels that can bind their arrays
    #: once per plan (views of storage that lives as long as the context), so repeated computes
    #: of the same graph pay no per-node lookups. Keyed by the kernel itself, so a backend that
    #: replaces an op's kernel never gets the old kernel's preparer. Default: none.
    preparers: ClassVar[Mapping[Callable[..., Any], Preparer]] = {}

    #: (graph list, its length when planned, the (kernel, node) steps, the states of the other
    #: contexts whose tensors the graph reads). The list itself is held so that a new list
    #: reusing a freed one's id can never pick up a stale plan; a plan is made again when one of
    #: those contexts has closed (which then raises, naming the operand without data).
    _plan: tuple[Sequence[Tensor], int, list[Step], tuple[Any, ...]] | None = None

    #: Per-compute memo for kernels: values several nodes of one graph share (RoPE's angle
    #: table, the same for every layer's queries and keys). Emptied when a compute starts.
    memo: dict[Any, Any]

    def __init__(self, backend: Backend, max_nodes: int) -> None:
        super().__init__(backend, max_nodes)
        self.memo = {}

    def shared(self, key: Hashable, make: Callable[[], _T]) -> _T:
        """``make()``, made once per compute for ``key`` (kept in :attr:`memo`): a value several
        nodes share, such as the rounded column that q, k and v multiply."""
        hit = self.memo.get(key, _MISSING)
        if hit is _MISSING:
            hit = self.memo[key] = make()
        return hit  # type: ignore[no-any-return]

    @abstractmethod
    def new_storage(self, nbytes: int, zero: bool) -> Any:
        """Return a new flat byte buffer of ``nbytes`` (zero-filled if asked)."""

    @abstractmethod
    def store(self, storage: Any, data: bytes) -> None:
        """Copy ``data`` into the whole of ``storage``."""

    def _allocate(self, t: Tensor, data: bytes | None, zero: bool) -> None:
        t.data = self.new_storage(t.nbytes, zero)
        if data is not None:
            self.store(t.data, data)

    def write_bytes(self, t: Tensor, data: bytes) -> None:
        t.handle = None
        self.store(t.root.data, data)

    def _execute(self, graph: Sequence[Tensor]) -> None:
        steps = self.planned_steps(graph)
        self.memo = {}
        for step in steps:
            step()

    def planned_steps(self, graph: Sequence[Tensor]) -> list[Step]:
        """The steps that run ``graph``, planned once (:meth:`_make_plan`) and kept while the
        graph is unchanged and every context it reads from is open."""
        plan = self._plan
        if (
            plan is None
            or plan[0] is not graph
            or plan[1] != len(graph)
            or any(s.closed for s in plan[3])
        ):
            mine = self._shared
            others = {id(s.ctx._shared): s.ctx._shared for t in graph for s in (t, *t.src)}
            others.pop(id(mine), None)
            plan = (graph, len(graph), self._make_plan(graph), tuple(others.values()))
            self._plan = plan
        return plan[2]

    def _make_plan(self, graph: Sequence[Tensor]) -> list[Step]:
        """Allocate op results and return the steps to run, in order.

        A step is what the kernel's :attr:`preparers` entry returns for the node, when there is
        one and it returns a step; else ``kernel(ctx, node)`` bound to its arguments.
        """
        kernels = self.backend.kernels
        preparers = self.preparers
        steps: list[Step] = []
        for t in graph:
            op = t.op
            if op == LEAF or op in VIEW_OPS:
                continue
            if t.view_src is None and t.data is None:
                t.data = self.new_storage(t.nbytes, False)
            for s in t.src:
                if s.root.data is None and s.root.nelements:
                    msg = f"{t.op}: operand {s!r} has no data (was its context closed?)"
                    raise GraphError(msg)
            kernel = kernels[op]
            prepare = preparers.get(kernel)
            step = prepare(self, t) if prepare is not None else None
            steps.append(step if step is not None else functools.partial(kernel, self, t))
        return steps

    def _release(self, tensors: Sequence[Tensor]) -> None:
        self._plan = None
        for t in tensors:
            t.data = None
            t.handle = None
