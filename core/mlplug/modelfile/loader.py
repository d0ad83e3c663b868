"""Streaming a GGUF file's tensor data into a backend's weight tensors.

What loading promises (progress, cancellation, errors) is in docs/models-and-memory.md, section
'Loading'.

Data is read sequentially from one read-only file handle, straight into the tensor's host
storage when the backend exposes it (:meth:`Backend.hook_host_buffer`: no copy besides the
kernel's), otherwise chunk by chunk through a :class:`WeightWriter`
(:meth:`Backend.hook_weight_writer`). Two tensors are converted on the way: ollama's raw MXFP4
(file type 4) is re-interleaved to ggml's nibble order, and BF16 ``*_exps.bias`` is widened to
F32. Big-endian files have their non-quantised values byte-swapped. ``progress`` is called from
the loading thread only, after every chunk, with a non-decreasing fraction of the file bytes
that ends at exactly 1.0.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

import numpy as np

from ..dtypes import TRAITS, DType
from ..errors import LoadCancelledError, ModelFileError
from ..writers import HostWriter, StagedWriter, WeightWriter

if TYPE_CHECKING:
    from ..backend import Backend
    from ..tensor import Tensor
    from .reader import TensorInfo

__all__ = [
    "CHUNK_BYTES",
    "CONVERT_CHUNK_BYTES",
    "MXFP4_CHUNK_BYTES",
    "FileIdentity",
    "HostWriter",
    "LoadJob",
    "StagedWriter",
    "WeightWriter",
    "bf16_to_f32_bytes",
    "load_weights",
    "mxfp4_reorder",
]

CHUNK_BYTES: Final = 1 << 20
"""Bytes read per step into a tensor's host storage (one progress call each)."""
CONVERT_CHUNK_BYTES: Final = 128 * 1024
"""Bytes read per step when the data goes through a writer or a conversion (the reference's)."""
MXFP4_CHUNK_BYTES: Final = 8 * 17 * 1024
"""MXFP4 step: a whole number of 17-byte blocks (the reference's)."""

Conversion = Literal["mxfp4_reorder", "bf16_to_f32"]


def mxfp4_reorder(raw: np.ndarray) -> np.ndarray:
    """Re-interleave ollama's raw MXFP4 blocks into ggml's nibble order.

    In every 17-byte block byte 0 (the scale) is kept; with ``a = blk[k]``, ``b = blk[k + 8]``
    for k in 1..8: ``out[2(k-1)] = (a & 0x0F) | (b << 4)`` and
    ``out[2(k-1)+1] = (a >> 4) | (b & 0xF0)``.

    :param raw: uint8 array whose length is a multiple of 17.
    :returns: a new uint8 array of the same length.
    """
    blocks = raw.reshape(-1, 17)
    a = blocks[:, 1:9]
    b = blocks[:, 9:17]
    out = np.empty_like(blocks)
    out[:, 0] = blocks[:, 0]
    out[:, 1:17:2] = (a & 0x0F) | (b << 4)
    out[:, 2:17:2] = (a >> 4) | (b & 0xF0)
    return out.reshape(-1)


def bf16_to_f32_bytes(raw: np.ndarray) -> np.ndarray:
    """Widen little-endian BF16 bit patterns (as uint8) to F32 (as uint8, twice as long)."""
    bits = raw.view("<u2").astype("<u4") << 16
    return bits.view(np.uint8)


@dataclass(frozen=True)
class FileIdentity:
    """What the model file looked like when it was opened; a load checks it is unchanged."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        """Return the identity recorded in a stat result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class LoadJob:
    """One file tensor and the weight tensors its data goes to.

    :param info: the file tensor.
    :param targets: created tensors (two for a tied ``token_embd``/``output``, one per layer for
        ``rope_freqs``).
    :param conversion: what happens to the bytes on the way, if anything.
    :param swap: the element size to byte-swap (big-endian file, non-quantised type), else 0.
    """

    info: TensorInfo
    targets: Sequence[Tensor]
    conversion: Conversion | None
    swap: int


def swap_size(dtype: DType, byte_order: str) -> int:
    """Return the element size to byte-swap for a file tensor, or 0 when none is needed."""
    traits = TRAITS[dtype]
    if byte_order != "big" or traits.block_size > 1 or traits.type_size <= 1:
        return 0
    return traits.type_size


class _Progress:
    """Counts file bytes consumed and reports the fraction (monotonic, 1.0 exactly at the end)."""

    def __init__(self, total: int, callback: Callable[[float], None] | None) -> None:
        self.total = total
        self.done = 0
        self.callback = callback

    def advance(self, n: int) -> None:
        self.done += n
        if self.callback is not None and self.total:
            self.callback(min(self.done, self.total) / self.total)

    def finish(self) -> None:
        if self.callback is not None and (self.total == 0 or self.done != self.total):
            self.callback(1.0)


class _Loader:
    """One load: a file handle, the position in it, progress and cancellation."""

    def __init__(
        self,
        backend: Backend,
        path: str,
        fh: _RawFile,
        progress: _Progress,
        cancel: threading.Event | None,
    ) -> None:
        self.backend = backend
        self.path = path
        self.fh = fh
        self.pos = 0
        self.progress = progress
        self.cancel = cancel

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise LoadCancelledError(self.path, self.progress.done, self.progress.total)

    def seek(self, pos: int) -> None:
        if pos != self.pos:
            self.fh.seek(pos)
            self.pos = pos

    def read_into(self, view: memoryview, name: str) -> None:
        """Fill ``view`` from the current position or raise ModelFileError at a short read."""
        got = 0
        want = len(view)
        while got < want:
            n = self.fh.readinto(view[got:])
            if not n:
                message = (
                    f'unexpected end of file reading tensor "{name}": the file ended after '
                    f"{got} of {want} bytes of this read"
                )
                raise ModelFileError(self.path, message, offset=self.pos + got)
            got += n
        self.pos += want

    def load(self, job: LoadJob) -> None:
        info = job.info
        self.seek(info.file_offset)
        first = job.targets[0]
        host = self.backend.hook_host_buffer(first) if job.conversion is None else None
        if host is not None and len(host) == info.nbytes:
            self._load_direct(job, host)
        else:
            self._load_streamed(job)

    def _load_direct(self, job: LoadJob, host: memoryview) -> None:
        """Read straight into the first target's host storage; copy it to the others."""
        name = job.info.name
        total = job.info.nbytes
        for off in range(0, total, CHUNK_BYTES):
            self.check_cancel()
            piece = host[off : off + CHUNK_BYTES]
            self.read_into(piece, name)
            if job.swap:
                np.frombuffer(piece, dtype=f"u{job.swap}").byteswap(inplace=True)
            self.progress.advance(len(piece))
        for t in job.targets[1:]:
            writer = self.backend.hook_weight_writer(t)
            writer.write(0, host)
            writer.finish()

    def _load_streamed(self, job: LoadJob) -> None:
        """Read chunks into a scratch buffer, convert them, hand them to each target's writer."""
        name = job.info.name
        total = job.info.nbytes
        chunk = MXFP4_CHUNK_BYTES if job.conversion == "mxfp4_reorder" else CONVERT_CHUNK_BYTES
        buf = memoryview(bytearray(min(chunk, total)))
        writers = [self.backend.hook_weight_writer(t) for t in job.targets]
        for off in range(0, total, chunk):
            self.check_cancel()
            n = min(chunk, total - off)
            src = buf[:n]
            self.read_into(src, name)
            out_off = off
            data = np.frombuffer(src, dtype=np.uint8)
            if job.swap:
                data = data.view(f"u{job.swap}").byteswap().view(np.uint8)
            if job.conversion == "mxfp4_reorder":
                data = mxfp4_reorder(data)
            elif job.conversion == "bf16_to_f32":
                data = bf16_to_f32_bytes(data)
                out_off = off * 2
            out = memoryview(data.data).cast("B")
            for writer in writers:
                writer.write(out_off, out)
            self.progress.advance(n)
        for writer in writers:
            writer.finish()


class _RawFile(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def seek(self, pos: int, /) -> int: ...


def load_weights(
    backend: Backend,
    path: str,
    identity: FileIdentity,
    jobs: Sequence[LoadJob],
    progress: Callable[[float], None] | None,
    cancel: threading.Event | None,
) -> None:
    """Stream every job's file bytes into its targets, in file-offset order.

    :param backend: the backend whose hooks write the data.
    :param path: the model file.
    :param identity: the file as it was at open; a changed file is refused.
    :param jobs: what to load.
    :param progress: called with the fraction of file bytes loaded, from this thread only.
    :param cancel: when set, loading stops before the next chunk.
    :raises LoadCancelledError: ``cancel`` was set.
    :raises ModelFileError: the file is missing, changed since it was opened, or too short.
    """
    ordered = sorted(jobs, key=lambda j: j.info.file_offset)
    tracker = _Progress(sum(j.info.nbytes for j in ordered), progress)
    try:
        fh = open(path, "rb", buffering=0)
    except OSError as exc:
        message = f"cannot open model file: {exc.strerror or exc}"
        raise ModelFileError(path, message) from exc
    with fh:
        now = FileIdentity.of(os.fstat(fh.fileno()))
        if now != identity:
            message = (
                f"model file changed since it was opened (size {identity.size} -> {now.size}, "
                f"mtime {identity.mtime_ns} -> {now.mtime_ns})"
            )
            raise ModelFileError(path, message)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        loader = _Loader(backend, path, fh, tracker, cancel)
        for job in ordered:
            loader.load(job)
    tracker.finish()
