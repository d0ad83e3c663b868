"""A thin Pythonic layer over the raw ggml calls: backends, contexts, buffers, graphs.

Each wrapper owns one C object and frees it in ``free()`` (alias ``close()``, also on leaving a
``with`` block). ``free()`` is idempotent: the pointer is set to ``None`` on the first call.
Nothing is freed implicitly by the garbage collector; the owner decides the order (free
graph allocators and buffers before the backend that made them is the safe order).

The checks here exist to turn what would be a process abort inside ggml (``GGML_ASSERT``) into a
Python exception: out-of-range tensor writes, unallocated tensors, a full context.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import numpy as np
from mlplug.plugin_api import BackendLoadError

from . import _lib
from .device import GGMLDevice, cpu_device, load_backends

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from numpy.typing import ArrayLike, DTypeLike, NDArray

    from ._lib import Lib

__all__ = [
    "Backend",
    "Buffer",
    "Context",
    "Graph",
    "GraphAllocator",
    "cpu_backend",
    "get_array",
    "get_data",
    "nbytes",
    "set_data",
    "shape",
    "strides",
    "tensor_name",
    "tensor_type",
]


class _Owner:
    """Common ``free``/``close``/context-manager plumbing for one C object."""

    _what = "ggml object"
    ptr: int | None

    def _require(self) -> int:
        if self.ptr is None:
            msg = f"{self._what} is already freed"
            raise ValueError(msg)
        return self.ptr

    def _release(self, ptr: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def free(self) -> None:
        """Free the C object; a second call does nothing."""
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._release(ptr)

    def close(self) -> None:
        """Same as :meth:`free`."""
        self.free()

    def __enter__(self) -> _Owner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.free()


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


class Backend(_Owner):
    """A ggml backend (``ggml_backend_t``, a stream) on one device."""

    _what = "ggml backend"

    def __init__(
        self, device: GGMLDevice | int, *, n_threads: int | None = None, params: str | None = None
    ) -> None:
        """Initialise a backend with ``ggml_backend_dev_init``.

        :param device: a :class:`GGMLDevice` or a raw ``ggml_backend_dev_t``.
        :param n_threads: CPU threads, when the backend takes a thread count.
        :param params: backend-specific init string (usually None).
        :raises BackendLoadError: ggml could not create the backend.
        """
        self._lib: Lib = load_backends()
        lib = self._lib
        self.dev = device.dev if isinstance(device, GGMLDevice) else int(device)
        self.device_type = int(lib.ggml_backend_dev_type(self.dev))
        ptr = lib.ggml_backend_dev_init(self.dev, params.encode() if params else None)
        if not ptr:
            dev_name = (lib.ggml_backend_dev_name(self.dev) or b"?").decode(errors="replace")
            msg = f"ggml: cannot initialise a backend on device {dev_name}"
            raise BackendLoadError(msg, backend=_lib.BACKEND)
        self.ptr = ptr
        self.name: str = (lib.ggml_backend_name(ptr) or b"").decode(errors="replace")
        self._set_n_threads = self._find_set_n_threads()
        self.n_threads: int | None = None
        if n_threads is not None:
            self.set_n_threads(n_threads)

    def _find_set_n_threads(self) -> Callable[[int, int], object] | None:
        lib = self._lib
        reg = lib.ggml_backend_dev_backend_reg(self.dev)
        if reg:
            addr = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_set_n_threads")
            if addr:
                fn: Callable[[int, int], object] = _lib.SetNThreadsFn(addr)
                return fn
        if self.device_type == _lib.GGML_BACKEND_DEVICE_TYPE_CPU and lib.has(
            "ggml_backend_cpu_set_n_threads"
        ):
            direct: Callable[[int, int], object] = lib.ggml_backend_cpu_set_n_threads
            return direct
        return None

    @property
    def supports_threads(self) -> bool:
        """Whether this backend takes a thread count."""
        return self._set_n_threads is not None

    def set_n_threads(self, n: int) -> bool:
        """Set the number of compute threads.

        :param n: threads, at least 1.
        :returns: False when the backend has no thread setting (GPU backends).
        :raises ValueError: ``n < 1``.
        """
        if n < 1:
            msg = f"ggml: thread count must be >= 1, got {n}"
            raise ValueError(msg)
        ptr = self._require()
        if self._set_n_threads is None:
            return False
        self._set_n_threads(ptr, int(n))
        self.n_threads = int(n)
        return True

    @property
    def buffer_type(self) -> int:
        """The backend's default ``ggml_backend_buffer_type_t``."""
        buft: int = self._lib.ggml_backend_get_default_buffer_type(self._require())
        return buft

    def compute(self, graph: Graph | int) -> None:
        """Run an allocated graph to completion (``ggml_backend_graph_compute``).

        :raises RuntimeError: ggml returned a non-success status.
        """
        gptr = graph._require() if isinstance(graph, Graph) else int(graph)
        status = self._lib.ggml_backend_graph_compute(self._require(), gptr)
        if status != _lib.GGML_STATUS_SUCCESS:
            text = (self._lib.ggml_status_to_string(status) or b"").decode(errors="replace")
            msg = f"error computing ggml graph: {text or status}"
            raise RuntimeError(msg)

    def synchronize(self) -> None:
        """Wait for queued work on this backend."""
        self._lib.ggml_backend_synchronize(self._require())

    def _release(self, ptr: int) -> None:
        self._lib.ggml_backend_free(ptr)

    def __enter__(self) -> Backend:
        return self


def cpu_backend(n_threads: int | None = None) -> Backend:
    """Create a backend on the first CPU device.

    :param n_threads: compute threads (None keeps ggml's default).
    """
    return Backend(cpu_device(), n_threads=n_threads)


# --------------------------------------------------------------------------------------------
# Contexts, graphs, buffers
# --------------------------------------------------------------------------------------------


class Context(_Owner):
    """A no-alloc ggml context: tensor and graph metadata only; data lives in backend buffers."""

    _what = "ggml context"

    def __init__(self, n_tensors: int, graph_size: int = 0) -> None:
        """Create the context with room for ``n_tensors`` tensors and one graph of ``graph_size``.

        Memory is ``ggml_tensor_overhead() * n_tensors + ggml_graph_overhead_custom(graph_size)``.

        :raises ValueError: negative sizes.
        :raises MemoryError: ggml could not allocate the metadata pool.
        """
        if n_tensors < 0 or graph_size < 0:
            msg = f"ggml: context sizes must be >= 0, got {n_tensors} tensors, graph {graph_size}"
            raise ValueError(msg)
        self._lib: Lib = _lib.load()
        lib = self._lib
        self.tensor_overhead: int = lib.ggml_tensor_overhead()
        mem = self.tensor_overhead * n_tensors
        if graph_size:
            mem += lib.ggml_graph_overhead_custom(graph_size, False)
        params = _lib.GGMLInitParams(mem_size=max(mem, 1), mem_buffer=None, no_alloc=True)
        ptr = lib.ggml_init(params)
        if not ptr:
            msg = f"ggml: cannot allocate a context of {mem} bytes"
            raise MemoryError(msg)
        self.ptr = ptr

    @property
    def free_bytes(self) -> int:
        """Metadata bytes still available in the pool."""
        ptr = self._require()
        free: int = self._lib.ggml_get_mem_size(ptr) - self._lib.ggml_used_mem(ptr)
        return free

    def ensure_room(self, n_tensors: int = 1, extra_bytes: int = 0) -> None:
        """Raise instead of letting ggml abort when the pool cannot take ``n_tensors`` more.

        Call before any ggml function that creates tensors in this context (ops create one).

        :raises MemoryError: the pool is too small.
        """
        need = n_tensors * self.tensor_overhead + extra_bytes
        have = self.free_bytes
        if need > have:
            msg = f"ggml context is full: need {need} bytes of metadata, {have} left"
            raise MemoryError(msg)

    def new_tensor(self, ggml_type: int, shape: Sequence[int], name: str | None = None) -> int:
        """Create an unallocated tensor of a ggml type and ggml-order shape (dim 0 fastest).

        :raises ValueError: bad type, 0 or more than 4 dims, a negative dim, or a first dim that
            is not a multiple of the type's block size.
        :raises MemoryError: the context is full.
        """
        lib = self._lib
        ctx = self._require()
        n = len(shape)
        if not 1 <= n <= _lib.GGML_MAX_DIMS:
            msg = f"ggml: tensors have 1 to {_lib.GGML_MAX_DIMS} dims, got shape {tuple(shape)}"
            raise ValueError(msg)
        if any(d < 0 for d in shape):
            msg = f"ggml: negative dimension in shape {tuple(shape)}"
            raise ValueError(msg)
        if not 0 <= ggml_type < _lib.GGML_TYPE_COUNT or lib.ggml_blck_size(ggml_type) <= 0:
            msg = f"ggml: unknown tensor type id {ggml_type}"
            raise ValueError(msg)
        blck = lib.ggml_blck_size(ggml_type)
        if shape[0] % blck:
            tname = lib.ggml_type_name(ggml_type).decode()
            msg = f"ggml: dim 0 of a {tname} tensor must be a multiple of {blck}, got {shape[0]}"
            raise ValueError(msg)
        self.ensure_room(1)
        ne = (ctypes.c_int64 * _lib.GGML_MAX_DIMS)(*shape)
        t: int = lib.ggml_new_tensor(ctx, ggml_type, n, ne)
        if name is not None:
            lib.ggml_set_name(t, name.encode())
        return t

    def new_graph(self, size: int = _lib.GGML_DEFAULT_GRAPH_SIZE) -> Graph:
        """Create an empty graph of ``size`` nodes in this context's pool.

        :raises MemoryError: the context has no room for it.
        """
        ctx = self._require()
        if size < 1:
            msg = f"ggml: graph size must be >= 1, got {size}"
            raise ValueError(msg)
        self.ensure_room(0, self._lib.ggml_graph_overhead_custom(size, False))
        return Graph(self._lib.ggml_new_graph_custom(ctx, size, False), self, size)

    def alloc_tensors(self, target: Backend | int) -> Buffer:
        """Allocate every not-yet-allocated tensor of this context in one backend buffer.

        :param target: a backend (its default buffer type) or a ``ggml_backend_buffer_type_t``.
        :returns: the buffer; an empty one (``ptr is None``) when there was nothing to allocate.
        :raises MemoryError: the allocation failed.
        """
        ctx = self._require()
        buft = target.buffer_type if isinstance(target, Backend) else int(target)
        size = self._lib.ggml_backend_alloc_ctx_tensors_from_buft_size(ctx, buft)
        if size == 0:
            return Buffer(None, self._lib)
        ptr = self._lib.ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft)
        if not ptr:
            bname = (self._lib.ggml_backend_buft_name(buft) or b"?").decode(errors="replace")
            msg = f"ggml: failed to allocate {size} bytes in buffer type {bname}"
            raise MemoryError(msg)
        return Buffer(ptr, self._lib)

    def _release(self, ptr: int) -> None:
        self._lib.ggml_free(ptr)

    def __enter__(self) -> Context:
        return self


class Graph:
    """A ``ggml_cgraph`` living in a context's pool (freed with the context, not separately)."""

    def __init__(self, ptr: int, context: Context, size: int) -> None:
        self.ptr = ptr
        self.context = context
        self.size = size

    def _require(self) -> int:
        if self.context.ptr is None:
            msg = "ggml graph's context is already freed"
            raise ValueError(msg)
        return self.ptr

    def expand(self, tensor: int) -> Graph:
        """Add ``tensor`` and everything it depends on (``ggml_build_forward_expand``).

        ggml aborts when the graph overflows: size the graph for all nodes and leaves.

        :raises ValueError: the graph is already full.
        """
        g = self._require()
        lib = self.context._lib
        if lib.ggml_graph_n_nodes(g) >= self.size:
            msg = f"ggml graph is full ({self.size} nodes)"
            raise ValueError(msg)
        lib.ggml_build_forward_expand(g, tensor)
        return self

    @property
    def n_nodes(self) -> int:
        """Number of compute nodes added so far."""
        n: int = self.context._lib.ggml_graph_n_nodes(self._require())
        return n


class Buffer(_Owner):
    """A ``ggml_backend_buffer_t`` (``ptr is None`` for an empty allocation)."""

    _what = "ggml buffer"

    def __init__(self, ptr: int | None, lib: Lib | None = None) -> None:
        self._lib: Lib = lib or _lib.load()
        self.ptr = ptr

    @property
    def size(self) -> int:
        """Bytes allocated (0 for an empty or freed buffer)."""
        if not self.ptr:
            return 0
        size: int = self._lib.ggml_backend_buffer_get_size(self.ptr)
        return size

    @property
    def name(self) -> str:
        """ggml's name for the buffer (e.g. ``"CPU"``)."""
        if not self.ptr:
            return ""
        return (self._lib.ggml_backend_buffer_name(self.ptr) or b"").decode(errors="replace")

    def clear(self, value: int = 0) -> None:
        """Fill the whole buffer with one byte value."""
        if self.ptr:
            self._lib.ggml_backend_buffer_clear(self.ptr, value & 0xFF)

    def set_usage(self, usage: int) -> None:
        """Mark the buffer as weights/compute (``GGML_BACKEND_BUFFER_USAGE_*``) for schedulers."""
        if self.ptr:
            self._lib.ggml_backend_buffer_set_usage(self.ptr, usage)

    def _release(self, ptr: int) -> None:
        self._lib.ggml_backend_buffer_free(ptr)

    def __enter__(self) -> Buffer:
        return self


class GraphAllocator(_Owner):
    """A ``ggml_gallocr_t``: allocates graph nodes (and unallocated leaves) in one buffer type."""

    _what = "ggml graph allocator"

    def __init__(self, target: Backend | int) -> None:
        """Create it for a backend's default buffer type or a raw buffer type.

        :raises MemoryError: ggml could not create it.
        """
        self._lib: Lib = _lib.load()
        buft = target.buffer_type if isinstance(target, Backend) else int(target)
        ptr = self._lib.ggml_gallocr_new(buft)
        if not ptr:
            msg = "ggml: cannot create a graph allocator"
            raise MemoryError(msg)
        self.ptr = ptr

    def reserve(self, graph: Graph) -> None:
        """Size the buffer for a worst-case graph without allocating the graph.

        :raises MemoryError: the buffer could not be allocated.
        """
        if not self._lib.ggml_gallocr_reserve(self._require(), graph._require()):
            msg = f"ggml: graph reservation failed ({self.buffer_size()} bytes attempted)"
            raise MemoryError(msg)

    def alloc(self, graph: Graph) -> None:
        """Allocate the graph's tensors (re-sizing the buffer when the topology grew).

        :raises MemoryError: the allocation failed.
        """
        if not self._lib.ggml_gallocr_alloc_graph(self._require(), graph._require()):
            msg = "ggml: graph allocation failed"
            raise MemoryError(msg)

    def buffer_size(self, buffer_id: int = 0) -> int:
        """Bytes of the allocator's buffer ``buffer_id``."""
        size: int = self._lib.ggml_gallocr_get_buffer_size(self._require(), buffer_id)
        return size

    def _release(self, ptr: int) -> None:
        self._lib.ggml_gallocr_free(ptr)

    def __enter__(self) -> GraphAllocator:
        return self


# --------------------------------------------------------------------------------------------
# Tensor fields and data
# --------------------------------------------------------------------------------------------


def shape(t: int) -> tuple[int, int, int, int]:
    """``ne``: the four ggml dims of a tensor, dim 0 fastest."""
    ne = _lib.GGMLTensor.at(t).ne
    return (ne[0], ne[1], ne[2], ne[3])


def strides(t: int) -> tuple[int, int, int, int]:
    """``nb``: the four byte strides of a tensor."""
    nb = _lib.GGMLTensor.at(t).nb
    return (nb[0], nb[1], nb[2], nb[3])


def tensor_type(t: int) -> int:
    """The tensor's ggml type id."""
    return int(_lib.GGMLTensor.at(t).type)


def tensor_name(t: int) -> str:
    """The tensor's name (``""`` when unnamed)."""
    raw: bytes = _lib.GGMLTensor.at(t).name
    return raw.decode(errors="replace")


def nbytes(t: int) -> int:
    """Bytes of the tensor's data (``ggml_nbytes``)."""
    n: int = _lib.load().ggml_nbytes(t)
    return n


def _check_io(t: int, offset: int, size: int, what: str) -> int:
    """Validate a tensor read/write the way ggml asserts it; return the tensor's byte size."""
    s = _lib.GGMLTensor.at(t)
    buf = _lib.GGMLTensor.at(s.view_src).buffer if s.view_src else s.buffer
    total: int = _lib.load().ggml_nbytes(t)
    if size == 0:
        return total
    if not buf or not s.data:
        name = s.name.decode(errors="replace")
        msg = f"ggml: cannot {what} tensor {name!r}: it is not allocated in a backend buffer"
        raise ValueError(msg)
    if offset < 0 or offset + size > total:
        msg = f"ggml: {what} of {size} bytes at offset {offset} exceeds the tensor's {total} bytes"
        raise ValueError(msg)
    return total


def set_data(t: int, data: ArrayLike | bytes | bytearray | memoryview, offset: int = 0) -> None:
    """Copy bytes into an allocated tensor (``ggml_backend_tensor_set``).

    :param data: bytes-like, or a numpy array whose raw bytes are copied (made contiguous).
    :param offset: byte offset into the tensor.
    :raises ValueError: the tensor has no buffer or the write is out of bounds.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(data, dtype=np.uint8)
    else:
        arr = np.ascontiguousarray(data)
    size = int(arr.nbytes)
    _check_io(t, offset, size, "write")
    if size:
        _lib.load().ggml_backend_tensor_set(t, arr.ctypes.data, offset, size)


def get_data(t: int, offset: int = 0, size: int | None = None) -> bytes:
    """Copy a tensor's bytes out (``ggml_backend_tensor_get``).

    :param size: bytes to read; None reads from ``offset`` to the end.
    :raises ValueError: the tensor has no buffer or the read is out of bounds.
    """
    total = nbytes(t)
    n = total - offset if size is None else size
    _check_io(t, offset, n, "read")
    out = bytearray(n)
    if n:
        c_buf = (ctypes.c_char * n).from_buffer(out)
        _lib.load().ggml_backend_tensor_get(t, ctypes.addressof(c_buf), offset, n)
    return bytes(out)


def get_array(t: int, dtype: DTypeLike = np.float32) -> NDArray[Any]:
    """Copy a tensor's data into a new 1-D numpy array of ``dtype`` in ggml element order.

    :raises ValueError: the tensor has no buffer, or its size is not a multiple of ``dtype``.
    """
    np_dtype = np.dtype(dtype)
    total = nbytes(t)
    if total % np_dtype.itemsize:
        msg = f"ggml: tensor of {total} bytes is not a whole number of {np_dtype} items"
        raise ValueError(msg)
    out = np.empty(total // np_dtype.itemsize, dtype=np_dtype)
    _check_io(t, 0, total, "read")
    if total:
        _lib.load().ggml_backend_tensor_get(t, out.ctypes.data, 0, total)
    return out
