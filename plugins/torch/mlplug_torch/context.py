"""TorchContext: tensors as strided torch views of flat ``uint8`` buffers on one device.

A root tensor's storage is a flat ``torch.uint8`` tensor; every tensor (root, view, permute,
in-place result) is ``storage.view(dtype).as_strided(...)`` with element strides = byte
strides / element size and storage offset = byte offset / element size. Block-quantised
tensors are viewed as ``uint8`` blocks ``(ne3, ne2, ne1, ne0 / block, bytes_per_block)``.

Kernels read their sources with :meth:`TorchContext.arr` (storage units) or
:meth:`TorchContext.values` (float32) and write results only through :meth:`put`,
:meth:`put_raw`, :meth:`put_window` and :meth:`index_write`. That indirection lets the same
kernels run eagerly (writing storage) or functionally (recording values while a graph is
traced for ``torch.compile``, see :mod:`mlplug_torch.compile`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from mlplug.plugin_api import (
    LEAF,
    TRAITS,
    VIEW_OPS,
    ArrayContext,
    DType,
    GraphError,
    OutOfRangeError,
)

from . import quant

if TYPE_CHECKING:
    from mlplug import Tensor

    from .backend import TorchBackend

__all__ = ["TORCH_DTYPES", "TorchContext", "storage_dtype"]

#: torch dtype of each element type (block-quantised types are held as uint8 blocks).
TORCH_DTYPES: dict[DType, torch.dtype] = {
    DType.F32: torch.float32,
    DType.F16: torch.float16,
    DType.BF16: torch.bfloat16,
    DType.F64: torch.float64,
    DType.I8: torch.int8,
    DType.I16: torch.int16,
    DType.I32: torch.int32,
    DType.I64: torch.int64,
}

Geometry = tuple[tuple[int, ...], tuple[int, ...], int]

_OOM: type[BaseException] = getattr(torch, "OutOfMemoryError", MemoryError)


def storage_dtype(d: DType) -> torch.dtype:
    """The torch dtype of one storage unit of ``d`` (uint8 for block-quantised types)."""
    return torch.uint8 if d.is_quantized else TORCH_DTYPES[d]


def _shape(t: Tensor) -> tuple[int, ...]:
    """The storage-unit shape of ``t``: ``(ne3, ne2, ne1, ne0)`` (+ block bytes if quantised)."""
    ne = t.ne
    tr = TRAITS[t.dtype]
    if tr.block_size > 1:
        return (ne[3], ne[2], ne[1], ne[0] // tr.block_size, tr.type_size)
    return (ne[3], ne[2], ne[1], ne[0])


def geometry(t: Tensor) -> Geometry:
    """Return ``(size, stride, offset)`` of ``t`` in storage units of its dtype."""
    ne, nb = t.ne, t.nb
    tr = TRAITS[t.dtype]
    if tr.block_size > 1:
        size = (ne[3], ne[2], ne[1], ne[0] // tr.block_size, tr.type_size)
        return size, (nb[3], nb[2], nb[1], nb[0], 1), t.view_offs
    es = tr.type_size
    stride = (nb[3] // es, nb[2] // es, nb[1] // es, nb[0] // es)
    return (ne[3], ne[2], ne[1], ne[0]), stride, t.view_offs // es


def _check_range(lo: int, hi: int, n: int, op: str) -> None:
    """Raise OutOfRangeError naming the first of ``lo``, ``hi`` outside ``[0, n)``."""
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        msg = f"{op}: index {bad} out of range 0..{n - 1}"
        raise OutOfRangeError(msg)


class TorchContext(ArrayContext):
    """Context of the torch backend: storage on :attr:`device`, kernels from the backend."""

    backend: TorchBackend

    def __init__(self, backend: TorchBackend, max_nodes: int) -> None:
        super().__init__(backend, max_nodes)
        #: The device every tensor of this context lives on.
        self.device: torch.device = backend.device
        #: Accumulator dtype for row sums (float64 except on MPS, which has none).
        self.acc_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        #: While tracing for torch.compile: root id -> current flat value (functional mode).
        self.env: dict[int, torch.Tensor] | None = None
        self._wanted: tuple[Tensor, ...] = ()
        #: The graph list computed last, and its length then: computed again, it is planned.
        self._seen: Sequence[Tensor] | None = None
        self._seen_nodes = 0

    # -- storage hooks ----------------------------------------------------------------------
    def new_storage(self, nbytes: int, zero: bool) -> torch.Tensor:
        """Return a flat uint8 buffer of ``nbytes`` on the device.

        :raises MemoryError: if the device cannot hold it (the core reports ErrNoMem).
        """
        make = torch.zeros if zero else torch.empty
        try:
            return make(nbytes, dtype=torch.uint8, device=self.device)
        except RuntimeError as exc:  # torch.OutOfMemoryError, or the CPU allocator's error
            if isinstance(exc, _OOM) or "allocate" in str(exc):
                msg = f"torch: cannot allocate {nbytes} bytes on {self.device}: {exc}"
                raise MemoryError(msg) from exc
            raise

    def store(self, storage: torch.Tensor, data: bytes) -> None:
        """Copy raw bytes into the whole of ``storage``."""
        if not data:
            return
        with warnings.catch_warnings():
            # frombuffer warns about read-only buffers; the tensor is only read here.
            warnings.simplefilter("ignore", UserWarning)
            src = torch.frombuffer(data, dtype=torch.uint8)
        storage.copy_(src)

    def read_bytes(self, t: Tensor) -> bytes:
        """Return ``t``'s data packed in ggml order."""
        a = self.arr(t).contiguous().reshape(-1)
        return bytes(a.view(torch.uint8).cpu().numpy().tobytes())

    # -- graph execution --------------------------------------------------------------------
    def compute_with_notify(self, cb: Callable[[], None] | None, *tensors: Tensor) -> None:
        """Run the graph (see :meth:`mlplug.Context.compute_with_notify`)."""
        self._wanted = tensors
        try:
            super().compute_with_notify(cb, *tensors)
        finally:
            self._wanted = ()

    def _execute(self, graph: Sequence[Tensor]) -> None:
        """Run the graph: compiled (``compile``), else eagerly. A graph computed again (a
        decode step's, reused) runs its planned steps (:meth:`planned_steps`): every node's
        storage exists after the first compute, so the :attr:`preparers` bind their views once."""
        compiler = self.backend.compiler
        again = compiler is None and self._seen is graph and self._seen_nodes == len(graph)
        steps = self.planned_steps(graph) if again else None
        self.memo = {}
        try:
            if steps is not None:
                for step in steps:
                    step()
            elif compiler is None:
                # the first compute adopts fresh results as storage (no copies), then plans
                self.run_eager(graph)
                self._seen, self._seen_nodes = graph, len(graph)
            elif not compiler.run(self, graph, self._wanted):
                self.run_eager(graph)
        finally:
            self.memo = {}

    def run_eager(self, graph: Sequence[Tensor]) -> None:
        """Run every op node of ``graph`` in order, writing storage."""
        kernels = self.backend.kernels
        for t in graph:
            op = t.op
            if op == LEAF or op in VIEW_OPS:
                continue
            for s in t.src:
                r = s.root
                if r.data is None and r.nelements and r.op == LEAF:
                    msg = f"{op}: operand {s!r} has no data (was its context closed?)"
                    raise GraphError(msg)
            kernels[op](self, t)

    # -- reading ------------------------------------------------------------------------------
    @property
    def tracing(self) -> bool:
        """Whether kernels run functionally (while a graph is traced for torch.compile)."""
        return self.env is not None

    def _flat(self, root: Tensor, want: torch.dtype) -> torch.Tensor:
        """Return the root's storage as a flat tensor of dtype ``want``."""
        env = self.env
        if env is not None:
            flat = env[id(root)]
            if flat.dtype == want:
                return flat
            data = flat.view(torch.uint8)
        else:
            data = root.data
            if data is None:
                data = root.data = self.new_storage(root.nbytes, False)
            if want == torch.uint8:
                return data
        size = want.itemsize
        n = data.numel()
        if n % size:
            data = data[: n - n % size]
        return data.view(want)

    def arr(self, t: Tensor) -> torch.Tensor:
        """Return ``t`` as a strided tensor of storage units (see :func:`geometry`)."""
        if self.env is None:
            h = t.handle
            if h is not None:
                return h  # type: ignore[no-any-return]
        flat = self._flat(t.root, storage_dtype(t.dtype))
        size, stride, offs = geometry(t)
        a = flat.as_strided(size, stride, offs + flat.storage_offset())
        if self.env is None:
            t.handle = a
        return a

    def values(self, t: Tensor) -> torch.Tensor:
        """Return ``t``'s values as float32 ``(ne3, ne2, ne1, ne0)`` (a view for F32)."""
        a = self.arr(t)
        d = t.dtype
        if d == DType.F32:
            return a
        if d.is_quantized:
            return quant.dequantize(a, d)
        return a.float()

    def scalar(self, v: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Return a 0-d tensor on the device."""
        return torch.tensor(v, dtype=dtype, device=self.device)

    def indices(self, t: Tensor, n: int, op: str) -> torch.Tensor:
        """Return index tensor ``t`` as int64 ``(ne3, ne2, ne1, ne0)``, checked to be in ``[0, n)``.

        :raises OutOfRangeError: for an index outside the range (eagerly; while tracing the
            check runs asynchronously on the device).
        """
        idx = self.arr(t).long()
        if idx.numel() == 0:
            return idx
        if self.env is not None:
            torch._assert_async(((idx >= 0) & (idx < n)).all())
            return idx
        lo, hi = (int(v) for v in torch.aminmax(idx))
        _check_range(lo, hi, n, op)
        return idx

    def index(self, t: Tensor, n: int, op: str) -> int:
        """Return the one index of a one-element index tensor ``t`` as an int in ``[0, n)``
        (eagerly; a decode step's single row, without index tensors).

        :raises OutOfRangeError: for an index outside the range.
        """
        return self.index_reader(t, n, op)()

    def index_reader(self, t: Tensor, n: int, op: str) -> Callable[[], int]:
        """A function returning the one index of one-element index tensor ``t``, checked as
        :meth:`index` checks it, bound to ``t``'s storage (a planned step's cache write)."""
        flat = self.arr(t).reshape(-1)
        host = flat.numpy() if flat.device.type == "cpu" else None

        def read() -> int:
            i = int(host[0] if host is not None else flat[0])
            _check_range(i, i, n, op)
            return i

        return read

    # -- writing ------------------------------------------------------------------------------
    def put(self, t: Tensor, v: torch.Tensor) -> None:
        """Write float values ``v`` (broadcastable to ``t``) into ``t``, converting to its dtype.

        F16/BF16 round to nearest even; integer types truncate toward zero; quantised types
        are quantised per block. A fresh result tensor may be adopted as ``t``'s storage, so
        ``v`` must not be a cached tensor that is written later.
        """
        d = t.dtype
        if d.is_quantized:
            ne = t.ne
            v = quant.quantize(v.expand(ne[3], ne[2], ne[1], ne[0]), d)
        else:
            want = TORCH_DTYPES[d]
            if v.dtype != want:
                v = v.to(want)
        self.put_raw(t, v)

    def put_raw(self, t: Tensor, v: torch.Tensor) -> None:
        """Write ``v`` (storage units of ``t``'s dtype, broadcastable) into ``t`` unconverted."""
        if self.env is not None:
            self._put_functional(t, v, *geometry(t))
            return
        if t.view_src is None and t.data is None:
            if self._adoptable(t, v):
                t.data = v.reshape(-1).view(torch.uint8)
                t.handle = v if v.dim() == 4 or t.dtype.is_quantized else None
                return
            t.data = self.new_storage(t.nbytes, False)
        self.arr(t).copy_(v)

    def put_window(
        self, t: Tensor, v: torch.Tensor, size: tuple[int, ...], stride: tuple[int, ...], offs: int
    ) -> None:
        """Write ``v`` into a strided window (storage units) of ``t``'s root storage."""
        if self.env is not None:
            self._put_functional(t, v, size, stride, offs)
            return
        flat = self._flat(t.root, storage_dtype(t.dtype))
        flat.as_strided(size, stride, offs + flat.storage_offset()).copy_(v)

    def index_write(self, t: Tensor, index: tuple[torch.Tensor, ...], v: torch.Tensor) -> None:
        """Write ``v`` into ``t[index]`` (advanced indexing of :meth:`arr`), in place."""
        if self.env is not None:
            self.put_raw(t, self.arr(t).index_put(index, v))
            return
        self.arr(t).index_put_(index, v)

    def _put_functional(
        self, t: Tensor, v: torch.Tensor, size: tuple[int, ...], stride: tuple[int, ...], offs: int
    ) -> None:
        env = self.env
        assert env is not None
        want = storage_dtype(t.dtype)
        if t.view_src is None and size == _shape(t) and offs == 0:
            env[id(t)] = v.expand(size).contiguous().reshape(-1)
            return
        root = t.root
        flat = env.get(id(root))
        if flat is None:  # a fresh root written through a window before anything else
            flat = torch.zeros(root.nbytes // want.itemsize, dtype=want, device=self.device)
        if flat.dtype != want:
            msg = f"{t.op}: writing {t.dtype.name} into a {root.dtype.name} buffer while tracing"
            raise GraphError(msg)
        env[id(root)] = flat.as_strided_scatter(v.expand(size).to(want), size, stride, offs)

    def _adoptable(self, t: Tensor, v: torch.Tensor) -> bool:
        """Whether ``v`` can become ``t``'s storage without a copy: a fresh exact-size result.

        ``v`` qualifies when it is contiguous with ``t``'s shape, dtype and device, starts its
        storage, the storage has exactly ``t``'s size, and no source's storage is it.
        """
        if (
            v.shape != _shape(t)
            or v.dtype != storage_dtype(t.dtype)
            or not v.is_contiguous()
            or v.storage_offset() != 0
            or v.untyped_storage().nbytes() != t.nbytes
            or v.device != self.device
        ):
            return False
        ptr = v.data_ptr()
        for s in t.src:
            data = s.root.data
            if data is not None and data.data_ptr() - data.storage_offset() == ptr:
                return False
        return True
