"""Storage of constructor-made tensors (leaves): metadata pools and backend buffer chunks.

A context's leaves need their own storage, outside the graph allocator (which recycles memory
between computes): inputs, KV caches and weights must keep their bytes until the context is
closed. The arena places small tensors in shared chunk buffers (bump allocation at the buffer
type's alignment, chunks growing geometrically) and gives large ones a buffer of their own, so
a context with many tiny inputs costs a few allocations and closing it frees everything.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Final

from . import _lib

if TYPE_CHECKING:
    from ._lib import Lib

__all__ = ["LeafArena"]

#: First chunk buffer; later chunks double up to :data:`_MAX_CHUNK`.
_FIRST_CHUNK: Final = 64 * 1024
_MAX_CHUNK: Final = 16 * 1024 * 1024
#: Tensors at least this large (bytes) get a buffer of their own.
_DEDICATED: Final = 1024 * 1024
#: Tensor slots of the first metadata pool; later pools double up to :data:`_MAX_SLOTS`.
_FIRST_SLOTS: Final = 64
_MAX_SLOTS: Final = 4096


class LeafArena:
    """Metadata (no-alloc ggml contexts) and storage (backend buffers) for leaf tensors."""

    def __init__(
        self, lib: Lib, buft: int, usage: int = _lib.GGML_BACKEND_BUFFER_USAGE_ANY
    ) -> None:
        """Create an empty arena allocating in buffer type ``buft``.

        :param usage: the ``ggml_backend_buffer_usage`` of its buffers (``WEIGHTS`` makes
            ggml's scheduler run the ops reading them on their device).
        """
        self._lib = lib
        self._buft = buft
        self._usage = usage
        self._align = max(1, int(lib.ggml_backend_buft_get_alignment(buft)))
        self._max_size = int(lib.ggml_backend_buft_get_max_size(buft))
        self._overhead = int(lib.ggml_tensor_overhead())
        self._metas: list[int] = []
        self._slots_left = 0
        self._next_slots = _FIRST_SLOTS
        self._buffers: list[int] = []
        self._chunk: int | None = None
        self._chunk_base = 0
        self._chunk_size = 0
        self._chunk_used = 0
        self._next_chunk = _FIRST_CHUNK
        #: Bytes of backend memory this arena holds.
        self.nbytes = 0

    def new_tensor(self, ggml_type: int, ne: tuple[int, int, int, int]) -> int:
        """Create the metadata of a 4-D tensor (no storage yet); return its address.

        :raises MemoryError: the metadata pool could not be allocated.
        """
        lib = self._lib
        if self._slots_left == 0:
            slots = self._next_slots
            params = _lib.GGMLInitParams(
                mem_size=slots * self._overhead, mem_buffer=None, no_alloc=True
            )
            meta = lib.ggml_init(params)
            if not meta:
                msg = f"ggml: cannot allocate metadata for {slots} tensors"
                raise MemoryError(msg)
            self._metas.append(meta)
            self._slots_left = slots
            self._next_slots = min(2 * slots, _MAX_SLOTS)
        self._slots_left -= 1
        dims = (ctypes.c_int64 * 4)(*ne)
        ptr: int = lib.ggml_new_tensor(self._metas[-1], ggml_type, 4, dims)
        return ptr

    def allocate(self, t: int) -> None:
        """Give tensor ``t`` (made by :meth:`new_tensor`) backend storage.

        :raises MemoryError: the backend could not allocate a buffer, or the tensor exceeds
            the buffer type's maximum size.
        """
        lib = self._lib
        size = int(lib.ggml_backend_buft_get_alloc_size(self._buft, t))
        if size > self._max_size:
            msg = (
                f"ggml: a tensor of {size} bytes exceeds the largest buffer "
                f"({self._max_size} bytes) of {self._buft_name()}"
            )
            raise MemoryError(msg)
        if size >= _DEDICATED:
            buf = self._new_buffer(size)
            addr = int(lib.ggml_backend_buffer_get_base(buf))
        else:
            offset = -(-self._chunk_used // self._align) * self._align
            if self._chunk is None or offset + size > self._chunk_size:
                chunk = min(max(self._next_chunk, size), self._max_size)
                self._chunk = buf = self._new_buffer(chunk)
                self._chunk_base = int(lib.ggml_backend_buffer_get_base(buf))
                self._chunk_size = int(lib.ggml_backend_buffer_get_size(buf))
                self._next_chunk = min(2 * self._next_chunk, _MAX_CHUNK)
                offset = 0
            buf = self._chunk
            addr = self._chunk_base + offset
            self._chunk_used = offset + size
        status = lib.ggml_backend_tensor_alloc(buf, t, addr)
        if status != _lib.GGML_STATUS_SUCCESS:
            msg = f"ggml: cannot place a tensor of {size} bytes in its buffer (status {status})"
            raise MemoryError(msg)

    def _new_buffer(self, size: int) -> int:
        buf: int | None = self._lib.ggml_backend_buft_alloc_buffer(self._buft, max(size, 1))
        if not buf:
            msg = f"ggml: failed to allocate {size} bytes in buffer type {self._buft_name()}"
            raise MemoryError(msg)
        self._buffers.append(buf)
        if self._usage != _lib.GGML_BACKEND_BUFFER_USAGE_ANY:
            self._lib.ggml_backend_buffer_set_usage(buf, self._usage)
        self.nbytes += int(self._lib.ggml_backend_buffer_get_size(buf))
        return buf

    def _buft_name(self) -> str:
        return (self._lib.ggml_backend_buft_name(self._buft) or b"?").decode(errors="replace")

    def free(self) -> None:
        """Free every buffer and metadata pool; the arena's tensors become invalid."""
        lib = self._lib
        buffers, self._buffers = self._buffers, []
        metas, self._metas = self._metas, []
        for buf in buffers:
            lib.ggml_backend_buffer_free(buf)
        for meta in metas:
            lib.ggml_free(meta)
        self._chunk = None
        self._slots_left = 0
        self.nbytes = 0
