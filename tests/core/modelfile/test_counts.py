"""Every count a model file gives is checked against what the file can hold before it sizes
anything: hostile counts are ModelFileError naming the path and where, never MemoryError,
OverflowError or a long loop."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from model_files import RawGGUF, gguf_string
from model_helpers import BACKENDS, needs_cpu_numpy, open_backend

import mlplug as ml
from mlplug.errors import ModelFileError
from mlplug.modelfile import Config, GGUFFile, plan_placement

V = GGUFValueType
Q = GGMLQuantizationType
HEADER = 24  # magic, version, tensor count, kv count
ELEMENT_SIZES = {
    V.UINT8: 1,
    V.INT8: 1,
    V.BOOL: 1,
    V.UINT16: 2,
    V.INT16: 2,
    V.UINT32: 4,
    V.INT32: 4,
    V.FLOAT32: 4,
    V.UINT64: 8,
    V.INT64: 8,
    V.FLOAT64: 8,
    V.STRING: 8,  # an empty string is its u64 length alone
}


def _fails(path: Path, match: str) -> ModelFileError:
    with pytest.raises(ModelFileError, match=match) as e:
        GGUFFile(path)
    assert e.value.path == str(path)
    return e.value


def _llama(block_count: int, *tensors: str) -> RawGGUF:
    """A llama file whose llama.block_count is ``block_count``, with small F32 tensors."""
    raw = RawGGUF().kv("general.architecture", V.STRING, "llama")
    raw.kv("llama.block_count", V.UINT32, block_count)
    for i, name in enumerate(tensors):
        raw.tensor(name, (4,), int(Q.F32), 32 * i)
    raw.data = bytes(32 * len(tensors))
    return raw


# -- block_count: the file ---------------------------------------------------------------
@pytest.mark.parametrize("blocks", [10**8, 2**32 - 1])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_huge_block_count_dry_run(tmp_path: Path, blocks: int, backend_name: str) -> None:
    """A 200-byte file claiming 10**8 (or 2**32-1) blocks is refused before any per-layer list
    is built: ModelFileError naming the key, its value and the tensor count."""
    path = _llama(blocks, "token_embd.weight").write(tmp_path / "blocks.gguf")
    assert path.stat().st_size <= 200
    params = ml.BackendParams(alloc_memory=False)
    ml.new_backend(None, params, backend=backend_name).close()  # the backend's own set-up
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as e:
            open_backend(path, backend_name, alloc_memory=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = e.value
    assert err.key == "llama.block_count" and err.path == str(path)
    assert f"llama.block_count = {blocks}" in str(err)
    assert "number of tensors in the file (1)" in str(err)
    assert peak < 16 * 2**20, peak  # a list of 10**8 layers alone would be 800 MB


def test_block_count_limit_is_the_tensor_count(tmp_path: Path) -> None:
    """block_count may equal the number of tensors, not exceed it."""
    names = ("blk.0.w", "blk.1.w", "blk.2.w")
    for blocks, ok in ((3, True), (4, False)):
        path = _llama(blocks, *names).write(tmp_path / f"b{blocks}.gguf")
        with GGUFFile(path) as f:
            cfg = Config(f.metadata)
            key = cfg.key("block_count")
            if ok:
                plan = plan_placement(f.tensors, cfg.block_count(), path=f.path)
                assert len(plan.cpu_weights) == 4
            else:
                with pytest.raises(ModelFileError, match=r"llama.block_count = 4 exceeds") as e:
                    plan_placement(f.tensors, cfg.block_count(), path=f.path, block_count_key=key)
                assert e.value.key == "llama.block_count"


@needs_cpu_numpy
def test_vocabulary_only_file(tmp_path: Path) -> None:
    """A file with a block count but no tensors still decodes (e.g. for `mlplug inspect`), but it
    is not a model a backend can open."""
    path = _llama(2).write(tmp_path / "vocab.gguf")
    with GGUFFile(path) as f:
        assert f.tensors == () and Config(f.metadata).block_count() == 2
    with pytest.raises(ModelFileError, match=r"block_count = 2 exceeds .* \(0\)"):
        open_backend(path, "cpu_numpy", alloc_memory=False)


def test_layer_index_beyond_block_count_is_refused(tmp_path: Path) -> None:
    """A tensor of block 2 in a two-block model has no layer to go to: ModelFileError naming it,
    found before anything is sized (it is not placed on the CPU instead)."""
    path = _llama(2, "blk.0.w", "blk.1.w", "blk.2.w").write(tmp_path / "idx.gguf")
    with GGUFFile(path) as f:
        with pytest.raises(ModelFileError, match=r'tensor "blk\.2\.w" has layer index 2') as e:
            plan_placement(f.tensors, 2, path=f.path)
        assert e.value.offset == f.tensors[2].info_offset


def test_rope_copies_are_bounded(tmp_path: Path) -> None:
    """Rope tensors are copied once per block; many of them in a many-block file would make the
    plan quadratic in the file's size, so more than three copies per file tensor are refused."""
    ropes = [f"r{i}.rope_freqs.weight" for i in range(4)]
    blocks = [f"blk.{i}.w" for i in range(4)]
    path = _llama(4, *ropes, *blocks).write(tmp_path / "rope.gguf")
    with GGUFFile(path) as f:
        # 4 rope tensors x 4 blocks = 16 copies <= 3 x 8 tensors
        plan = plan_placement(f.tensors, 4, path=f.path)
        assert len(plan.tensors) == 16 + 4
        # 4 rope tensors x 7 blocks = 28 copies > 3 x 8 tensors; the 4th rope tensor overflows
        with pytest.raises(ModelFileError, match=r'rope tensor "r3\.rope_freqs\.weight"') as e:
            plan_placement(f.tensors, 7, path=f.path)
        assert e.value.offset == f.tensors[3].info_offset
    # three rope kinds per block always fit
    kinds = ["rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"]
    path = _llama(3, *kinds).write(tmp_path / "kinds.gguf")
    with GGUFFile(path) as f:
        assert len(plan_placement(f.tensors, 3, path=f.path).tensors) == 9


# -- header counts -------------------------------------------------------------------------------
def test_tensor_count_beyond_what_follows_the_metadata(tmp_path: Path) -> None:
    """A tensor count that fits the file but not the bytes left after the metadata is refused
    before any tensor info is read."""
    raw = RawGGUF().kv("pad", V.STRING, "x" * 200)
    raw.n_tensors = 5  # 5 x 24 bytes fit in the whole file, not after the 200-byte string
    raw.alignment = 1
    err = _fails(raw.write(tmp_path / "t.gguf"), "tensor count 5 cannot fit in the 0 bytes")
    assert err.offset == 8


@pytest.mark.parametrize("count", [(1, 2**64 - 1), (2**64 - 1, 1), (2**32, 2**32)])
def test_huge_header_counts(tmp_path: Path, count: tuple[int, int]) -> None:
    """Counts beyond the file's size are refused at the header."""
    raw = RawGGUF()
    raw.n_tensors, raw.n_kv = count
    assert _fails(raw.write(tmp_path / "c.gguf"), "cannot fit").offset == 8


# -- array lengths of every element type ---------------------------------------------------------
def _array_file(etype: GGUFValueType, count: int, n: int) -> RawGGUF:
    """One array ``arr`` of length field ``count`` followed by exactly ``n`` minimal elements."""
    payload = struct.pack("<IQ", int(etype), count) + bytes(ELEMENT_SIZES[etype] * n)
    raw = RawGGUF().kv_raw("arr", int(V.ARRAY), payload)
    raw.alignment = 1  # no padding: the array ends the file
    return raw


@pytest.mark.parametrize("etype", list(ELEMENT_SIZES), ids=lambda t: t.name)
def test_array_length_checked_against_remaining_bytes(tmp_path: Path, etype: GGUFValueType) -> None:
    """An array of N elements needs N times the smallest element: N fits exactly, N+1 does not,
    and 2**64-1 fails the same way (naming the key and the length's offset)."""
    with GGUFFile(_array_file(etype, 10, 10).write(tmp_path / "ok.gguf")) as f:
        kv = f.metadata["arr"]
        assert kv.elem_type is etype and len(kv.to_python()) == 10  # type: ignore[arg-type]
    for count in (11, 2**32, 2**63, 2**64 - 1):
        path = _array_file(etype, count, 10).write(tmp_path / f"a{count}.gguf")
        err = _fails(path, f"array length {count} of {etype.name.lower()} needs at least")
        assert err.key == "arr" and err.offset == HEADER + 8 + 3 + 4 + 4


@pytest.mark.parametrize("etype", [int(V.ARRAY), 13, 2**32 - 1])
def test_nested_or_unknown_array_elements(tmp_path: Path, etype: int) -> None:
    """Arrays of arrays are not GGUF; the element type is refused before the length is used."""
    payload = struct.pack("<IQ", etype, 2**64 - 1)
    path = RawGGUF().kv_raw("arr", int(V.ARRAY), payload).write(tmp_path / "n.gguf")
    assert _fails(path, f"invalid array type: {etype}").key == "arr"


# -- string lengths ------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [2**64 - 1, 2**63, 10**6])
def test_string_array_element_length(tmp_path: Path, length: int) -> None:
    """One string of a string array claiming more bytes than the file has names the element."""
    payload = struct.pack("<IQ", int(V.STRING), 2) + gguf_string("ok") + struct.pack("<Q", length)
    path = RawGGUF().kv_raw("toks", int(V.ARRAY), payload + b"abc").write(tmp_path / "s.gguf")
    err = _fails(path, "end of file reading string array element 1")
    assert err.key == "toks"


@pytest.mark.parametrize("length", [2**64 - 1, 2**40])
def test_tensor_name_length(tmp_path: Path, length: int) -> None:
    """A tensor name longer than the file is refused at the tensor info."""
    data = bytearray(RawGGUF().tensor("w", (4,), 0).build())
    struct.pack_into("<Q", data, HEADER, length)
    path = tmp_path / "n.gguf"
    path.write_bytes(bytes(data))
    assert _fails(path, "end of file reading tensor name").offset == HEADER + 8


# -- dimensions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_dims", [5, 2**16, 2**31])
def test_n_dims_refused_before_dims_are_read(tmp_path: Path, n_dims: int) -> None:
    """n_dims above 4 is refused at the tensor, without reading that many dimensions."""
    data = bytearray(RawGGUF().tensor("w", (4,), 0).build())
    struct.pack_into("<I", data, HEADER + 9, n_dims)
    path = tmp_path / "d.gguf"
    path.write_bytes(bytes(data))
    assert _fails(path, f"{n_dims} dimensions").offset == HEADER


@pytest.mark.parametrize(
    "ne",
    [(2**64 - 1,), (2**63,), (2**16, 2**16, 2**16, 2**16), (2**32, 2**32), (1, 1, 1, 2**64 - 1)],
)
def test_element_count_overflow(tmp_path: Path, ne: tuple[int, ...]) -> None:
    """A shape whose element count does not fit int64 is refused (no overflow, no allocation)."""
    path = RawGGUF().tensor("w", ne, 0).write(tmp_path / "e.gguf")
    assert _fails(path, 'tensor "w" has too many elements').offset == HEADER


@pytest.mark.parametrize("ne", [(0,), (4, 0, 2), (1, 1, 1, 0)])
def test_zero_dimension(tmp_path: Path, ne: tuple[int, ...]) -> None:
    """A dimension of size 0 is refused, naming which."""
    path = RawGGUF().tensor("w", ne, 0).write(tmp_path / "z.gguf")
    _fails(path, f"dimension {ne.index(0)} of size 0")


def test_countable_but_huge_tensor(tmp_path: Path) -> None:
    """2**62 bytes of F32 fit int64 elements but not the file: refused by size, not read."""
    path = RawGGUF().tensor("w", (2**30, 2**30), 0).write(tmp_path / "h.gguf")
    _fails(path, r'tensor "w" offset\+size \(\d+\) exceeds file size')


# -- alignment -----------------------------------------------------------------------------------
@pytest.mark.parametrize("alignment", [2**31, 2**32 - 1, 3 * 2**20])
def test_huge_alignment(tmp_path: Path, alignment: int) -> None:
    """An alignment that moves the data start past the end of the file puts every tensor past
    the end: refused by size, nothing is padded or allocated."""
    raw = RawGGUF().kv("general.alignment", V.UINT32, alignment).tensor("w", (4,), 0)
    raw.data = bytes(16)
    err = _fails(raw.write(tmp_path / "a.gguf"), r'tensor "w" offset\+size \(\d+\) exceeds')
    assert err.offset is not None


def test_alignment_of_another_type_is_ignored(tmp_path: Path) -> None:
    """Only a uint32 general.alignment counts (a uint64 one leaves the default of 32)."""
    raw = RawGGUF().kv("general.alignment", V.UINT64, 2**63).tensor("w", (4,), 0)
    raw.data = bytes(16)
    with GGUFFile(raw.write(tmp_path / "a.gguf")) as f:
        assert f.alignment == 32 and f.data_start % 32 == 0
