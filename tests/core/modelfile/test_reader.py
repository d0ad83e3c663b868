"""GGUFFile on valid files: metadata types, tensor infos, data views, layout and read-only use."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize
from model_files import ALL_TYPES, K_TYPES, LlamaModel, RawGGUF, retype_tensor

from mlplug.dtypes import DType
from mlplug.errors import ModelFileError
from mlplug.modelfile import KV, GGUFFile, TensorInfo, tensor_type_size

Q = GGMLQuantizationType
V = GGUFValueType

SCALARS: list[tuple[str, V, object]] = [
    ("t.u8", V.UINT8, 255),
    ("t.i8", V.INT8, -128),
    ("t.u16", V.UINT16, 65535),
    ("t.i16", V.INT16, -32768),
    ("t.u32", V.UINT32, 2**32 - 1),
    ("t.i32", V.INT32, -(2**31)),
    ("t.f32", V.FLOAT32, 0.5),
    ("t.bool", V.BOOL, True),
    ("t.str", V.STRING, "héllo ✓"),
    ("t.u64", V.UINT64, 2**64 - 1),
    ("t.i64", V.INT64, -(2**63)),
    ("t.f64", V.FLOAT64, 0.1),
]
ARRAYS: list[tuple[str, V, list[object]]] = [
    ("a.u8", V.UINT8, [0, 1, 255]),
    ("a.i8", V.INT8, [-1, 2]),
    ("a.u16", V.UINT16, [1, 65535]),
    ("a.i16", V.INT16, [-2, 3]),
    ("a.u32", V.UINT32, [7, 2**32 - 1]),
    ("a.i32", V.INT32, [-5, 6, 7]),
    ("a.f32", V.FLOAT32, [1.5, -2.25]),
    ("a.bool", V.BOOL, [True, False, True]),
    ("a.str", V.STRING, ["a", "", "ü"]),
    ("a.u64", V.UINT64, [2**64 - 1]),
    ("a.i64", V.INT64, [-(2**63), 1]),
    ("a.f64", V.FLOAT64, [0.1, 1e300]),
]


def _all_types(w: GGUFWriter) -> None:
    for key, vtype, value in SCALARS:
        w.add_key_value(key, value, vtype)
    for key, etype, values in ARRAYS:
        w.add_key_value(key, values, V.ARRAY, sub_type=etype)


def test_every_metadata_type_keeps_its_gguf_type(make_llama: Callable[..., LlamaModel]) -> None:
    """Each scalar and array type decodes to its value and keeps its GGUF (element) type."""
    m = make_llama(extra_kv=_all_types)
    with GGUFFile(m.path) as f:
        for key, vtype, value in SCALARS:
            kv = f.metadata[key]
            assert kv.type is vtype and kv.elem_type is None
            want = (
                float(np.float32(value))
                if vtype is V.FLOAT32 and isinstance(value, float)
                else value
            )
            assert kv.value == want
            assert type(kv.value) is type(value)
        for key, etype, values in ARRAYS:
            kv = f.metadata[key]
            assert kv.type is V.ARRAY and kv.elem_type is etype
            assert kv.to_python() == values
            assert len(kv.value) == len(values)  # type: ignore[arg-type]
            if etype is not V.STRING:
                assert isinstance(kv.value, np.ndarray) and not kv.value.flags.writeable


@pytest.mark.parametrize("etype", [V.INT32, V.STRING, V.BOOL])
def test_empty_array(tmp_path: Path, etype: GGUFValueType) -> None:
    """An empty array decodes with its element type (the gguf writer cannot write one)."""
    raw = RawGGUF().kv_raw("e", int(V.ARRAY), struct.pack("<IQ", int(etype), 0))
    with GGUFFile(raw.write(tmp_path / "e.gguf")) as f:
        kv = f.metadata["e"]
        assert kv.elem_type is etype and kv.to_python() == []


def test_bool_nonzero_is_true(tmp_path: Path) -> None:
    """A bool byte other than 0/1 reads as true (Go's binary.Read semantics)."""
    raw = RawGGUF().kv_raw("b", int(V.BOOL), b"\x07")
    raw.kv_raw("a", int(V.ARRAY), struct.pack("<IQ", int(V.BOOL), 2) + b"\x00\x02")
    with GGUFFile(raw.write(tmp_path / "b.gguf")) as f:
        assert f.metadata["b"].value is True
        assert f.metadata["a"].to_python() == [False, True]


def test_metadata_order_and_parameter_count(llama: LlamaModel) -> None:
    """Keys come in file order; general.parameter_count (uint64) is the element total."""
    with GGUFFile(llama.path) as f:
        keys = list(f.metadata)
        assert keys[0] == "general.architecture" and keys[-1] == "general.parameter_count"
        total = sum(int(np.prod(ne)) for ne in llama.ne.values())
        assert f.parameter_count == total
        kv = f.metadata["general.parameter_count"]
        assert kv.type is V.UINT64 and kv.value == total


def test_existing_parameter_count_is_replaced(make_llama: Callable[..., LlamaModel]) -> None:
    """A parameter_count stored in the file is overwritten with the decoder's count."""
    m = make_llama(extra_kv=lambda w: w.add_uint32("general.parameter_count", 7))
    with GGUFFile(m.path) as f:
        kv = f.metadata["general.parameter_count"]
        assert kv.type is V.UINT64 and kv.value == f.parameter_count != 7


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda q: q.name)
def test_tensor_infos_and_bytes_every_type(
    make_llama: Callable[..., LlamaModel], qtype: GGMLQuantizationType
) -> None:
    """Infos match GGUFReader's; the bytes decode to the values written."""
    m = make_llama(n_embd=256, n_vocab=8, block_count=1, type_mix=(qtype,), tied_output=False)
    reader = GGUFReader(m.path)
    with GGUFFile(m.path) as f:
        assert [t.name for t in f.tensors] == m.names
        for info, ref in zip(f.tensors, reader.tensors, strict=True):
            assert info.ne == m.ne[info.name] == tuple(ref.shape.tolist())
            assert info.ggml_type == int(ref.tensor_type) == int(m.types[info.name])
            assert info.file_offset == ref.data_offset == f.data_start + info.offset
            assert info.nbytes == ref.n_bytes
            assert info.n_elements == int(np.prod(info.ne))
            assert info.dtype.traits.ggml_type == info.ggml_type
            raw = np.frombuffer(f.tensor_bytes(info), dtype=np.uint8)
            t = Q(info.ggml_type)
            got = raw.view(np.float32) if t == Q.F32 else dequantize(raw, t)
            assert np.array_equal(np.asarray(got).reshape(-1), m.expected[info.name].reshape(-1))
        assert f.tensor("blk.0.attn_q.weight") is f.tensors[2]
        assert f.tensor("nope") is None


def test_k_quant_sizes() -> None:
    """K-quant type ids size as 256-element super-blocks; ollama's id 4 is MXFP4 (32 in 17)."""
    assert tensor_type_size(4) == (32, 17)
    assert tensor_type_size(39) == (32, 17)
    for q in K_TYPES:
        assert tensor_type_size(int(q))[0] == 256  # type: ignore[index]
    assert tensor_type_size(23) == (256, 136)  # IQ4_XS: known to gguf, no DType
    assert tensor_type_size(5) is None


def test_ollama_mxfp4_type_4(make_llama: Callable[..., LlamaModel]) -> None:
    """Type id 4 decodes as MXFP4 with 17-byte blocks; the id is kept for the loader."""
    m = make_llama(type_mix=(Q.MXFP4,), block_count=1)
    retype_tensor(m.path, "blk.0.attn_q.weight", 4)
    with GGUFFile(m.path) as f:
        t = f.tensor("blk.0.attn_q.weight")
        assert t is not None and t.dtype is DType.MXFP4 and t.ggml_type == 4
        assert t.nbytes == 64 * 64 // 32 * 17


def test_type_without_dtype_decodes_as_other(tmp_path: Path) -> None:
    """A ggml type mlplug has no DType for (IQ4_XS) decodes with dtype OTHER and its real size."""
    raw = RawGGUF().tensor("w", (256, 2), 23)
    raw.data = bytes(2 * 136)
    with GGUFFile(raw.write(tmp_path / "iq.gguf")) as f:
        assert f.tensors[0].dtype is DType.OTHER and f.tensors[0].nbytes == 272


def test_alignment_data_start_and_end(make_llama: Callable[..., LlamaModel]) -> None:
    """general.alignment sets the data start; end of data pads each tensor to it."""
    m = make_llama(alignment=64, n_vocab=3, n_embd=32, type_mix=(Q.F16,))
    with GGUFFile(m.path) as f:
        assert f.alignment == 64 and f.data_start % 64 == 0
        pos = f.data_start
        for t in f.tensors:
            pos += -pos % 64
            assert t.file_offset == pos
            pos += t.nbytes
        assert f.data_end == pos <= f.file_size


def test_alignment_of_other_type_falls_back_to_32(tmp_path: Path) -> None:
    """A general.alignment that is not uint32 is ignored (ollama's exact-type rule)."""
    raw = RawGGUF().kv("general.alignment", V.UINT64, 64).tensor("w", (4,), 0)
    raw.data = bytes(16)
    with GGUFFile(raw.write(tmp_path / "a.gguf")) as f:
        assert f.alignment == 32 and f.data_start % 32 == 0


def test_zero_tensor_file(tmp_path: Path) -> None:
    """A file with one key and no tensors is valid; data start equals data end."""
    path = RawGGUF().kv("general.architecture", V.STRING, "test").write(tmp_path / "z.gguf")
    with GGUFFile(path) as f:
        assert f.tensors == () and f.parameter_count == 0 and f.data_end == f.data_start
        assert list(f) == []


def test_version_2_accepted(tmp_path: Path) -> None:
    """GGUF version 2 has the same layout as 3 and is accepted."""
    raw = RawGGUF(version=2).kv("general.architecture", V.STRING, "x").tensor("w", (8,), 0)
    raw.data = struct.pack("<8f", *range(8))
    with GGUFFile(raw.write(tmp_path / "v2.gguf")) as f:
        assert f.version == 2
        assert np.frombuffer(f.tensor_bytes("w"), np.float32).tolist() == list(range(8))


@pytest.mark.parametrize("magic", [b"GGUF", b"FUGG"])
def test_big_endian(tmp_path: Path, magic: bytes) -> None:
    """Big-endian files (gguf package's GGUF magic or ollama's swapped magic) decode."""
    raw = RawGGUF(order=">", magic=magic).kv("k.u32", V.UINT32, 258)
    raw.kv_raw(
        "k.arr", int(V.ARRAY), struct.pack(">IQ", int(V.INT16), 2) + struct.pack(">hh", 1, -2)
    )
    raw.tensor("w", (2, 3), 0)
    raw.data = struct.pack(">6f", *range(6))
    with GGUFFile(raw.write(tmp_path / "be.gguf")) as f:
        assert f.byte_order == "big"
        assert f.metadata["k.u32"].value == 258
        assert f.metadata["k.arr"].to_python() == [1, -2]
        assert f.tensors[0].ne == (2, 3)
        assert np.frombuffer(f.tensor_bytes("w"), ">f4").tolist() == list(range(6))


def test_big_endian_from_gguf_writer(make_llama: Callable[..., LlamaModel]) -> None:
    """A big-endian file from GGUFWriter decodes to the same structure as the little-endian one."""
    le, be = make_llama(), make_llama(big_endian=True)
    with GGUFFile(le.path) as a, GGUFFile(be.path) as b:
        assert (a.byte_order, b.byte_order) == ("little", "big")
        assert [t.ne for t in a.tensors] == [t.ne for t in b.tensors]
        assert {k: v.to_python() for k, v in a.metadata.items()} == {
            k: v.to_python() for k, v in b.metadata.items()
        }


def test_file_is_not_modified(make_llama: Callable[..., LlamaModel]) -> None:
    """Opening, reading every tensor and closing leaves the file's bytes and mtime unchanged."""
    m = make_llama(type_mix=(Q.Q8_0, Q.F16))
    before = m.path.read_bytes()
    past = 1_000_000_000
    os.utime(m.path, (past, past))
    with GGUFFile(m.path) as f:
        for t in f.tensors:
            bytes(f.tensor_bytes(t))
        with pytest.raises(TypeError):
            f.tensor_bytes(f.tensors[0])[0] = 1
    assert m.path.read_bytes() == before
    assert os.stat(m.path).st_mtime == past


def test_close_is_idempotent_and_views_survive(llama: LlamaModel) -> None:
    """close() twice is fine; a view taken before close stays readable; after close, none."""
    f = GGUFFile(llama.path)
    info = f.tensors[0]
    view = f.tensor_bytes(info)
    f.close()
    f.close()
    assert f.closed
    assert np.array_equal(np.frombuffer(view, np.float32), llama.expected[info.name].reshape(-1))
    view.release()
    with pytest.raises(ValueError, match="closed"):
        f.tensor_bytes(info)
    with pytest.raises(KeyError):
        f.tensor_bytes("missing")


def test_kv_and_tensor_info_records() -> None:
    """KV and TensorInfo are plain records."""
    kv = KV(V.UINT32, 3)
    assert kv.to_python() == 3 and kv.offset == -1
    info = TensorInfo("w", (4,), DType.F32, 0, 0, 32, 16, 4, 24)
    assert info.nbytes == 16


def test_missing_and_directory(tmp_path: Path) -> None:
    """A missing path or a directory raises ModelFileError naming the path."""
    with pytest.raises(ModelFileError, match="No such file") as e:
        GGUFFile(tmp_path / "nope.gguf")
    assert e.value.path == str(tmp_path / "nope.gguf")
    assert isinstance(e.value.__cause__, FileNotFoundError)
    with pytest.raises(ModelFileError, match="directory"):
        GGUFFile(tmp_path)
