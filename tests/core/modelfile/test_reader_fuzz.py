"""Property: mutated GGUF files either decode consistently or raise ModelFileError, quickly."""

from __future__ import annotations

import struct
from datetime import timedelta
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from model_files import RawGGUF, gguf_string, write_llama_gguf
from model_helpers import CpuNumpyBackend

import mlplug as ml
from mlplug.dtypes import align_up
from mlplug.errors import ModelFileError
from mlplug.modelfile import Config, GGUFFile, plan_placement

Q = GGMLQuantizationType
V = GGUFValueType
HUGE = [0, 1, 2**31, 2**32 - 1, 2**60, 2**63, 2**64 - 1]


def _raw_base() -> bytes:
    raw = (
        RawGGUF().kv("general.architecture", V.STRING, "llama").kv("llama.block_count", V.UINT32, 2)
    )
    raw.kv_raw(
        "tok",
        int(V.ARRAY),
        struct.pack("<IQ", int(V.STRING), 3) + b"".join(gguf_string(s) for s in "abc"),
    )
    raw.kv_raw(
        "ids", int(V.ARRAY), struct.pack("<IQ", int(V.INT32), 3) + struct.pack("<3i", 1, 2, 3)
    )
    raw.kv("f", V.FLOAT32, 1.5).kv("b", V.BOOL, True)
    raw.tensor("token_embd.weight", (32, 2), int(Q.Q8_0), 0).tensor("blk.1.w", (4, 2), 0, 96)
    raw.data = bytes(128)
    return raw.build()


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, int]]:
    """Valid base files with the length of their header region (where mutations are aimed)."""
    path = tmp_path_factory.mktemp("fuzzbase") / "llama.gguf"
    write_llama_gguf(
        path, block_count=1, n_embd=32, n_vocab=4, type_mix=(Q.Q4_0, Q.F16), rope_freqs=True
    )
    llama = path.read_bytes()
    raw = _raw_base()
    return [(raw, len(raw) - 128), (llama, int(GGUFReader(path).data_offset))]


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 16)),
    st.tuples(st.just("u64"), st.floats(0, 1), st.sampled_from(HUGE)),
    st.tuples(st.just("u32"), st.floats(0, 1), st.sampled_from(HUGE[:4])),
)


def _mutate(data: bytes, region: int, muts: list[tuple[str, float, int | bytes]]) -> bytes:
    buf = bytearray(data)
    for kind, where, arg in muts:
        pos = min(int(where * region), max(len(buf) - 1, 0))
        n = arg if isinstance(arg, int) else 0
        if kind == "flip" and buf:
            buf[pos] ^= n
        elif kind == "truncate":
            del buf[int(where * len(buf)) :]
        elif kind == "insert" and isinstance(arg, bytes):
            buf[pos:pos] = arg
        elif kind == "delete":
            del buf[pos : pos + n]
        elif kind in ("u64", "u32"):
            fmt = "<Q" if kind == "u64" else "<I"
            if pos + struct.calcsize(fmt) <= len(buf):
                struct.pack_into(fmt, buf, pos, n & (0xFFFFFFFF if kind == "u32" else 2**64 - 1))
    return bytes(buf)


@settings(
    max_examples=300,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(which=st.integers(0, 1), muts=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_files_only_raise_model_file_error(
    bases: list[tuple[bytes, int]],
    tmp_path_factory: pytest.TempPathFactory,
    which: int,
    muts: list[tuple[str, float, int | bytes]],
) -> None:
    """Random flips, truncations, insertions and huge length fields give ModelFileError or a
    consistent decode; never another exception."""
    data, region = bases[which]
    path = tmp_path_factory.getbasetemp() / "fuzz.gguf"
    path.write_bytes(_mutate(data, region, muts))
    try:
        f = GGUFFile(path)
    except ModelFileError as err:
        assert err.path == str(path)
        assert err.offset is not None or err.key is not None
        return
    with f:
        size = f.file_size
        assert (f.version in (2, 3) and f.data_start <= f.data_end) or not f.tensors
        for t in f.tensors:
            assert t.file_offset + t.nbytes <= size
            assert len(f.tensor_bytes(t)) == t.nbytes
        cfg = Config(f.metadata)
        cfg.block_count(), cfg.file_type(), cfg.strings("tokenizer.ggml.tokens"), cfg.ints("ids")
        for key in cfg.keys():
            f.metadata[key].to_python()
        _plan(f)


def _plan(f: GGUFFile) -> None:
    """Plan placement with the file's own block count: a plan or ModelFileError, nothing else."""
    cfg = Config(f.metadata)
    key = cfg.key("block_count")
    try:
        plan = plan_placement(f.tensors, cfg.block_count(), path=f.path, block_count_key=key)
    except ModelFileError as err:
        assert err.path == f.path and (err.offset is not None or err.key is not None)
        return
    assert plan.block_count <= len(f.tensors)
    assert len(plan.tensors) <= 4 * len(f.tensors) + 1  # tied output, rope copies bounded


def count_fields(data: bytes) -> list[tuple[int, int]]:
    """Return ``(offset, width)`` of every count, length, type and dimension field of a valid
    little-endian GGUF file, and of the value of any ``*.block_count``."""
    fields = [(8, 8), (16, 8)]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string() -> bytes:
        nonlocal pos
        fields.append((pos, 8))
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n
        return data[pos - n : pos]

    def u32() -> int:
        nonlocal pos
        fields.append((pos, 4))
        pos += 4
        return int(struct.unpack_from("<I", data, pos - 4)[0])

    for _ in range(n_kv):
        key = string()
        vtype = V(u32())
        if vtype is V.ARRAY:
            etype = V(u32())
            fields.append((pos, 8))
            (count,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            for _ in range(count if etype is V.STRING else 0):
                string()
            if etype is not V.STRING:
                pos += count * struct.calcsize(_FORMATS[etype])
        elif vtype is V.STRING:
            string()
        else:
            size = struct.calcsize(_FORMATS[vtype])
            if key.endswith(b".block_count"):
                fields.append((pos, size))
            pos += size
    for _ in range(n_tensors):
        string()
        for _ in range(u32()):
            fields.append((pos, 8))
            pos += 8
        u32()
        fields.append((pos, 8))
        pos += 8
    return fields


_FORMATS = {
    V.UINT8: "B",
    V.INT8: "b",
    V.UINT16: "H",
    V.INT16: "h",
    V.UINT32: "I",
    V.INT32: "i",
    V.FLOAT32: "f",
    V.BOOL: "B",
    V.UINT64: "Q",
    V.INT64: "q",
    V.FLOAT64: "d",
}


@settings(
    max_examples=300,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(which=st.integers(0, 1), data=st.data())
def test_huge_counts_only_raise_model_file_error(
    bases: list[tuple[bytes, int]],
    tmp_path_factory: pytest.TempPathFactory,
    which: int,
    data: st.DataObject,
) -> None:
    """Any count, length, type or dimension field (block_count's value included) set to a huge
    or just-too-large value gives ModelFileError or a consistent decode and a bounded plan; a
    dry-run backend opens it or raises ModelFileError."""
    raw, _ = bases[which]
    fields = count_fields(raw)
    buf = bytearray(raw)
    n_tensors = struct.unpack_from("<Q", raw, 8)[0]
    for _ in range(data.draw(st.integers(1, 3), label="fields")):
        at, width = data.draw(st.sampled_from(fields), label="field")
        top = 2 ** (8 * width) - 1
        values = [*HUGE, len(raw), len(raw) // 8 + 1, len(raw) // 24 + 1, n_tensors + 1, 5]
        value = data.draw(st.sampled_from(values), label="value") & top
        struct.pack_into("<Q" if width == 8 else "<I", buf, at, value)
    path = tmp_path_factory.getbasetemp() / "counts.gguf"
    path.write_bytes(bytes(buf))
    try:
        f = GGUFFile(path)
    except ModelFileError as err:
        assert err.path == str(path) and (err.offset is not None or err.key is not None)
        event("refused by the reader")
        return
    with f:
        for t in f.tensors:
            assert t.file_offset + t.nbytes <= f.file_size
        for kv in f.metadata.values():
            kv.to_python()
        _plan(f)
    if CpuNumpyBackend is not None:
        params = ml.BackendParams(alloc_memory=False)
        try:
            be = ml.new_backend(str(path), params, backend="cpu_numpy")
        except ModelFileError as err:
            assert err.path == str(path)
            event("refused at backend creation")
        else:
            event("opened by a dry-run backend")
            with be:
                assert be.block_count <= len(f.tensors)
                assert len(be.backend_memory().cpu.weights) == be.block_count + 1


def test_count_fields_cover_the_header(bases: list[tuple[bytes, int]], tmp_path: Path) -> None:
    """The field locator the count fuzzing aims with walks the whole header of both bases."""
    for i, (raw, _) in enumerate(bases):
        fields = count_fields(raw)
        path = tmp_path / f"base{i}.gguf"
        path.write_bytes(raw)
        with GGUFFile(path) as f:
            at, width = fields[-1]  # the last tensor's data offset ends the tensor infos
            assert align_up(at + width, f.alignment) == f.data_start
            n_dims = sum(len(t.ne) for t in f.tensors)
            assert len(fields) >= 2 + 2 * len(f.metadata) + 4 * len(f.tensors) + n_dims - 2
