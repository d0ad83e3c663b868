"""Backend.load: weights equal the file's dequantised data; progress, cancel, file safety."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize
from model_files import ALL_TYPES, K_TYPES, LlamaModel, retype_tensor
from model_helpers import BACKENDS, open_backend, read_weight

import mlplug as ml
from mlplug.dtypes import DType
from mlplug.errors import GraphError, LoadCancelledError, ModelFileError
from mlplug.modelfile import GGUFFile
from mlplug.modelfile.loader import CHUNK_BYTES, bf16_to_f32_bytes, mxfp4_reorder
from mlplug.modelfile.model import open_model

Q = GGMLQuantizationType
MakeLlama = Callable[..., LlamaModel]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """Each installed backend."""
    return str(request.param)


def assert_close_f16(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Equal within float16 rounding of the values' scale."""
    expected = np.asarray(expected, np.float32).reshape(-1)
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(got, expected, rtol=2**-10, atol=scale * 2**-11, err_msg=what)


# -- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda q: q.name)
def test_weights_equal_dequantized_file(make_llama: MakeLlama, backend_name: str, qtype: Q) -> None:
    """Every weight read back through the backend equals gguf.quants.dequantize of the file."""
    n = 256 if qtype in K_TYPES else 64
    model = make_llama(block_count=1, n_embd=n, n_ff=n, n_vocab=8, type_mix=(qtype,))
    with open_backend(model.path, backend_name, alloc_memory=True) as be:
        be.load()
        with GGUFFile(model.path) as gf:
            for name in model.names:
                t = be.get(name)
                assert t is not None, name
                got = read_weight(be, t)
                raw = np.array(gf.tensor_bytes(name))
                direct = dequantize(raw, Q(model.types[name]))  # the file's data, decoded
                assert_close_f16(got, direct, name)
                assert_close_f16(got, model.expected[name], name)
        tied = be.get("output.weight")
        assert tied is not None
        assert_close_f16(read_weight(be, tied), model.expected["token_embd.weight"], "output")


def test_rope_copies_and_bf16_exps_bias(make_llama: MakeLlama, backend_name: str) -> None:
    """rope_freqs goes to every layer's copy; BF16 *_exps.bias is widened to F32 exactly."""
    model = make_llama(
        block_count=2,
        rope_freqs=True,
        extra_tensors=[
            ("blk.1.ffn_gate_exps.bias", (64, 4), Q.BF16),
            ("blk.0.ffn_norm.bias", (64,), Q.BF16),  # not an _exps.bias: stays BF16
        ],
    )
    with open_backend(model.path, backend_name, alloc_memory=True) as be:
        be.load()
        for i in range(2):
            copy = be.get(f"blk.{i}.rope_freqs.weight")
            assert copy is not None
            np.testing.assert_array_equal(
                read_weight(be, copy), model.expected["rope_freqs.weight"].reshape(-1)
            )
        bias = be.get("blk.1.ffn_gate_exps.bias")
        assert bias is not None and bias.dtype == DType.F32
        np.testing.assert_array_equal(
            read_weight(be, bias), model.expected["blk.1.ffn_gate_exps.bias"].reshape(-1)
        )
        norm = be.get("blk.0.ffn_norm.bias")
        assert norm is not None and norm.dtype == DType.BF16
        mem = be.backend_memory()
        assert mem.cpu.weights[1] >= 64 * 4 * 4  # counted at the F32 size


def _reorder_reference(raw: bytes) -> bytes:
    """The MXFP4 re-interleave of ``mxfp4_reorder``'s docstring, byte by byte."""
    out = bytearray(raw)
    for start in range(0, len(raw), 17):
        blk = raw[start : start + 17]
        for k in range(1, 9):
            a, b = blk[k], blk[k + 8]
            out[start + 2 * (k - 1) + 1] = (a & 0x0F) | ((b << 4) & 0xFF)
            out[start + 2 * (k - 1) + 2] = (a >> 4) | (b & 0xF0)
    return bytes(out)


def test_mxfp4_reorder_matches_byte_loop() -> None:
    """The vectorised re-interleave equals the per-byte loop; BF16 widening is exact."""
    raw = np.random.default_rng(1).integers(0, 256, 17 * 40, dtype=np.uint8)
    assert mxfp4_reorder(raw).tobytes() == _reorder_reference(raw.tobytes())
    bits = np.array([0x3F80, 0xC000, 0x7F80, 0x0001], dtype="<u2")
    widened = bf16_to_f32_bytes(bits.view(np.uint8)).view("<f4")
    assert widened[:3].tolist() == [1.0, -2.0, float("inf")]
    assert widened.view("<u4")[3] == 0x00010000


def test_raw_mxfp4_file_type_is_reinterleaved(make_llama: MakeLlama, backend_name: str) -> None:
    """File type 4 (ollama's raw MXFP4) is loaded as ggml MXFP4 after the re-interleave."""
    model = make_llama(block_count=1, type_mix=(Q.MXFP4,), n_vocab=4096)  # token_embd > 128 KiB
    names = ["blk.0.attn_q.weight", "token_embd.weight"]
    for name in names:
        retype_tensor(model.path, name, 4)
    with open_backend(model.path, backend_name, alloc_memory=True) as be:
        be.load()
        with GGUFFile(model.path) as gf:
            for name in [*names, "output.weight"]:
                t = be.get(name)
                assert t is not None and t.dtype == DType.MXFP4
                source = "token_embd.weight" if name == "output.weight" else name
                fixed = _reorder_reference(bytes(gf.tensor_bytes(source)))
                expected = dequantize(np.frombuffer(fixed, np.uint8), Q.MXFP4)
                assert_close_f16(read_weight(be, t), expected, name)
        untouched = be.get("blk.0.attn_k.weight")  # still type 39: no re-interleave
        assert untouched is not None
        assert_close_f16(
            read_weight(be, untouched), model.expected["blk.0.attn_k.weight"], "attn_k"
        )


def test_big_endian_file(make_llama: MakeLlama, backend_name: str) -> None:
    """F32/F16 data of a big-endian file is byte-swapped to the values written."""
    model = make_llama(type_mix=(Q.F16, Q.F32), big_endian=True, n_vocab=2048)
    with open_backend(model.path, backend_name, alloc_memory=True) as be:
        be.load()
        for name in model.names:
            t = be.get(name)
            assert t is not None
            np.testing.assert_array_equal(read_weight(be, t), model.expected[name].reshape(-1))


# -- progress -------------------------------------------------------------------------------------
def test_progress_monotone_to_one_from_one_thread(make_llama: MakeLlama, backend_name: str) -> None:
    """progress rises monotonically, ends at exactly 1.0, all calls on the loading thread."""
    model = make_llama(n_embd=1024, n_vocab=1024, block_count=2, alignment=64)
    assert 1024 * 1024 * 4 > 2 * CHUNK_BYTES  # token_embd alone spans several chunks
    calls: list[tuple[float, int]] = []
    with open_backend(model.path, backend_name, alloc_memory=True) as be:
        be.load(lambda f: calls.append((f, threading.get_ident())))
        values = [f for f, _ in calls]
        assert len(values) > len(model.names)
        assert all(0.0 < v <= 1.0 for v in values)
        assert values == sorted(values)
        assert values[-1] == 1.0
        assert {tid for _, tid in calls} == {threading.get_ident()}
        w = be.get("token_embd.weight")
        assert w is not None
        np.testing.assert_array_equal(
            read_weight(be, w), model.expected["token_embd.weight"].reshape(-1)
        )


# -- cancellation and failures --------------------------------------------------------------------
def test_cancel_before_load(llama: LlamaModel, backend_name: str) -> None:
    """A set event stops the load before any data; the backend is closed, nothing held."""
    be = open_backend(llama.path, backend_name, alloc_memory=True)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(LoadCancelledError) as err:
        be.load(cancel=cancel)
    assert err.value.done == 0
    assert be.hook_held_bytes() == {-1: 0}
    assert be.get("token_embd.weight") is None
    with pytest.raises(GraphError, match="closed"):
        be.load()


def test_cancel_midway(make_llama: MakeLlama, backend_name: str) -> None:
    """Setting the event from the progress callback stops the load at the next chunk."""
    model = make_llama(n_embd=1024, n_vocab=1024)
    cancel = threading.Event()
    calls: list[float] = []

    def progress(f: float) -> None:
        calls.append(f)
        cancel.set()

    be = open_backend(model.path, backend_name, alloc_memory=True)
    with pytest.raises(LoadCancelledError) as err:
        be.load(progress, cancel=cancel)
    assert len(calls) == 1 and calls[0] < 1.0
    assert 0 < err.value.done < err.value.total
    assert be.hook_held_bytes() == {-1: 0}
    be.close()


def test_file_changed_after_open(llama: LlamaModel, backend_name: str) -> None:
    """A file truncated or rewritten between open and load is refused; the backend is closed."""
    be = open_backend(llama.path, backend_name, alloc_memory=True)
    data = llama.path.read_bytes()
    llama.path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelFileError, match="changed since it was opened"):
        be.load()
    assert be.hook_held_bytes() == {-1: 0}


def test_file_unchanged_by_load(llama: LlamaModel, backend_name: str) -> None:
    """Opening, loading and closing leave the file's bytes and mtime as they were."""
    before = hashlib.sha256(llama.path.read_bytes()).hexdigest()
    mtime = os.stat(llama.path).st_mtime_ns
    with open_backend(llama.path, backend_name, alloc_memory=True) as be:
        be.load()
    assert hashlib.sha256(llama.path.read_bytes()).hexdigest() == before
    assert os.stat(llama.path).st_mtime_ns == mtime


def test_staged_writer_fallback(make_llama: MakeLlama) -> None:
    """A backend without host views loads through the staging writer with the same values."""
    cpu_numpy = pytest.importorskip("mlplug_cpu_numpy")

    class NoHostView(cpu_numpy.CpuNumpyBackend):  # type: ignore[misc,name-defined]
        def hook_host_buffer(self, t: ml.Tensor) -> memoryview | None:
            return None

    model = make_llama(type_mix=(Q.Q8_0, Q.F16), n_vocab=4096)
    path = str(model.path)
    with open_model(NoHostView(path, ml.BackendParams(alloc_memory=True)), path) as be:
        calls: list[float] = []
        be.load(calls.append)
        assert calls[-1] == 1.0 and calls == sorted(calls)
        for name in model.names:
            t = be.get(name)
            assert t is not None
            assert_close_f16(read_weight(be, t), model.expected[name], name)
