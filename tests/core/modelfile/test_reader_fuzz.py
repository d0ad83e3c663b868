"""Property: mutated GGUF files either decode consistently or raise ModelFileError, quickly."""

from __future__ import annotations

import struct
from datetime import timedelta

import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelfile_fixtures import RawGGUF, gguf_string, write_llama_gguf

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
        try:
            plan_placement(f.tensors, min(cfg.block_count(), 64), path=f.path)
        except ModelFileError:
            pass
