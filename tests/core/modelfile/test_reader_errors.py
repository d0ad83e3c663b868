"""GGUFFile on malformed files: every case raises ModelFileError naming the path and where."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from gguf import GGUFValueType
from model_files import RawGGUF, gguf_string

from mlplug.errors import ModelFileError
from mlplug.modelfile import GGUFFile

V = GGUFValueType
HEADER = 24  # magic, version, tensor count, kv count


def _fails(path: Path, match: str) -> ModelFileError:
    with pytest.raises(ModelFileError, match=match) as e:
        GGUFFile(path)
    err = e.value
    assert err.path == str(path) and str(path) in str(err)
    assert err.offset is not None or err.key is not None
    return err


def _valid() -> RawGGUF:
    raw = (
        RawGGUF().kv("general.architecture", V.STRING, "llama").kv("llama.block_count", V.UINT32, 1)
    )
    raw.kv_raw("a", int(V.ARRAY), struct.pack("<IQ", int(V.STRING), 2) + gguf_string("x") * 2)
    raw.tensor("blk.0.w", (4, 2), 0, 0).tensor("blk.0.b", (4,), 0, 32)
    raw.data = bytes(48)
    return raw


def test_valid_base_file_opens(tmp_path: Path) -> None:
    """The base of the truncation cases is itself valid."""
    with GGUFFile(_valid().write(tmp_path / "ok.gguf")) as f:
        assert len(f.tensors) == 2


@pytest.mark.parametrize("keep", [0, 3, 8, 23, 30, 60, 100, 150, 170, 200])
def test_truncated(tmp_path: Path, keep: int) -> None:
    """A file cut anywhere in header, key/values or tensor infos fails with the offset."""
    data = _valid().build()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    err = _fails(path, "end of file|exceeds file size|cannot fit")
    assert err.offset is not None and err.offset <= max(keep, HEADER)


def test_truncated_data(tmp_path: Path) -> None:
    """Tensor data past the end gives ollama's message with the end and the size."""
    raw = _valid()
    raw.data = bytes(40)
    path = raw.write(tmp_path / "d.gguf")
    size = path.stat().st_size
    _fails(path, rf'tensor "blk.0.b" offset\+size \({size + 8}\) exceeds file size \({size}\)')


def test_offset_past_end(tmp_path: Path) -> None:
    """A tensor offset beyond the file is the same error (no reading there)."""
    raw = RawGGUF().tensor("w", (4,), 0, 2**63)
    _fails(raw.write(tmp_path / "o.gguf"), r'tensor "w" offset\+size \(\d+\) exceeds file size')


@pytest.mark.parametrize("magic", [b"GGML", b"\0\0\0\0", b"gguf"])
def test_wrong_magic(tmp_path: Path, magic: bytes) -> None:
    """Anything but GGUF (either byte order) is not a GGUF file."""
    err = _fails(RawGGUF(magic=magic).write(tmp_path / "m.gguf"), "invalid file magic")
    assert err.offset == 0


@pytest.mark.parametrize(
    ("version", "match"), [(1, "version 1 is not supported"), (4, "version 4"), (0, "version 0")]
)
def test_unsupported_version(tmp_path: Path, version: int, match: str) -> None:
    """Only versions 2 and 3 are accepted."""
    err = _fails(RawGGUF(version=version).write(tmp_path / "v.gguf"), match)
    assert err.offset == 4


def test_invalid_utf8_key(tmp_path: Path) -> None:
    """A key that is not UTF-8 fails at its offset."""
    err = _fails(
        RawGGUF().kv_raw(b"k\xff", int(V.UINT8), b"\1").write(tmp_path / "u.gguf"), "UTF-8"
    )
    assert err.offset == HEADER


def test_invalid_utf8_value(tmp_path: Path) -> None:
    """A string value that is not UTF-8 fails naming the key."""
    raw = RawGGUF().kv_raw("k", int(V.STRING), gguf_string(b"\xc3("))
    err = _fails(raw.write(tmp_path / "u.gguf"), "UTF-8")
    assert err.key == "k" and err.offset == HEADER + 9 + 4


def test_invalid_utf8_in_string_array(tmp_path: Path) -> None:
    """A string array element that is not UTF-8 fails naming the key."""
    payload = (
        struct.pack("<IQ", int(V.STRING), 2) + gguf_string("ok") + gguf_string(b"\xed\xa0\x80")
    )
    err = _fails(RawGGUF().kv_raw("arr", int(V.ARRAY), payload).write(tmp_path / "u.gguf"), "UTF-8")
    assert err.key == "arr"


def test_invalid_utf8_tensor_name(tmp_path: Path) -> None:
    """A tensor name that is not UTF-8 fails at the tensor info."""
    err = _fails(RawGGUF().tensor(b"\x80w", (4,), 0).write(tmp_path / "u.gguf"), "UTF-8")
    assert err.offset == HEADER


@pytest.mark.parametrize("etype", [V.UINT8, V.BOOL, V.UINT64, V.STRING])
def test_huge_array_length(tmp_path: Path, etype: GGUFValueType) -> None:
    """An array length of 2**60 is rejected before any allocation, naming the key."""
    payload = struct.pack("<IQ", int(etype), 2**60) + bytes(64)
    err = _fails(
        RawGGUF().kv_raw("big", int(V.ARRAY), payload).write(tmp_path / "a.gguf"), "array length"
    )
    assert err.key == "big" and err.offset == HEADER + 11 + 4 + 4


@pytest.mark.parametrize("length", [2**63, 2**64 - 1, 10**9])
def test_huge_string_length(tmp_path: Path, length: int) -> None:
    """A string length beyond the file is rejected with the key."""
    raw = RawGGUF().kv_raw("s", int(V.STRING), struct.pack("<Q", length) + b"abc")
    err = _fails(raw.write(tmp_path / "s.gguf"), "end of file")
    assert err.key == "s"


def test_huge_key_length(tmp_path: Path) -> None:
    """A key length beyond the file is rejected at the key."""
    data = bytearray(RawGGUF().kv("k", V.UINT8, 1).build())
    struct.pack_into("<Q", data, HEADER, 2**62)
    path = tmp_path / "k.gguf"
    path.write_bytes(bytes(data))
    err = _fails(path, "end of file reading metadata key")
    assert err.offset == HEADER + 8


@pytest.mark.parametrize("count", [(2**60, 0), (0, 2**60), (2**63, 2**63), (10, 10)])
def test_huge_counts(tmp_path: Path, count: tuple[int, int]) -> None:
    """Tensor and key/value counts that cannot fit in the file are rejected at offset 8."""
    raw = RawGGUF()
    raw.n_tensors, raw.n_kv = count
    err = _fails(raw.write(tmp_path / "c.gguf"), "cannot fit")
    assert err.offset == 8


def test_unknown_kv_type(tmp_path: Path) -> None:
    """An unknown value type is ollama's `invalid type: N`."""
    err = _fails(
        RawGGUF().kv_raw("k", 13, b"\0" * 8).write(tmp_path / "t.gguf"), "invalid type: 13"
    )
    assert err.key == "k"


@pytest.mark.parametrize("etype", [13, 2**32 - 1, int(V.ARRAY)])
def test_unknown_array_type(tmp_path: Path, etype: int) -> None:
    """An unknown (or nested array) element type is `invalid array type: N`."""
    payload = struct.pack("<IQ", etype, 1) + bytes(16)
    err = _fails(
        RawGGUF().kv_raw("k", int(V.ARRAY), payload).write(tmp_path / "t.gguf"),
        f"invalid array type: {etype}",
    )
    assert err.key == "k"


@pytest.mark.parametrize("type_id", [5, 31, 1000, 2**32 - 1])
def test_unknown_tensor_type(tmp_path: Path, type_id: int) -> None:
    """A tensor type id neither ollama nor the gguf package knows is rejected."""
    raw = RawGGUF().tensor("w", (32,), type_id)
    raw.data = bytes(256)
    _fails(raw.write(tmp_path / "t.gguf"), f'tensor "w" has unknown type {type_id}')


def test_duplicate_tensor_name(tmp_path: Path) -> None:
    """Two tensors of the same name are rejected at the second."""
    raw = RawGGUF().tensor("w", (4,), 0, 0).tensor("w", (4,), 0, 32)
    raw.data = bytes(64)
    err = _fails(raw.write(tmp_path / "d.gguf"), 'duplicate tensor name "w"')
    assert err.offset == HEADER + 8 + 1 + 4 + 8 + 4 + 8


def test_duplicate_key(tmp_path: Path) -> None:
    """A key given twice is rejected, naming it."""
    raw = RawGGUF().kv("k", V.UINT8, 1).kv("k", V.UINT32, 2)
    err = _fails(raw.write(tmp_path / "d.gguf"), "duplicate metadata key")
    assert err.key == "k" and err.offset == HEADER + 14


def test_too_many_dims(tmp_path: Path) -> None:
    """More than four dimensions is rejected."""
    _fails(RawGGUF().tensor("w", (1, 1, 1, 1, 1), 0).write(tmp_path / "n.gguf"), "5 dimensions")


def test_huge_n_dims(tmp_path: Path) -> None:
    """An n_dims of 2**32-1 is rejected without reading that many dimensions."""
    data = bytearray(RawGGUF().tensor("w", (4,), 0).build())
    struct.pack_into("<I", data, HEADER + 9, 2**32 - 1)
    path = tmp_path / "n.gguf"
    path.write_bytes(bytes(data))
    _fails(path, "4294967295 dimensions")


def test_zero_dim(tmp_path: Path) -> None:
    """A dimension of size 0 is rejected."""
    _fails(RawGGUF().tensor("w", (4, 0), 0).write(tmp_path / "z.gguf"), "dimension 1 of size 0")


def test_absurd_element_count(tmp_path: Path) -> None:
    """A shape whose element count overflows int64 is rejected."""
    _fails(RawGGUF().tensor("w", (2**40, 2**40), 0).write(tmp_path / "e.gguf"), "too many elements")


def test_huge_but_countable_tensor(tmp_path: Path) -> None:
    """A shape claiming terabytes is caught by the file-size check, allocating nothing."""
    _fails(RawGGUF().tensor("w", (2**20, 2**20), 0).write(tmp_path / "e.gguf"), "exceeds file size")


def test_row_not_multiple_of_block(tmp_path: Path) -> None:
    """A quantized tensor whose dimension 0 is not a multiple of its block size is rejected."""
    raw = RawGGUF().tensor("w", (33,), 8)
    raw.data = bytes(128)
    _fails(raw.write(tmp_path / "b.gguf"), "not a multiple of the block size 32")


def test_zero_alignment(tmp_path: Path) -> None:
    """general.alignment = 0 (uint32) is rejected naming the key."""
    err = _fails(
        RawGGUF().kv("general.alignment", V.UINT32, 0).write(tmp_path / "a.gguf"), "alignment"
    )
    assert err.key == "general.alignment"


@pytest.mark.parametrize("size", [0, 1, 23])
def test_short_file(tmp_path: Path, size: int) -> None:
    """Files shorter than the header fail cleanly (no mmap of an empty file)."""
    path = tmp_path / "short.gguf"
    path.write_bytes(b"GGUF\3\0\0\0"[:size] + bytes(max(0, size - 8)))
    err = _fails(path, "end of file reading the GGUF header")
    assert err.offset == size


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_is_rejected_without_blocking(tmp_path: Path) -> None:
    """A named pipe is not opened (opening it would block)."""
    path = tmp_path / "pipe.gguf"
    os.mkfifo(path)
    with pytest.raises(ModelFileError, match="not a regular file"):
        GGUFFile(path)
