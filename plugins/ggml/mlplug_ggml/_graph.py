"""From an mlplug graph to an allocated ggml graph, and running it.

:func:`build` translates the nodes of a core graph in forward order (each through its kernel),
expands them into one ``ggml_cgraph`` in that same order (so writes into caches happen before the
reads that follow them), marks the requested tensors as graph outputs (with the tensors owning
their storage, so the graph allocator never recycles them), and allocates the intermediates with
a graph allocator of their own. The result, an :class:`Entry`, is cached by the context and run
again, as is, by later computes of the same graph.

Index operands (rows, experts, state slots) are data that ggml trusts: an index out of range
aborts the process. Before anything runs, each index operand is traced back through the graph:
indices read from a constructor tensor are checked on the host before every compute; indices
made by ``argsort`` are bounded by its row length; any other index operand splits the ggml graph
just before its consumer, so its values are read back and checked between the two parts.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np
from mlplug.plugin_api import (
    LEAF,
    TRAITS,
    VIEW_OPS,
    DType,
    GraphError,
    NotSupportedError,
    OutOfRangeError,
)

from . import _lib
from ._lib import GGMLTensor
from .ops import KERNELS, Builder

if TYPE_CHECKING:
    from mlplug import Tensor

    from ._lib import Lib

__all__ = ["Entry", "IdCheck", "SplitPlan", "build", "gather", "graph_key", "measure"]

#: Upper bound of the ggml tensors one kernel creates (default :data:`_DEFAULT_COST`).
_COST: Final = {"scaled_dot_product_attention": 16, "conv_3d": 12}
_DEFAULT_COST: Final = 3
#: op -> (index of the checked operand, its valid range ``[low, high)``), for index operands.
_ID_OPS: Final[dict[str, tuple[int, Callable[[Tensor], tuple[int, int]]]]] = {
    "rows": (1, lambda t: (0, t.src[0].ne[1])),
    "set_rows": (2, lambda t: (0, t.src[0].ne[1])),
    "mulmat_id": (2, lambda t: (0, t.src[0].ne[2])),
    "add_id": (2, lambda t: (0, t.src[1].ne[1])),
    "ssm_scan": (6, lambda t: (0, t.src[0].ne[3])),
}
#: I32 sort keys go through F32 (exact up to 2**24 in magnitude).
_F32_EXACT: Final = 1 << 24
#: Ops whose result holds values of its first source only (rearranged or repeated).
_MOVES: Final = frozenset({"view", "reshape", "permute", "contiguous", "repeat"})
#: ggml ops that compute nothing (skipped by the backend-support check).
_NO_COMPUTE: Final = frozenset({b"NONE", b"RESHAPE", b"VIEW", b"PERMUTE", b"TRANSPOSE"})
_INDEX_NP: Final[dict[DType, np.dtype[Any]]] = {
    DType.I32: np.dtype("<i4"),
    DType.I64: np.dtype("<i8"),
}
_BACKEND: Final = "ggml"


class IdCheck(NamedTuple):
    """One integer operand to validate: its values must lie in ``[low, high)``."""

    op: str
    ids: Tensor
    low: int
    high: int
    #: The operand's ggml tensor (checks made between graph parts read it back).
    ptr: int


class SplitPlan(NamedTuple):
    """A graph spread over devices, run by ggml's scheduler.

    The scheduler places each op from the buffers of its operands (an op reading a weight
    runs where the weight is; views and writes where their storage is) and copies a split's
    inputs to its device. A dry run's leaves have no buffer: :func:`measure` gives them empty
    buffers of their device's type for the measurement, so the split is the same.
    """

    #: ``(placement, ggml_backend_t)`` in the scheduler's priority order, the CPU last.
    places: list[tuple[int, int]]
    #: Every leaf: its buffer type and whether it is a model weight.
    leaves: list[tuple[Tensor, int, bool]]


def _new_sched(lib: Lib, plan: SplitPlan, cgraph: int) -> int:
    """Create a scheduler over the plan's backends."""
    n = len(plan.places)
    backends = (ctypes.c_void_p * n)(*[b for _, b in plan.places])
    size = max(int(lib.ggml_graph_size(cgraph)), _lib.GGML_DEFAULT_GRAPH_SIZE)
    sched = lib.ggml_backend_sched_new(backends, None, n, size, False, False)
    if not sched:
        msg = "ggml: cannot create a scheduler over the devices"
        raise MemoryError(msg)
    return int(sched)


class Entry:
    """A translated, allocated ggml graph ready to run (one cache entry of a context)."""

    __slots__ = (
        "__weakref__",
        "alive",
        "foreign",
        "galloc",
        "gctx",
        "graph",
        "handles",
        "host_checks",
        "lib",
        "nbytes",
        "readers",
        "sched",
        "seg_ctx",
        "segments",
        "sizes",
    )

    def __init__(self, lib: Lib, gctx: int, graph: int) -> None:
        self.lib = lib
        self.gctx: int | None = gctx
        self.graph = graph
        self.galloc: int | None = None
        #: ``ggml_backend_sched_t`` of a graph spread over devices (then ``galloc`` is None).
        self.sched: int | None = None
        #: Compute-buffer bytes per placement (device index as the core numbers them).
        self.sizes: dict[int, int] = {}
        self.seg_ctx: int | None = None
        #: ``[(checks to make first, cgraph)]`` when index checks split the graph, else None.
        self.segments: list[tuple[list[IdCheck], int]] | None = None
        #: Index operands read from constructor tensors: checked on the host before a run.
        self.host_checks: list[IdCheck] = []
        #: The shared records of the other contexts whose leaves this graph reads (each once):
        #: the entry is stale once one of them is closed.
        self.foreign: list[Any] = []
        #: Per requested tensor (in request order), its handle: (this entry, the ggml tensor
        #: owning its storage, its byte offset there).
        self.handles: list[tuple[Entry, int, int]] = []
        #: Tensors whose readable data lives in this entry's buffer.
        self.readers: list[weakref.ref[Tensor]] = []
        #: Bytes of the compute buffer.
        self.nbytes = 0
        self.alive = True

    def stale(self) -> bool:
        """Whether a leaf of another context this graph reads was freed since it was built."""
        if not self.foreign:
            return False
        return any(shared.closed for shared in self.foreign)

    def run(self, backend: int, read_leaf: Callable[[Tensor], bytes]) -> None:
        """Check the index operands and compute the graph (in parts if it was split).

        :raises OutOfRangeError: an index operand holds a value outside its range.
        :raises GraphError: ggml reported a failed computation.
        """
        checks = self.host_checks
        if checks:
            # Operands often share one index leaf (every layer's K and V cache writes): read
            # each leaf once and test its extremes against every range that uses it.
            by_leaf: dict[int, list[IdCheck]] = {}
            for chk in checks:
                by_leaf.setdefault(id(chk.ids), []).append(chk)
            for group in by_leaf.values():
                _check_group(read_leaf(group[0].ids), group)
        if self.segments is None:
            self._compute(backend, self.graph)
            return
        for checks, g in self.segments:
            for chk in checks:
                base, offs = storage_of(chk.ptr)
                _check_values(gather(self.lib, base, offs, chk.ids), chk)
            self._compute(backend, g)

    def _compute(self, backend: int, graph: int) -> None:
        if self.sched:
            status = self.lib.ggml_backend_sched_graph_compute(self.sched, graph)
        else:
            status = self.lib.ggml_backend_graph_compute(backend, graph)
        if status != _lib.GGML_STATUS_SUCCESS:
            text = (self.lib.ggml_status_to_string(status) or b"").decode(errors="replace")
            msg = f"error computing ggml graph: {text or status}"
            raise GraphError(msg)

    def free(self, snapshot: bool) -> None:
        """Free the graph; with ``snapshot``, readable outputs first copy their bytes out."""
        if not self.alive:
            return
        self.alive = False
        if snapshot:
            for ref in self.readers:
                t = ref()
                if t is None:
                    continue
                h = t.handle
                if isinstance(h, tuple) and h[0] is self:
                    t.handle = gather(self.lib, h[1], h[2], t)
        self.readers.clear()
        self.handles.clear()
        lib = self.lib
        if self.galloc:
            lib.ggml_gallocr_free(self.galloc)
        if self.sched:
            lib.ggml_backend_sched_free(self.sched)
        for c in (self.seg_ctx, self.gctx):
            if c:
                lib.ggml_free(c)
        self.galloc = self.sched = self.seg_ctx = self.gctx = None


def graph_key(graph: Sequence[Tensor], outputs: Sequence[Tensor]) -> tuple[Any, ...]:
    """Return the structure of ``graph``: per node its op, dtype, shape, strides, offset,
    params and sources (as graph positions); leaves by identity (their ggml tensor)."""
    index: dict[int, int] = {}
    parts: list[Any] = []
    for i, t in enumerate(graph):
        index[id(t)] = i
        if t.op == LEAF:
            parts.append(t.handle)
        else:
            parts.append(
                (
                    t.op,
                    t.dtype,
                    t.ne,
                    t.nb,
                    t.view_offs,
                    t.params,
                    t.view_src is not None,
                    tuple([index[id(s)] for s in t.src]),
                )
            )
    return tuple(parts), tuple([index[id(o)] for o in outputs])


def _translate(lib: Lib, graph: Sequence[Tensor], flash: bool) -> tuple[int, int, Builder]:
    """Build every node's ggml tensor and expand them, in order, into a new cgraph."""
    cost = 8
    for t in graph:
        if t.op != LEAF:
            cost += _COST.get(t.op, _DEFAULT_COST)
    size = cost + len(graph) + 16
    mem = lib.ggml_tensor_overhead() * cost + lib.ggml_graph_overhead_custom(size, False)
    gctx = lib.ggml_init(_lib.GGMLInitParams(mem_size=mem, mem_buffer=None, no_alloc=True))
    if not gctx:
        msg = f"ggml: cannot allocate {mem} bytes of graph metadata"
        raise MemoryError(msg)
    try:
        cgraph: int = lib.ggml_new_graph_custom(gctx, size, False)
        b = Builder(lib, gctx, flash)
        ptrs = b.ptrs
        kernels = KERNELS
        expand = lib.ggml_build_forward_expand
        for t in graph:
            if t.op == LEAF:
                ptrs[id(t)] = t.handle
                continue
            ptr = kernels[t.op](b, t)
            if not ptr:
                msg = f"ggml returned no tensor for {t.op}"
                raise GraphError(msg)
            ptrs[id(t)] = ptr
            expand(cgraph, ptr)
    except BaseException:
        lib.ggml_free(gctx)
        raise
    return gctx, cgraph, b


def storage_of(ptr: int) -> tuple[int, int]:
    """Return the ggml tensor owning ``ptr``'s storage and ``ptr``'s byte offset in it."""
    s = GGMLTensor.at(ptr)
    return (s.view_src or ptr), (s.view_offs if s.view_src else 0)


def _check_layout(ptr: int, t: Tensor) -> None:
    """Raise if the ggml tensor of ``t`` does not have ``t``'s type, shape and strides."""
    s = GGMLTensor.at(ptr)
    ne, nb = tuple(s.ne), tuple(s.nb)
    block = TRAITS[t.dtype].block_size
    # strides of size-1 dims address nothing (kernels may have made them canonical)
    steps = [i for i in range(4) if ne[i] > (block if i == 0 else 1)]
    if s.type != TRAITS[t.dtype].ggml_type or ne != t.ne or any(nb[i] != t.nb[i] for i in steps):
        msg = (
            f"ggml built {t.op} as type {s.type} shape {list(ne)} strides {list(nb)}, mlplug "
            f"expects {t.dtype.name} {list(t.ne)} {list(t.nb)}"
        )
        raise GraphError(msg)


def _provenance(t: Tensor, written: set[int]) -> tuple[list[Tensor], int] | None:
    """Trace index values back to leaf views (checkable on the host) and an upper bound
    (from argsort: indices below its row length); None when they come from anywhere else."""
    if t.op == LEAF or (t.op in VIEW_OPS and t.root.op == LEAF):
        return None if id(t.root) in written else ([t], 0)
    if t.op in _MOVES:
        return _provenance(t.src[0], written)
    if t.op == "concat":
        a, b = _provenance(t.src[0], written), _provenance(t.src[1], written)
        return None if a is None or b is None else (a[0] + b[0], max(a[1], b[1]))
    if t.op == "argsort":
        return [], t.src[0].ne[0]
    if t.op == "rows" and t.dtype == DType.I32:
        return _provenance(t.src[0], written)
    return None


def _checked_operand(t: Tensor) -> tuple[Tensor, int, int] | None:
    """Return the integer operand of ``t`` whose values ggml trusts, with its valid range."""
    spec = _ID_OPS.get(t.op)
    if spec is not None:
        low, high = spec[1](t)
        return t.src[spec[0]], low, high
    if t.op == "argsort" and t.src[0].dtype == DType.I32:
        return t.src[0], -_F32_EXACT, _F32_EXACT + 1
    return None


def _plan_checks(
    graph: Sequence[Tensor], ptrs: dict[int, int]
) -> tuple[list[IdCheck], list[tuple[int, IdCheck]]]:
    """Return the host checks and the (consumer ggml tensor, check) pairs needing a split."""
    host: list[IdCheck] = []
    split: list[tuple[int, IdCheck]] = []
    written: set[int] | None = None
    for t in graph:
        if t.op not in _ID_OPS and t.op != "argsort":
            continue
        found = _checked_operand(t)
        if found is None:
            continue
        ids, low, high = found
        if written is None:
            written = {
                id(n.view_src)
                for n in graph
                if n.view_src is not None and n.op != LEAF and n.op not in VIEW_OPS
            }
        prov = _provenance(ids, written)
        if prov is not None and (prov[1] == 0 or (low <= 0 and prov[1] <= high)):
            host.extend(IdCheck(t.op, v, low, high, 0) for v in prov[0])
        else:
            split.append((ptrs[id(t)], IdCheck(t.op, ids, low, high, ptrs[id(ids)])))
    return host, split


def _split(lib: Lib, entry: Entry, size: int, split: list[tuple[int, IdCheck]]) -> None:
    """Cut the entry's graph before each consumer of unverified indices."""
    n = lib.ggml_graph_n_nodes(entry.graph)
    nodes = [lib.ggml_graph_node(entry.graph, i) for i in range(n)]
    where = {p: i for i, p in enumerate(nodes)}
    cuts: dict[int, list[IdCheck]] = {}
    for consumer, chk in split:
        cuts.setdefault(where[consumer], []).append(chk)
    bounds = sorted(cuts)
    mem = lib.ggml_graph_overhead_custom(size, False) * (len(bounds) + 1)
    seg_ctx = lib.ggml_init(_lib.GGMLInitParams(mem_size=mem, mem_buffer=None, no_alloc=True))
    if not seg_ctx:
        msg = "ggml: cannot allocate the split graphs"
        raise MemoryError(msg)
    entry.seg_ctx = seg_ctx
    segments: list[tuple[list[IdCheck], int]] = []
    starts = [0, *bounds]
    ends = [*bounds, n]
    for a, e in zip(starts, ends, strict=True):
        g = lib.ggml_new_graph_custom(seg_ctx, size, False)
        for i in range(a, e):
            lib.ggml_graph_add_node(g, nodes[i])
        segments.append((cuts.get(a, []), g))
    entry.segments = segments


def build(
    lib: Lib,
    graph: Sequence[Tensor],
    outputs: Sequence[Tensor],
    *,
    flash: bool,
    buft: int,
    backend: int,
    check_support: bool,
    owner: object,
    verify: bool = False,
    split: SplitPlan | None = None,
    place: int = -1,
) -> Entry:
    """Translate ``graph``, mark ``outputs``, plan index checks and allocate the graph.

    :param owner: the ``_shared`` record of the building context (to tell foreign leaves).
    :param check_support: ask the backend whether it runs every node (GPU devices).
    :param verify: compare every node's ggml layout with mlplug's (tests).
    :param split: run the graph over several devices with ggml's scheduler.
    :param place: the compute device's placement (the key of :attr:`Entry.sizes`).
    :raises NotSupportedError: the device cannot run a node, or a graph over several devices
        needs an index check between its parts.
    :raises MemoryError: the graph could not be allocated.
    """
    gctx, cgraph, b = _translate(lib, graph, flash)
    entry = Entry(lib, gctx, cgraph)
    try:
        ptrs = b.ptrs
        for t in graph:
            if t.op == LEAF:
                shared = t.ctx._shared
                if shared is not owner and all(f is not shared for f in entry.foreign):
                    entry.foreign.append(shared)
            elif verify:
                _check_layout(ptrs[id(t)], t)
        set_output = lib.ggml_set_output
        for o in outputs:
            ptr = ptrs[id(o)]
            if o.op != LEAF:
                _check_layout(ptr, o)
            base, offs = storage_of(ptr)
            set_output(ptr)
            if base != ptr:
                set_output(base)
            entry.handles.append((entry, base, offs))
        n_nodes = lib.ggml_graph_n_nodes(cgraph)
        if check_support:
            _check_support(lib, backend, cgraph, n_nodes)
        entry.host_checks, split_checks = _plan_checks(graph, ptrs)
        if n_nodes and split is not None:
            if split_checks:
                reason = "index operands computed inside a graph spread over devices"
                raise NotSupportedError(_BACKEND, split_checks[0][1].op, reason)
            entry.sched = _new_sched(lib, split, cgraph)
            if not lib.ggml_backend_sched_alloc_graph(entry.sched, cgraph):
                msg = "ggml: cannot allocate the compute buffers of the graph"
                raise MemoryError(msg)
            entry.sizes = {
                p: int(lib.ggml_backend_sched_get_buffer_size(entry.sched, b))
                for p, b in split.places
            }
            entry.nbytes = sum(entry.sizes.values())
        elif n_nodes:
            galloc = lib.ggml_gallocr_new(buft)
            if not galloc:
                msg = "ggml: cannot create a graph allocator"
                raise MemoryError(msg)
            entry.galloc = galloc
            if not lib.ggml_gallocr_alloc_graph(galloc, cgraph):
                msg = "ggml: cannot allocate the compute buffer of the graph"
                raise MemoryError(msg)
            entry.nbytes = int(lib.ggml_gallocr_get_buffer_size(galloc, 0))
            entry.sizes = {place: entry.nbytes}
            if split_checks:
                _split(lib, entry, lib.ggml_graph_size(cgraph), split_checks)
        else:
            entry.segments = []
    except BaseException:
        entry.free(snapshot=False)
        raise
    return entry


def _check_support(lib: Lib, backend: int, cgraph: int, n_nodes: int) -> None:
    for i in range(n_nodes):
        node = lib.ggml_graph_node(cgraph, i)
        desc = lib.ggml_op_desc(node) or b"?"
        if desc in _NO_COMPUTE:
            continue
        if not lib.ggml_backend_supports_op(backend, node):
            name = desc.decode(errors="replace")
            raise NotSupportedError(_BACKEND, name, "the compute device does not run it")


def measure(
    lib: Lib,
    graph: Sequence[Tensor],
    *,
    flash: bool,
    buft: int,
    leaves_without_data: bool,
    split: SplitPlan | None = None,
    place: int = -1,
) -> dict[int, int]:
    """Return the compute-buffer bytes ``graph`` needs per placement, without allocating or
    running it.

    :param leaves_without_data: leaves have no storage (a dry run): they are excluded from
        the measurement, as weights and caches live in their own buffers.
    :param split: measure the graph spread over devices by ggml's scheduler.
    :param place: the compute device's placement (the key of a one-device measurement).
    """
    gctx, cgraph, _ = _translate(lib, graph, flash)
    galloc = None
    sched = None
    patched: list[GGMLTensor] = []
    empty: dict[tuple[int, bool], int] = {}
    try:
        if leaves_without_data:
            dummy = 4096  # never dereferenced: planning only tests data for NULL
            for t in graph:
                if t.op == LEAF and t.handle:
                    s = GGMLTensor.at(t.handle)
                    if not s.data:
                        s.data = dummy
                        patched.append(s)
            for t, buft, weights in split.leaves if split is not None else ():
                if not t.handle:
                    continue
                s = GGMLTensor.at(t.handle)
                if not s.buffer:
                    key = (buft, weights)
                    if key not in empty:
                        # size 0: an empty buffer of the type, no memory (nor a server) touched
                        empty[key] = lib.ggml_backend_buft_alloc_buffer(buft, 0)
                        if weights:
                            usage = _lib.GGML_BACKEND_BUFFER_USAGE_WEIGHTS
                            lib.ggml_backend_buffer_set_usage(empty[key], usage)
                    s.buffer = empty[key]
        if not lib.ggml_graph_n_nodes(cgraph):
            return {place: 0}
        if split is not None:
            sched = _new_sched(lib, split, cgraph)
            n = len(split.places)
            per = (ctypes.c_size_t * n)()
            lib.ggml_backend_sched_reserve_size(sched, cgraph, per)
            return {p: int(per[i]) for i, (p, _) in enumerate(split.places)}
        galloc = lib.ggml_gallocr_new(buft)
        if not galloc:
            msg = "ggml_gallocr_new failed while measuring a graph"
            raise MemoryError(msg)
        sizes = (ctypes.c_size_t * 1)()
        lib.ggml_gallocr_reserve_n_size(galloc, cgraph, None, None, sizes)
        return {place: int(sizes[0])}
    finally:
        for s in patched:
            s.data = None
            s.buffer = None
        for buf in empty.values():
            lib.ggml_backend_buffer_free(buf)
        if galloc:
            lib.ggml_gallocr_free(galloc)
        if sched:
            lib.ggml_backend_sched_free(sched)
        lib.ggml_free(gctx)


def read_into(lib: Lib, base: int, offs: int, n: int) -> np.ndarray:
    """Copy ``n`` bytes at byte ``offs`` of ggml tensor ``base`` into a new ``uint8`` array."""
    out = np.empty(n, np.uint8)
    if n:
        lib.ggml_backend_tensor_get(base, out.ctypes.data, offs, n)
    return out


def gather(lib: Lib, base: int, offs: int, t: Tensor) -> bytes:
    """Read ``t``'s elements (ggml order, packed) from storage ``base`` at byte ``offs``.

    A contiguous tensor is one ``ggml_backend_tensor_get``; a strided view reads the span it
    covers and packs it with numpy.
    """
    n = t.nbytes
    if n == 0:
        return b""
    if t.is_contiguous():
        out = bytearray(n)
        buf = (ctypes.c_char * n).from_buffer(out)
        lib.ggml_backend_tensor_get(base, ctypes.addressof(buf), offs, n)
        return bytes(out)
    tr = TRAITS[t.dtype]
    units = (t.ne[0] // tr.block_size, t.ne[1], t.ne[2], t.ne[3])
    span = tr.type_size + sum((u - 1) * s for u, s in zip(units, t.nb, strict=True))
    raw = np.empty(span, np.uint8)
    lib.ggml_backend_tensor_get(base, raw.ctypes.data, offs, span)
    unit = np.dtype((np.void, tr.type_size))
    arr = np.ndarray(units[::-1], unit, buffer=raw, strides=t.nb[::-1])
    return np.ascontiguousarray(arr).tobytes()


def _check_group(raw: bytes, checks: list[IdCheck]) -> None:
    """Check ``raw`` (the values of one integer leaf) against each check on it."""
    dtype = _INDEX_NP.get(checks[0].ids.dtype)
    values = np.frombuffer(raw, dtype) if dtype is not None else None
    if values is not None and not values.size:
        return
    lo = hi = 0
    if values is not None:
        lo, hi = int(values.min()), int(values.max())
    for chk in checks:
        if values is None or lo < chk.low or hi >= chk.high:
            _check_values(raw, chk)  # raises, naming this check's op and the value


def _check_values(raw: bytes, chk: IdCheck) -> None:
    dtype = _INDEX_NP.get(chk.ids.dtype)
    if dtype is None:
        msg = f"{chk.op}: integer operand of dtype {chk.ids.dtype.name}"
        raise NotSupportedError(_BACKEND, chk.op, msg)
    values = np.frombuffer(raw, dtype)
    if not values.size:
        return
    bad = (values < chk.low) | (values >= chk.high)
    if not bad.any():
        return
    value = int(values[bad][0])
    if chk.op == "argsort":
        reason = f"I32 key {value} beyond +-2**24 (ggml sorts them as F32)"
        raise NotSupportedError(_BACKEND, chk.op, reason)
    msg = f"{chk.op}: index {value} out of range {chk.low}..{chk.high - 1}"
    raise OutOfRangeError(msg)
