"""Read-only GGUF decoding: header, typed metadata and tensor infos, validated before use.

The walker below is bounded: every count and length read from the file is checked against the
bytes that remain before anything is allocated from it, so a hostile file costs at most time and
memory proportional to its own size. Every malformed input raises :class:`ModelFileError` naming
the path and the byte offset (and the key, for metadata). The file is memory-mapped read-only and
never written.

The `gguf` package supplies the value-type enum and the sizes of ggml types mlplug has no DType
for; its ``GGUFReader`` is not used for untrusted input because it loops over unchecked array
lengths (an array length of 2**60 spins without consuming bytes) and raises assorted builtin
exceptions on truncation.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, NoReturn, TypeAlias

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGUFValueType

from ..dtypes import TRAITS, DType, align_up, from_ggml_type
from ..errors import ModelFileError

__all__ = [
    "DEFAULT_ALIGNMENT",
    "GGUFFile",
    "GGUFValueType",
    "KV",
    "MetadataValue",
    "TensorInfo",
    "tensor_type_size",
]

DEFAULT_ALIGNMENT: Final = 32
"""Tensor data alignment when the file has no uint32 ``general.alignment``."""

MAX_DIMS: Final = 4
_MAX_ELEMENTS: Final = 2**63 - 1
_MIN_KV: Final = 13  # smallest key/value record: empty key (8), type (4), a uint8 (1)
_MIN_TENSOR_INFO: Final = 24  # smallest tensor info: empty name (8), n_dims 0, type, offset
_MAGIC_LE: Final = b"GGUF"  # what llama.cpp and the gguf package write, in either byte order
_MAGIC_BE: Final = b"FUGG"  # ollama's big-endian magic (0x46554747 written big-endian)
_MXFP4_OLLAMA_ID: Final = 4  # ollama's converter writes raw MXFP4 with the retired Q4_2 id

_SCALAR_FORMATS: Final[dict[GGUFValueType, str]] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "B",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}

MetadataValue: TypeAlias = "int | float | bool | str | npt.NDArray[Any] | tuple[str, ...]"
"""A decoded metadata value: a Python scalar, a read-only 1-D numpy array for numeric and bool
arrays (native byte order, dtype matching the GGUF element type), or a tuple for string arrays."""


@dataclass(frozen=True, eq=False)
class KV:
    """One metadata value with the GGUF type it was stored as.

    :param type: the GGUF value type (``ARRAY`` for arrays).
    :param value: the decoded value (see :data:`MetadataValue`).
    :param elem_type: the element type of an array, else ``None``.
    :param offset: file offset of the key/value record (``-1`` for values the decoder adds).
    """

    type: GGUFValueType
    value: MetadataValue
    elem_type: GGUFValueType | None = None
    offset: int = -1

    def to_python(self) -> int | float | bool | str | list[Any]:
        """Return the value as plain Python (arrays as lists), e.g. for JSON output."""
        if isinstance(self.value, np.ndarray):
            return list(self.value.tolist())
        if isinstance(self.value, tuple):
            return list(self.value)
        return self.value


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as described by the file.

    :param name: the tensor name.
    :param ne: ggml shape, innermost dimension first.
    :param dtype: mlplug dtype (``OTHER`` for ggml types mlplug cannot create).
    :param ggml_type: the type id stored in the file (4 means ollama's raw MXFP4 layout).
    :param offset: data offset relative to :attr:`GGUFFile.data_start`.
    :param file_offset: absolute file offset of the data.
    :param nbytes: byte size of the data.
    :param n_elements: number of elements.
    :param info_offset: file offset of this tensor's info record.
    """

    name: str
    ne: tuple[int, ...]
    dtype: DType
    ggml_type: int
    offset: int
    file_offset: int
    nbytes: int
    n_elements: int
    info_offset: int


def tensor_type_size(ggml_type: int) -> tuple[int, int] | None:
    """Return ``(block_size, type_size)`` of a ggml type id, or ``None`` if it is unknown.

    Type id 4 is ollama's raw MXFP4 (32 elements in 17 bytes); ids mlplug has no DType for are
    sized from the `gguf` package's table.
    """
    if ggml_type == _MXFP4_OLLAMA_ID:
        t = TRAITS[DType.MXFP4]
        return t.block_size, t.type_size
    dtype = from_ggml_type(ggml_type)
    if dtype is not DType.OTHER:
        t = TRAITS[dtype]
        return t.block_size, t.type_size
    for qtype, sizes in GGML_QUANT_SIZES.items():
        if int(qtype) == ggml_type:
            return sizes
    return None


def _dtype_of(ggml_type: int) -> DType:
    return DType.MXFP4 if ggml_type == _MXFP4_OLLAMA_ID else from_ggml_type(ggml_type)


class _Walker:
    """A bounded cursor over the mapped file; every read checks the remaining size first."""

    def __init__(self, buf: mmap.mmap, size: int, path: str, order: str) -> None:
        self.buf = buf
        self.size = size
        self.path = path
        self.order = order
        self.pos = 0
        self._u32 = struct.Struct(order + "I")
        self._u64 = struct.Struct(order + "Q")

    def fail(self, message: str, *, offset: int | None = None, key: str | None = None) -> NoReturn:
        raise ModelFileError(
            self.path, message, offset=self.pos if offset is None else offset, key=key
        )

    def need(self, n: int, what: str, key: str | None = None) -> None:
        if n > self.size - self.pos:
            self.fail(
                f"unexpected end of file reading {what}: need {n} bytes, "
                f"{self.size - self.pos} left (file size {self.size})",
                key=key,
            )

    def u32(self, what: str, key: str | None = None) -> int:
        self.need(4, what, key)
        (v,) = self._u32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u64(self, what: str, key: str | None = None) -> int:
        self.need(8, what, key)
        (v,) = self._u64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def string(self, what: str, key: str | None = None) -> str:
        start = self.pos
        n = self.u64(f"{what} length", key)
        self.need(n, what, key)
        raw = self.buf[self.pos : self.pos + n]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            raise ModelFileError(self.path, message, offset=start, key=key) from exc
        self.pos += n
        return text

    def scalar(self, vtype: GGUFValueType, key: str) -> int | float | bool | str:
        if vtype is GGUFValueType.STRING:
            return self.string("string value", key)
        fmt = struct.Struct(self.order + _SCALAR_FORMATS[vtype])
        self.need(fmt.size, f"{vtype.name.lower()} value", key)
        (v,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        if vtype is GGUFValueType.BOOL:
            return bool(v)
        return float(v) if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64) else int(v)

    def array(self, key: str) -> tuple[GGUFValueType, MetadataValue]:
        at = self.pos
        raw_type = self.u32("array element type", key)
        etype = _value_type(raw_type)
        if etype is None or etype is GGUFValueType.ARRAY:
            self.fail(f"invalid array type: {raw_type}", offset=at, key=key)
        count_at = self.pos
        count = self.u64("array length", key)
        min_size = 8 if etype is GGUFValueType.STRING else struct.calcsize(_SCALAR_FORMATS[etype])
        if count > (self.size - self.pos) // min_size:
            self.fail(
                f"array length {count} of {etype.name.lower()} needs at least "
                f"{count * min_size} bytes, {self.size - self.pos} left (file size {self.size})",
                offset=count_at,
                key=key,
            )
        if etype is GGUFValueType.STRING:
            return etype, tuple(self.string(f"string array element {i}", key) for i in range(count))
        dt = np.dtype(self.order + _SCALAR_FORMATS[etype])  # struct codes are numpy codes too
        arr = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.pos)
        self.pos += count * dt.itemsize
        out = arr.astype(dt.newbyteorder("="), copy=True)
        if etype is GGUFValueType.BOOL:
            out = out != 0
        out.setflags(write=False)
        return etype, out


def _value_type(raw: int) -> GGUFValueType | None:
    try:
        return GGUFValueType(raw)
    except ValueError:
        return None


class GGUFFile:
    """A GGUF model file opened read-only, decoded and validated.

    All metadata and tensor infos are decoded in the constructor; tensor data stays in the
    read-only memory map and is exposed as zero-copy views by :meth:`tensor_bytes`. Versions 2
    and 3 are accepted, in either byte order.

    >>> with GGUFFile("model.gguf") as f:  # doctest: +SKIP
    ...     f.metadata["general.architecture"].value, f.tensors[0].ne
    ('llama', (64, 32))

    :param path: the file to open.
    :raises ModelFileError: the file is missing, unreadable, not GGUF or malformed.
    """

    path: str
    """The path as given (``os.fspath``)."""
    version: int
    """The GGUF version (2 or 3)."""
    byte_order: Literal["little", "big"]
    """Byte order of every number in the file, tensor data included."""
    metadata: Mapping[str, KV]
    """Typed metadata in file order, plus ``general.parameter_count`` (uint64)."""
    tensors: tuple[TensorInfo, ...]
    """Tensor infos in file order."""
    alignment: int
    """Tensor data alignment: uint32 ``general.alignment`` or 32."""
    data_start: int
    """File offset where tensor data starts (end of the infos, aligned)."""
    data_end: int
    """End of tensor data: each tensor's size added in file order after aligning the position."""
    file_size: int
    """Size of the file in bytes when it was opened."""
    parameter_count: int
    """Total number of tensor elements."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._mm: mmap.mmap | None = None
        self._by_name: dict[str, TensorInfo] = {}
        self._mm = self._open()
        try:
            self._decode(self._mm)
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> mmap.mmap:
        try:
            st = os.stat(self.path)
            if stat.S_ISDIR(st.st_mode):
                raise ModelFileError(self.path, "is a directory, not a GGUF file")
            if not stat.S_ISREG(st.st_mode):
                raise ModelFileError(self.path, "is not a regular file")
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < 24:
                    message = f"unexpected end of file reading the GGUF header (file size {size})"
                    raise ModelFileError(self.path, message, offset=size)
                return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            message = f"cannot open model file: {exc.strerror or exc}"
            raise ModelFileError(self.path, message) from exc

    # -- decoding ------------------------------------------------------------------------------

    def _decode(self, mm: mmap.mmap) -> None:
        size = len(mm)
        self.file_size = size
        magic = bytes(mm[0:4])
        if magic not in (_MAGIC_LE, _MAGIC_BE):
            raise ModelFileError(self.path, f"invalid file magic {magic!r}", offset=0)
        (v_le,) = struct.unpack_from("<I", mm, 4)
        (v_be,) = struct.unpack_from(">I", mm, 4)
        if magic == _MAGIC_BE:
            order, version = ">", v_be
        elif v_le in (1, 2, 3) or v_be not in (1, 2, 3):
            order, version = "<", v_le
        else:
            order, version = ">", v_be
        self.byte_order = "little" if order == "<" else "big"
        if version == 1:
            raise ModelFileError(
                self.path, "GGUF version 1 is not supported (supported: 2, 3)", offset=4
            )
        if version not in (2, 3):
            message = f"unsupported GGUF version {version} (supported: 2, 3)"
            raise ModelFileError(self.path, message, offset=4)
        self.version = version

        w = _Walker(mm, size, self.path, order)
        w.pos = 8
        n_tensors = w.u64("tensor count")
        n_kv = w.u64("metadata count")
        left = size - w.pos
        if n_kv > left // _MIN_KV or n_tensors > (left - _MIN_KV * n_kv) // _MIN_TENSOR_INFO:
            message = (
                f"tensor count {n_tensors} and metadata count {n_kv} cannot fit in "
                f"{left} remaining bytes (file size {size})"
            )
            raise ModelFileError(self.path, message, offset=8)

        metadata: dict[str, KV] = {}
        for _ in range(n_kv):
            rec = w.pos
            key = w.string("metadata key")
            if key in metadata:
                message = f"duplicate metadata key (first at offset {metadata[key].offset})"
                raise ModelFileError(self.path, message, offset=rec, key=key)
            at = w.pos
            raw_type = w.u32("value type", key)
            vtype = _value_type(raw_type)
            if vtype is None:
                raise ModelFileError(self.path, f"invalid type: {raw_type}", offset=at, key=key)
            if vtype is GGUFValueType.ARRAY:
                etype, value = w.array(key)
                metadata[key] = KV(vtype, value, etype, rec)
            else:
                metadata[key] = KV(vtype, w.scalar(vtype, key), None, rec)

        alignment = DEFAULT_ALIGNMENT
        align_kv = metadata.get("general.alignment")
        if (
            align_kv is not None
            and align_kv.type is GGUFValueType.UINT32
            and isinstance(align_kv.value, int)
        ):
            if align_kv.value == 0:
                message = "general.alignment must not be 0"
                key = "general.alignment"
                raise ModelFileError(self.path, message, offset=align_kv.offset, key=key)
            alignment = align_kv.value
        self.alignment = alignment

        if n_tensors > (size - w.pos) // _MIN_TENSOR_INFO:
            message = (
                f"tensor count {n_tensors} cannot fit in the {size - w.pos} bytes left after "
                f"the metadata (a tensor info takes at least {_MIN_TENSOR_INFO} bytes; "
                f"file size {size})"
            )
            raise ModelFileError(self.path, message, offset=8)
        seen: set[str] = set()
        raw_infos = [self._tensor_info(w, seen) for _ in range(n_tensors)]
        self.data_start = align_up(w.pos, alignment)

        tensors: list[TensorInfo] = []
        by_name: dict[str, TensorInfo] = {}
        pos = self.data_start
        for name, ne, ggml_type, offset, nbytes, n_elements, info_at in raw_infos:
            end = self.data_start + offset + nbytes
            if end > size:
                message = f'tensor "{name}" offset+size ({end}) exceeds file size ({size})'
                raise ModelFileError(self.path, message, offset=info_at)
            info = TensorInfo(
                name=name,
                ne=ne,
                dtype=_dtype_of(ggml_type),
                ggml_type=ggml_type,
                offset=offset,
                file_offset=self.data_start + offset,
                nbytes=nbytes,
                n_elements=n_elements,
                info_offset=info_at,
            )
            tensors.append(info)
            by_name[name] = info
            pos = align_up(pos, alignment) + nbytes
        self.data_end = pos
        self.tensors = tuple(tensors)
        self._by_name = by_name
        self.parameter_count = sum(t.n_elements for t in tensors)
        metadata["general.parameter_count"] = KV(GGUFValueType.UINT64, self.parameter_count)
        self.metadata = MappingProxyType(metadata)

    def _tensor_info(
        self, w: _Walker, seen: set[str]
    ) -> tuple[str, tuple[int, ...], int, int, int, int, int]:
        at = w.pos
        name = w.string("tensor name")
        if name in seen:
            raise ModelFileError(self.path, f'duplicate tensor name "{name}"', offset=at)
        n_dims = w.u32(f'n_dims of tensor "{name}"')
        if n_dims > MAX_DIMS:
            message = f'tensor "{name}" has {n_dims} dimensions (at most {MAX_DIMS})'
            raise ModelFileError(self.path, message, offset=at)
        ne = tuple(w.u64(f'dimension {i} of tensor "{name}"') for i in range(n_dims))
        n_elements = 1
        for i, d in enumerate(ne):
            if d == 0:
                message = f'tensor "{name}" has dimension {i} of size 0 (shape {list(ne)})'
                raise ModelFileError(self.path, message, offset=at)
            n_elements *= d
        if n_elements > _MAX_ELEMENTS:
            message = f'tensor "{name}" has too many elements (shape {list(ne)})'
            raise ModelFileError(self.path, message, offset=at)
        type_at = w.pos
        ggml_type = w.u32(f'type of tensor "{name}"')
        sizes = tensor_type_size(ggml_type)
        if sizes is None:
            message = f'tensor "{name}" has unknown type {ggml_type}'
            raise ModelFileError(self.path, message, offset=type_at)
        block_size, type_size = sizes
        ne0 = ne[0] if ne else 1
        if ne0 % block_size:
            message = (
                f'tensor "{name}" dimension 0 ({ne0}) is not a multiple of the block size '
                f"{block_size} of type {ggml_type}"
            )
            raise ModelFileError(self.path, message, offset=at)
        offset = w.u64(f'data offset of tensor "{name}"')
        seen.add(name)
        return name, ne, ggml_type, offset, n_elements // block_size * type_size, n_elements, at

    # -- access --------------------------------------------------------------------------------

    def tensor(self, name: str) -> TensorInfo | None:
        """Return the info of the tensor called ``name``, or ``None``."""
        return self._by_name.get(name)

    def tensor_bytes(self, info: TensorInfo | str) -> memoryview:
        """Return a zero-copy read-only view of a tensor's data.

        The view stays valid after :meth:`close` until it is released (the mapping is unmapped
        when the last view goes away).

        :param info: a tensor info of this file, or a tensor name.
        :raises KeyError: no tensor of that name.
        :raises ValueError: the file is closed.
        """
        if isinstance(info, str):
            found = self._by_name.get(info)
            if found is None:
                raise KeyError(info)
            info = found
        if self._mm is None:
            message = f"{self.path}: file is closed"
            raise ValueError(message)
        return memoryview(self._mm)[info.file_offset : info.file_offset + info.nbytes]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._mm is None

    def close(self) -> None:
        """Drop the memory map; idempotent. Views handed out keep the mapping alive."""
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # exported views still use it; it is unmapped when they are released

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[TensorInfo]:
        """Iterate over the tensor infos in file order."""
        return iter(self.tensors)

    def __repr__(self) -> str:
        return (
            f"GGUFFile({self.path!r}, version={self.version}, tensors={len(self.tensors)}, "
            f"metadata={len(self.metadata)})"
        )
