"""GGMLContext: constructor tensors in backend buffers, graphs as cached ggml graphs.

Storage model:

* A constructor tensor (leaf) is a ggml tensor in the context's :class:`LeafArena`, with
  backend storage from the moment it is created; ``Tensor.handle`` holds its address. Writes
  (``cpy``, ``set_rows``, ``set``, in-place ops) into a leaf land in that storage, so later
  graphs see them.
* Op nodes have no storage of their own: a compute translates the graph into a ggml graph
  whose intermediates live in the compute buffer of a graph allocator. The tensors passed to
  ``compute`` are graph outputs (never recycled); their ``handle`` then points at the entry
  and the ggml tensor holding their bytes, until that entry is dropped from the cache, when
  their bytes are copied out first.

The translated graphs are cached per context, keyed by the structure of the core graph (ops,
shapes, strides, params, sources by position, leaves by identity) and the requested outputs, so
computing the same graph again costs one ggml compute and no Python per node.
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from mlplug import Context
from mlplug.plugin_api import LEAF, TRAITS, GraphError

from . import _graph, _lib
from ._arena import LeafArena

if TYPE_CHECKING:
    from mlplug import Tensor

    from .backend import GGMLBackend

__all__ = ["GGMLContext"]

#: Translated graphs a context keeps (least recently used ones are dropped first).
MAX_CACHED_GRAPHS: Final = 8
#: ``MLPLUG_GGML_VERIFY=1`` compares every node's ggml layout with mlplug's (for tests).
_VERIFY: Final = os.environ.get("MLPLUG_GGML_VERIFY", "") not in ("", "0")


class _State:
    """ggml resources shared by a root context and its ``input()``/``layer(i)`` views.

    Leaves live in one arena per placement (:meth:`GGMLBackend.placement`): the compute device,
    or a remote device holding layers placed there.
    """

    __slots__ = ("__weakref__", "arenas", "backend", "entries", "leaf_bytes", "weights")

    def __init__(self, backend: GGMLBackend) -> None:
        self.backend = backend
        self.arenas: dict[int, LeafArena] = {}
        self.entries: OrderedDict[Any, _graph.Entry] = OrderedDict()
        #: Bytes the backend accounts for the leaves, per placement.
        self.leaf_bytes: dict[int, int] = {}
        #: A context of model weights (its buffers are marked as weights for the scheduler).
        self.weights = False

    def arena(self, place: int) -> LeafArena:
        """The arena of placement ``place`` (created on first use)."""
        arena = self.arenas.get(place)
        if arena is None:
            usage = (
                _lib.GGML_BACKEND_BUFFER_USAGE_WEIGHTS
                if self.weights
                else _lib.GGML_BACKEND_BUFFER_USAGE_ANY
            )
            be = self.backend
            arena = self.arenas[place] = LeafArena(be.lib, be.buffer_type_of(place), usage)
        return arena

    def held_bytes(self) -> dict[int, int]:
        """Leaf storage plus the compute buffers of the cached graphs, per placement."""
        held = dict(self.leaf_bytes)
        for e in self.entries.values():
            for place, n in e.sizes.items():
                held[place] = held.get(place, 0) + n
        return held

    def put(self, key: Any, entry: _graph.Entry) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            old.free(snapshot=True)
        self.entries[key] = entry
        while len(self.entries) > MAX_CACHED_GRAPHS:
            _, evicted = self.entries.popitem(last=False)
            evicted.free(snapshot=True)

    def free(self) -> None:
        _free(self.arenas, self.entries)
        self.leaf_bytes = {}


def _free(arenas: dict[int, LeafArena], entries: OrderedDict[Any, _graph.Entry]) -> None:
    """Free a context's graphs and leaf storage (idempotent; also its GC finalizer)."""
    cached = list(entries.values())
    entries.clear()
    for e in cached:
        e.free(snapshot=False)
    for arena in list(arenas.values()):
        arena.free()


class GGMLContext(Context):
    """A context of the ggml backend (see the module docstring for the storage model)."""

    backend: GGMLBackend

    def __init__(self, backend: GGMLBackend, max_nodes: int) -> None:
        """Create an empty context of ``backend`` whose graph may hold ``max_nodes`` ops."""
        super().__init__(backend, max_nodes)
        self._gg = st = _State(backend)
        backend.states.add(st)
        # A context dropped without close() still gives its native memory back.
        weakref.finalize(st, _free, st.arenas, st.entries)
        self._outputs: tuple[Tensor, ...] = ()
        #: (graph list, its length, ids of the outputs, cache key, entry) of the last compute.
        self._memo: tuple[Sequence[Tensor], int, tuple[int, ...], Any, _graph.Entry] | None = None

    # -- leaves -------------------------------------------------------------------------------
    def _allocate(self, t: Tensor, data: bytes | None, zero: bool) -> None:
        place = self.backend.placement(self.device_index)
        arena = self._gg.arena(place)
        lib = self.backend.lib
        ptr = arena.new_tensor(TRAITS[t.dtype].ggml_type, t.ne)
        t.handle = ptr
        arena.allocate(ptr)
        t.data = ptr
        held = self._gg.leaf_bytes
        held[place] = held.get(place, 0) + self.backend.hook_allocation_size(t)
        n = t.nbytes
        if data is not None and n:
            lib.ggml_backend_tensor_set(ptr, data, 0, n)
        elif zero and n:
            lib.ggml_backend_tensor_memset(ptr, 0, 0, n)

    def _allocate_dry(self, t: Tensor) -> None:
        # A dry run: ggml metadata only, so graphs over these tensors can be measured.
        place = self.backend.placement(self.device_index)
        t.handle = self._gg.arena(place).new_tensor(TRAITS[t.dtype].ggml_type, t.ne)

    def write_bytes(self, t: Tensor, data: bytes) -> None:
        root = t.root
        if root.data is None:
            msg = f"{t!r} has no storage (a dry-run backend or a closed context)"
            raise GraphError(msg)
        if len(data) != root.nbytes:
            msg = f"write of {len(data)} bytes into a tensor of {root.nbytes} bytes"
            raise GraphError(msg)
        if data:
            self.backend.lib.ggml_backend_tensor_set(root.handle, data, 0, len(data))

    def read_bytes(self, t: Tensor) -> bytes:
        where = self._storage(t)
        if where is not None:
            return _graph.gather(self.backend.lib, where[0], where[1], t)
        if t.root.op == LEAF:
            msg = f"{t!r} has no data (a dry-run backend or a closed context)"
            raise GraphError(msg)
        h = t.handle
        if isinstance(h, bytes):  # a snapshot kept when its graph was freed
            return h
        msg = f"{t!r} has no computed data (its context was closed)"
        raise GraphError(msg)

    def read_array(self, t: Tensor) -> np.ndarray:
        """Copy a contiguous ``t`` straight from ggml into a new array (one copy, not three)."""
        where = self._storage(t)
        if where is None or not t.is_contiguous():
            return super().read_array(t)
        return _graph.read_into(self.backend.lib, where[0], where[1], t.nbytes)

    def _storage(self, t: Tensor) -> tuple[int, int] | None:
        """``(ggml tensor handle, byte offset)`` of ``t``'s data in ggml memory, or None (no
        data, or only a snapshot of it: :meth:`read_bytes` says which)."""
        root = t.root
        if root.op == LEAF:
            return None if root.data is None else (root.handle, t.view_offs)
        h = t.handle
        if isinstance(h, tuple) and h[0].alive:
            return h[1], h[2]
        return None

    def _read_leaf(self, t: Tensor) -> bytes:
        root = t.root
        return _graph.gather(self.backend.lib, root.handle, t.view_offs, t)

    # -- graphs -------------------------------------------------------------------------------
    def compute_with_notify(self, cb: Callable[[], None] | None, *tensors: Tensor) -> None:
        """Run the graph and make ``tensors`` readable (they become ggml graph outputs)."""
        self._outputs = tensors
        try:
            super().compute_with_notify(cb, *tensors)
        finally:
            self._outputs = ()

    def _execute(self, graph: Sequence[Tensor]) -> None:
        self.backend._check_open()  # its ggml stream is freed on close
        if not self.allocates:
            msg = "a dry-run backend (alloc_memory=False) cannot compute"
            raise GraphError(msg)
        outputs = self._outputs
        entry = self._entry(graph, outputs)
        be = self.backend
        entry.run(be.backend_ptr, self._read_leaf)
        for o, handle in zip(outputs, entry.handles, strict=True):
            if o.root.op != LEAF:
                if o.handle is not handle:
                    o.handle = handle
                    entry.readers.append(weakref.ref(o))

    def _entry(self, graph: Sequence[Tensor], outputs: tuple[Tensor, ...]) -> _graph.Entry:
        """Return the cached ggml graph of ``graph`` (building and caching it if needed)."""
        out_ids = tuple([id(o) for o in outputs])
        m = self._memo
        if (
            m is not None
            and m[0] is graph
            and m[1] == len(graph)
            and m[2] == out_ids
            and m[4].alive
            and not m[4].stale()
        ):
            self._gg.entries.move_to_end(m[3])
            return m[4]
        self._prepare_leaves(graph)
        key = _graph.graph_key(graph, outputs)
        st = self._gg
        entry = st.entries.get(key)
        if entry is None or entry.stale():
            be = self.backend
            entry = _graph.build(
                be.lib,
                graph,
                outputs,
                flash=be.flash,
                buft=be.buffer_type,
                backend=be.backend_ptr,
                check_support=not be.is_cpu,
                owner=self._shared,
                verify=_VERIFY,
                split=self._split_plan(graph),
                place=be.compute_place,
            )
            st.put(key, entry)
        else:
            st.entries.move_to_end(key)
        self._memo = (graph, len(graph), out_ids, key, entry)
        return entry

    def _prepare_leaves(self, graph: Sequence[Tensor]) -> None:
        """Check every leaf has storage; give empty tensors (never allocated) theirs now."""
        for t in graph:
            if t.op != LEAF or t.data is not None:
                continue
            if t.ctx.closed:
                msg = f"{t!r} belongs to a closed context"
                raise GraphError(msg)
            if t.nelements == 0 and isinstance(t.ctx, GGMLContext) and t.ctx.allocates:
                t.ctx._allocate(t, None, zero=False)
                continue
            msg = f"{t!r} has no storage in this ggml backend"
            raise GraphError(msg)

    def graph_size(self, graph: Sequence[Tensor]) -> dict[int, int]:
        """Return the compute-buffer bytes ``graph`` needs per placement (measured, not
        allocated)."""
        be = self.backend
        for t in graph:
            if t.op == LEAF and t.handle is None:
                if t.ctx.closed:
                    msg = f"{t!r} belongs to a closed context"
                    raise GraphError(msg)
                if isinstance(t.ctx, GGMLContext):
                    t.ctx._allocate_dry(t)
        return _graph.measure(
            be.lib,
            graph,
            flash=be.flash,
            buft=be.buffer_type,
            leaves_without_data=not self.allocates,
            split=self._split_plan(graph),
            place=be.compute_place,
        )

    def _split_plan(self, graph: Sequence[Tensor]) -> _graph.SplitPlan | None:
        """The scheduler's view of ``graph`` when it reads leaves on more than one placement
        (None for a graph on the compute device alone): the backends, and each leaf's buffer
        type and whether it is a weight. ggml's scheduler then runs ops reading a weight on
        the weight's device and copies a split's inputs where they are needed."""
        be = self.backend
        if not be.remote_places:
            return None
        leaves: list[tuple[Tensor, int, bool]] = []
        places = {be.compute_place}
        for t in graph:
            if t.op == LEAF and isinstance(t.ctx, GGMLContext):
                place = be.placement(t.ctx.device_index)
                places.add(place)
                leaves.append((t, be.buffer_type_of(place), t.ctx._gg.weights))
        if len(places) < 2:
            return None
        return _graph.SplitPlan(places=be.sched_places(), leaves=leaves)

    # -- lifetime -----------------------------------------------------------------------------
    def _release(self, tensors: Sequence[Tensor]) -> None:
        self._memo = None
        self._gg.free()
