"""Config: architecture prefixing, exact-type getters, defaults and the added parameter count."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFValueType, GGUFWriter
from model_files import LlamaModel, RawGGUF

from mlplug.modelfile import KV, Config, GGUFFile

V = GGUFValueType


def _typed(w: GGUFWriter) -> None:
    w.add_uint64("llama.u64", 5)
    w.add_int32("llama.i32", 6)
    w.add_uint8("llama.u8", 7)
    w.add_uint16("llama.u16", 8)
    w.add_float64("llama.f64", 0.25)
    w.add_float32("llama.f32", 0.1)
    w.add_bool("llama.flag", True)
    w.add_string("llama.s", "x")
    w.add_key_value("llama.ai32", [1, -2], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("llama.au32", [1, 2], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("llama.af32", [0.5, 1.5], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("llama.af64", [0.5], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("llama.ab", [True, False], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("llama.as", ["p", "q"], V.ARRAY, sub_type=V.STRING)
    w.add_uint32("general.custom", 9)
    w.add_uint32("tokenizer.custom", 10)


@pytest.fixture
def cfg(make_llama: Callable[..., LlamaModel]) -> Config:
    """Config of a llama file with extra keys of every type."""
    m = make_llama(extra_kv=_typed)
    with GGUFFile(m.path) as f:
        return Config(f.metadata)


def test_prefixing(cfg: Config) -> None:
    """Keys outside general./tokenizer. get the architecture prefix; those two do not."""
    assert cfg.architecture() == "llama"
    assert cfg.uint("block_count") == 2 == cfg.block_count()
    assert cfg.uint("llama.block_count") == 0  # becomes llama.llama.block_count
    assert cfg.uint("general.custom") == 9 and cfg.uint("tokenizer.custom") == 10
    assert cfg.string("general.name") == "mlplug test llama"
    assert cfg.strings("tokenizer.ggml.tokens") == [f"tok{i}" for i in range(32)]
    assert cfg.uint("context_length") == 128 and cfg.uint("embedding_length") == 64


def test_unknown_architecture_prefix() -> None:
    """Without general.architecture the prefix is `unknown.`."""
    cfg = Config({"unknown.block_count": KV(V.UINT32, 4), "block_count": KV(V.UINT32, 5)})
    assert cfg.architecture() == "unknown" and cfg.block_count() == 4


def test_architecture_must_be_a_string() -> None:
    """A non-string general.architecture reads as unknown."""
    assert Config({"general.architecture": KV(V.UINT32, 1)}).architecture() == "unknown"


@pytest.mark.parametrize("key", ["u64", "i32", "u8", "u16", "f32", "s", "missing"])
def test_uint_needs_uint32(cfg: Config, key: str) -> None:
    """uint reads only uint32 values; other integer types give the default."""
    assert cfg.uint(key) == 0 and cfg.uint(key, 42) == 42


def test_scalar_exact_types(cfg: Config) -> None:
    """float reads float32 only; string and bool their own types."""
    assert cfg.float("f32") == float(np.float32(0.1))
    assert cfg.float("f64") == 0.0 and cfg.float("f64", 2.0) == 2.0
    assert cfg.float("attention.layer_norm_rms_epsilon") == float(np.float32(1e-5))
    assert cfg.string("s") == "x" and cfg.string("u64") == "" and cfg.string("u64", "d") == "d"
    assert cfg.bool("flag") is True and cfg.bool("u8") is False and cfg.bool("nope", True) is True


def test_float_default_is_float32(cfg: Config) -> None:
    """A float default is returned as the float32 Go would hold."""
    assert cfg.float("missing", 0.1) == float(np.float32(0.1)) != 0.1


def test_array_exact_types(cfg: Config) -> None:
    """ints reads int32 arrays, floats float32, bools bool, strings string; else the default."""
    assert cfg.ints("ai32") == [1, -2]
    assert cfg.ints("au32") is None and cfg.ints("au32", [3]) == [3]
    assert cfg.floats("af32") == [0.5, 1.5] and cfg.floats("af64") is None
    assert cfg.bools("ab") == [True, False] and cfg.bools("ai32") is None
    assert cfg.strings("as") == ["p", "q"] and cfg.strings("ai32", ["z"]) == ["z"]
    assert cfg.ints("i32") is None  # a scalar is not an array
    assert cfg.strings("missing") is None


def test_lists_are_copies(cfg: Config) -> None:
    """Returned lists and defaults are fresh lists the caller may change."""
    a = cfg.ints("ai32")
    assert a is not None
    a.append(9)
    assert cfg.ints("ai32") == [1, -2]
    default = [1]
    got = cfg.ints("missing", default)
    assert got == default and got is not default


def test_value_keys_len(cfg: Config, make_llama: Callable[..., LlamaModel]) -> None:
    """value() is a raw lookup; keys()/len() include general.parameter_count."""
    assert cfg.value("block_count") is None
    assert cfg.value("llama.block_count") == 2
    arr = cfg.value("llama.ai32")
    assert isinstance(arr, np.ndarray) and arr.tolist() == [1, -2]
    assert cfg.value("llama.as") == ("p", "q")
    keys = cfg.keys()
    assert "general.parameter_count" in keys and "llama.u64" in keys
    assert len(cfg) == cfg.len() == len(keys) == len(set(keys))
    assert "llama.u64" in cfg and "u64" not in cfg and list(cfg) == keys
    kv = cfg.kv("general.parameter_count")
    assert kv is not None and kv.type is V.UINT64
    m = make_llama()
    with GGUFFile(m.path) as f:
        assert Config(f.metadata).uint("general.parameter_count") == 0  # uint64, not uint32
        assert Config(f.metadata).value("general.parameter_count") == f.parameter_count


@pytest.mark.parametrize(
    ("stored", "name"),
    [
        (KV(V.UINT32, 1), "F16"),
        (KV(V.UINT32, 15), "Q4_K_M"),
        (KV(V.UINT32, 2), "Q4_0"),
        (KV(V.UINT32, 4), "MXFP4"),
        (KV(V.UINT32, 32), "BF16"),
        (KV(V.UINT32, 0), "unknown"),
        (KV(V.UINT32, 999), "unknown"),
        (KV(V.UINT64, 1), "unknown"),
        (None, "unknown"),
    ],
)
def test_file_type(stored: KV | None, name: str) -> None:
    """file_type names general.file_type when it is a uint32 > 0, else `unknown`."""
    md = {"general.file_type": stored} if stored is not None else {}
    assert Config(md).file_type() == name


def test_alignment_via_config(tmp_path: Path) -> None:
    """uint("general.alignment", 32) gives the file's alignment or the default."""
    raw = RawGGUF().kv("general.alignment", V.UINT32, 64)
    raw.kv_raw(
        "unknown.x", int(V.ARRAY), struct.pack("<IQ", int(V.INT32), 1) + struct.pack("<i", -1)
    )
    with GGUFFile(raw.write(tmp_path / "a.gguf")) as f:
        cfg = Config(f.metadata)
        assert cfg.uint("general.alignment", 32) == 64 == f.alignment
        assert cfg.ints("unknown.x") is None and cfg.ints("x") == [-1]
