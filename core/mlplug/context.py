"""Context: the abstract scope that creates tensors, records a graph and computes it."""

from __future__ import annotations

import copy
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ._tensorbase import LEAF, check_shape
from .dtypes import TRAITS, DType
from .errors import DTypeError, ErrNoMem, GraphError, NotSupportedError, ShapeError

if TYPE_CHECKING:
    from .backend import Backend
    from .tensor import Tensor

__all__ = ["Context"]


class _Shared:
    """State shared by a root context and its ``input()``/``layer(i)`` views."""

    __slots__ = ("closed", "tensors")

    def __init__(self) -> None:
        self.tensors: list[Tensor] = []
        self.closed = False


class Context(ABC):
    """A scope that owns tensors and a graph; backends subclass it with their storage.

    A context made by :meth:`Backend.new_context` records the ops applied to tensors; ``forward``
    adds tensors (and everything they depend on) to its graph, and ``compute`` runs the graph in
    forward order and makes the listed tensors readable. ``close`` (or leaving a ``with``
    block) frees every tensor the context and its ``input()``/``layer(i)`` views created.
    """

    #: Whether op results share scratch memory, each freed after its last use (ggml's graph
    #: allocator). A context that keeps every result until it closes sets this False; the core's
    #: graph-memory estimate (``Context.reserve``) follows it.
    reuses_scratch: ClassVar[bool] = True

    #: Layer whose KV cache this context's allocations count as; -1 = inputs.
    layer_index: int
    #: Device whose memory this context's constructor tensors take: -1 the CPU, else an index
    #: into ``backend.hook_gpu_devices()``. Set by ``layer(i)`` and model weight contexts; the
    #: core reads it (graph placement, memory accounting) for every context.
    device_index: int

    def __init__(self, backend: Backend, max_nodes: int) -> None:
        self.backend = backend
        self._max_nodes = max_nodes
        self._shared = _Shared()
        self._graph: list[Tensor] = []
        #: The tensors of :attr:`_graph` (identity hashing: a Tensor defines no ``__eq__``).
        self._in_graph: set[Tensor] = set()
        self._n_ops = 0
        self._batch_size = 0
        self.layer_index = -1
        self.device_index = -1
        backend._track_context(self)

    # -- backend hooks ----------------------------------------------------------------------
    @abstractmethod
    def _allocate(self, t: Tensor, data: bytes | None, zero: bool) -> None:
        """Give the root tensor ``t`` storage now, filled with ``data`` or zeros if asked."""

    @abstractmethod
    def read_bytes(self, t: Tensor) -> bytes:
        """Return the current data of ``t`` (a root or a view) packed in ggml order."""

    def read_array(self, t: Tensor) -> np.ndarray:
        """Return what :meth:`read_bytes` does as a new writable 1-D ``uint8`` array.

        :meth:`Tensor.floats` and :meth:`Tensor.to_numpy` read through this. The default
        copies :meth:`read_bytes`'s result; a backend that can copy its storage straight into
        an array overrides it (ggml: a decode step's logits, a megabyte for Gemma 3, were
        copied three times into fresh memory).
        """
        out: np.ndarray = np.frombuffer(self.read_bytes(t), np.uint8).copy()
        return out

    @abstractmethod
    def write_bytes(self, t: Tensor, data: bytes) -> None:
        """Overwrite the whole storage of the root tensor ``t`` with ``data``."""

    @abstractmethod
    def _execute(self, graph: Sequence[Tensor]) -> None:
        """Run every op node of ``graph`` in order (leaves already hold their data)."""

    @abstractmethod
    def _release(self, tensors: Sequence[Tensor]) -> None:
        """Free the storage of ``tensors`` (and any graph state); called once on close."""

    def _allocate_dry(self, t: Tensor) -> None:  # noqa: B027 - optional hook
        """Prepare the root tensor ``t`` of a dry-run backend: sizes only, no storage.

        The default does nothing (``t.data`` stays None); a backend that needs a metadata-only
        object (e.g. a no-alloc ggml tensor for graph measurement) overrides this.
        """

    # -- state --------------------------------------------------------------------------------
    @property
    def allocates(self) -> bool:
        """False for a dry-run (memory-sizing) backend, whose constructors copy no data."""
        return self.backend.allocates

    @property
    def closed(self) -> bool:
        """Whether this context (or a view of it) was closed."""
        return self._shared.closed

    def check_open(self) -> None:
        """Raise :class:`GraphError` if the context was closed."""
        if self._shared.closed:
            msg = "context is closed: its tensors were freed"
            raise GraphError(msg)

    def max_graph_nodes(self) -> int:
        """Return the number of op nodes this context's graph may hold."""
        return self._max_nodes

    def set_batch_size(self, n: int) -> None:
        """Store a batch-size hint for the backend's scheduler (0 leaves it as it is)."""
        self._batch_size = n

    # -- views of the context -----------------------------------------------------------------
    def _derive(self, layer: int) -> Context:
        child = copy.copy(self)
        child._graph = []
        child._in_graph = set()
        child._n_ops = 0
        child._batch_size = 0
        child.layer_index = layer
        child.device_index = -1 if layer < 0 else self.backend._layer_device(layer)
        self.backend._track_context(child)
        return child

    def input(self) -> Context:
        """Return a view of this context whose tensors are model inputs (kept on the CPU)."""
        return self._derive(-1)

    def layer(self, i: int) -> Context:
        """Return a view whose tensors live with layer ``i`` and count as its cache.

        Outside ``0 <= i < block_count`` the context itself is returned.
        """
        if 0 <= i < self.backend.block_count:
            return self._derive(i)
        return self

    # -- constructors ---------------------------------------------------------------------------
    def _leaf(self, dtype: DType, shape: tuple[int, ...], data: bytes | None, zero: bool) -> Tensor:
        from .tensor import Tensor

        self.check_open()
        if not isinstance(dtype, DType) or dtype == DType.OTHER or TRAITS[dtype].type_size == 0:
            msg = f"unsupported dtype: {dtype!r}"
            raise DTypeError(msg, op="new tensor", dtypes=(dtype,))
        ne = check_shape(tuple(shape))
        if ne is None:
            return Tensor(self, dtype, (0, 1, 1, 1))
        block = TRAITS[dtype].block_size
        if ne[0] % block:
            msg = (
                f"invalid shape: {dtype.name} needs dim 0 to be a multiple of {block}, got {ne[0]}"
            )
            raise ShapeError(msg, shapes=(tuple(shape),))
        if self.backend.name not in ("",) and dtype not in self.backend.dtypes:
            raise NotSupportedError(self.backend.name, "new tensor", f"dtype {dtype.name}")
        t = Tensor(self, dtype, ne)
        if data is not None and len(data) != t.nbytes:
            msg = (
                f"data size does not match tensor size: got {len(data)} bytes for a "
                f"{dtype.name} tensor of shape {list(t.shape)} ({t.nbytes} bytes)"
            )
            raise ShapeError(msg, op="from_bytes", shapes=(t.shape,))
        self.backend._account_cache(self, t)
        if self.allocates:
            try:
                self._allocate(t, data, zero)
            except ErrNoMem:
                raise
            except MemoryError as exc:  # the failed request is already in the record
                raise ErrNoMem(self.backend.backend_memory()) from exc
        else:
            self._allocate_dry(t)
        self._shared.tensors.append(t)
        return t

    def empty(self, dtype: DType, *shape: int) -> Tensor:
        """Create an uninitialised tensor of ``dtype`` and ggml ``shape`` (dim 0 first).

        >>> t = ctx.empty(DType.F16, 4, 2)
        >>> t.shape, t.dtype, t.stride(1), t.floats() is None
        ((4, 2), <DType.F16: 2>, 8, True)
        >>> ctx.empty(DType.F32, 2, 3, 4, 5, 6)
        Traceback (most recent call last):
            ...
        mlplug.errors.ShapeError: unsupported number of dimensions: shape [2, 3, 4, 5, 6] ...

        :raises ShapeError: for more than 4 dims or extents < 1.
        :raises DTypeError: for ``DType.OTHER``.
        """
        return self._leaf(dtype, shape, None, zero=False)

    def zeros(self, dtype: DType, *shape: int) -> Tensor:
        """Create a zero-filled tensor of ``dtype`` and ggml ``shape``.

        >>> t = ctx.zeros(DType.I32, 3)
        >>> ctx.compute(t)
        >>> t.to_numpy().tolist()
        [0, 0, 0]
        """
        return self._leaf(dtype, shape, None, zero=True)

    def from_bytes(
        self, dtype: DType, data: bytes | bytearray | memoryview | np.ndarray, *shape: int
    ) -> Tensor:
        """Create a tensor of ``dtype`` and ``shape`` holding raw little-endian ``data``.

        Empty ``data`` leaves the tensor uninitialised.

        >>> t = ctx.from_bytes(DType.F16, np.float16([1.5, -2]).tobytes(), 2)
        >>> ctx.compute(t)
        >>> t.dtype, t.floats().tolist()
        (<DType.F16: 2>, [1.5, -2.0])
        >>> ctx.from_bytes(DType.F32, bytes(6), 2)
        Traceback (most recent call last):
            ...
        mlplug.errors.ShapeError: data size does not match tensor size: got 6 bytes ...

        :raises ShapeError: if ``len(data)`` differs from the tensor's byte size.
        """
        raw = _as_bytes(data)
        return self._leaf(dtype, shape, raw if raw else None, zero=False)

    def from_floats(self, values: Any, *shape: int) -> Tensor:
        """Create an F32 tensor from values in ggml order (``values`` flat, or an array).

        With no ``shape``, an array's shape is taken reversed: ``(2, 3)`` becomes ggml ``[3, 2]``.

        >>> t = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2)
        >>> t.shape, t.dim(0)
        ((3, 2), 3)
        >>> ctx.compute(t)
        >>> t.to_numpy().tolist()
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        >>> ctx.from_floats(np.zeros((2, 3))).shape
        (3, 2)

        :raises ShapeError: if the number of values does not match ``shape``.
        """
        return self._from_values(values, shape, DType.F32, "<f4", "from_floats")

    def from_ints(self, values: Any, *shape: int) -> Tensor:
        """Create an I32 tensor from values in ggml order (see :meth:`from_floats`).

        >>> t = ctx.from_ints([1, -2, 3], 3)
        >>> ctx.compute(t)
        >>> t.dtype, t.to_numpy().tolist()
        (<DType.I32: 5>, [1, -2, 3])
        """
        return self._from_values(values, shape, DType.I32, "<i4", "from_ints")

    def _from_values(
        self, values: Any, shape: tuple[int, ...], dtype: DType, np_dtype: str, op: str
    ) -> Tensor:
        arr = np.asarray(values)
        if not shape:
            shape = tuple(reversed(arr.shape)) if arr.ndim else (1,)
        if arr.size == 0:
            return self._leaf(dtype, shape, None, zero=False)
        n = 1
        for d in shape:
            n *= int(d) if isinstance(d, (int, np.integer)) else 0
        if arr.size != n:
            msg = f"invalid shape: {arr.size} values do not fill shape {list(shape)} ({n} elements)"
            raise ShapeError(msg, op=op, shapes=(tuple(shape),))
        if dtype == DType.I32 and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            msg = f"{op}: non-finite values cannot be stored as int32"
            raise DTypeError(msg, op=op, dtypes=(dtype,))
        data = np.ascontiguousarray(arr.reshape(-1), dtype=np_dtype).tobytes()
        return self._leaf(dtype, shape, data, zero=False)

    def arange(self, start: float, stop: float, step: float, dtype: DType) -> Tensor:
        """Return ``start, start+step, ...`` below ``stop`` (half-open), as F32 or I32.

        F32 is a graph op (values exist after compute); I32 is computed now on the host with
        float32 accumulation and truncation toward zero (docs/tensors.md, section 'Constructors').

        >>> f = ctx.arange(0.5, 5, 1.5, DType.F32)
        >>> i = ctx.arange(0.5, 5, 1.5, DType.I32)
        >>> ctx.compute(f, i)
        >>> f.floats().tolist(), i.to_numpy().tolist()
        ([0.5, 2.0, 3.5], [0, 2, 3])

        :raises NotSupportedError: for dtypes other than F32 and I32.
        :raises ShapeError: for a non-positive step or ``stop <= start`` (F32).
        """
        from .ops.construct import arange

        return arange(self, start, stop, step, dtype)

    # -- graph ----------------------------------------------------------------------------------
    def forward(self, *tensors: Tensor) -> Context:
        """Add ``tensors`` and everything they depend on to the graph; return self."""
        self.check_open()
        for t in tensors:
            self._add(t)
        return self

    def _add(self, root: Tensor) -> None:
        in_graph = self._in_graph
        if root in in_graph:
            return
        if root.ctx.backend is not self.backend:
            msg = (
                f"{root!r} belongs to backend {root.ctx.backend.name!r}, not {self.backend.name!r}"
            )
            raise GraphError(msg)
        # Post-order walk: a node goes in once all its sources are in (sources in order).
        stack: list[Tensor] = [root]
        push, pop = stack.append, stack.pop
        mark, append = in_graph.add, self._graph.append
        n_ops = 0
        while stack:
            t = stack[-1]
            for s in t.src:
                if s not in in_graph:
                    push(s)
                    break
            else:
                # Every source is in, so t was pushed once and is not in yet (no cycles).
                pop()
                mark(t)
                append(t)
                if t.op != LEAF:
                    n_ops += 1
        self._n_ops += n_ops
        if self._n_ops > self._max_nodes:
            msg = (
                f"graph has {self._n_ops} nodes, more than this context's maximum "
                f"{self._max_nodes} (use Backend.new_context_size)"
            )
            raise GraphError(msg)

    def compute(self, *tensors: Tensor) -> None:
        """Run the graph built by :meth:`forward` and make ``tensors`` readable.

        Tensors listed here are forwarded first if they were not, so ``ctx.compute(t)`` alone
        works. Only one computation per backend runs at a time.
        """
        self.compute_with_notify(None, *tensors)

    def compute_with_notify(self, cb: Callable[[], None] | None, *tensors: Tensor) -> None:
        """Like :meth:`compute`, calling ``cb`` in a new thread once the compute has begun."""
        self.check_open()
        self.forward(*tensors)
        if not self._graph:
            msg = "compute called with no graph: forward tensors first"
            raise GraphError(msg)
        with self.backend.compute_lock:
            if cb is not None:
                threading.Thread(target=cb, daemon=True).start()
            if self._batch_size > 0:
                self.backend.batch_size = self._batch_size
            self._execute(self._graph)
        for t in tensors:
            t.readable = True

    def reserve(self) -> None:
        """Measure the memory the current graph needs without running it (see BackendMemory)."""
        self.check_open()
        if self._batch_size > 0:
            self.backend.batch_size = self._batch_size
        self.backend._reserve_graph(self, self._graph)

    @property
    def graph(self) -> Sequence[Tensor]:
        """The tensors of the graph in execution order (leaves included)."""
        return tuple(self._graph)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Free every tensor of this context and its views; safe to call twice."""
        shared = self._shared
        if shared.closed:
            return
        shared.closed = True
        tensors, shared.tensors = shared.tensors, []
        graph, self._graph = self._graph, []
        self._in_graph = set()
        self._release(tensors)
        for t in (*tensors, *graph):
            # leaves of other contexts (weights, caches) only pass through this graph
            if t.op != LEAF or t.ctx._shared is shared:
                t.data = None
                t.handle = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_bytes(data: bytes | bytearray | memoryview | np.ndarray | Iterable[int]) -> bytes:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).tobytes()
    return bytes(data)
