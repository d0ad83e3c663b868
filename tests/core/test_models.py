"""Tests for mlplug.models: the llama architecture against a float64 numpy llama, and ``run``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize, quantize

import mlplug as ml
from mlplug.cli import main
from mlplug.dtypes import DType
from mlplug.models import Llama, Model, architectures, load_model
from mlplug.registry import manager

BACKENDS: list[str] = [entry.name for entry in manager().backends()]
KINDS = ("f32", "f16", "q8_0")
#: Max |logit error| allowed against the float64 reference (|logits| <= 3), per weight type.
#: F16: activations are rounded to F16 as ggml does; Q8_0: ggml also quantises them to Q8_0.
TOLERANCE = {"f32": 1e-4, "f16": 5e-3, "q8_0": 1e-1}
PROMPT = [1, 5, 9, 2, 30, 7, 3]

needs_backend = pytest.mark.skipif(not BACKENDS, reason="no backend plugin installed")


@dataclass(frozen=True)
class Tiny:
    """A tiny llama GGUF and the float64 weights it holds (numpy orientation: (out, in))."""

    path: Path
    weights: dict[str, np.ndarray]
    layers: int = 2
    d: int = 64
    heads: int = 4
    heads_kv: int = 2
    vocab: int = 32
    ff: int = 96
    eps: float = 1e-5
    base: float = 10000.0


def write_tiny(path: Path, kind: str, arch: str = "llama", seed: int = 0) -> Tiny:
    """Write a random 2-layer llama (d 64, 4 heads, 2 kv heads, vocab 32) with ``kind`` matrices."""
    t = Tiny(path, {})
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), arch)
    w.add_block_count(t.layers)
    w.add_embedding_length(t.d)
    w.add_head_count(t.heads)
    w.add_head_count_kv(t.heads_kv)
    w.add_layer_norm_rms_eps(t.eps)
    w.add_rope_freq_base(t.base)
    w.add_rope_dimension_count(t.d // t.heads)
    w.add_context_length(128)
    w.add_feed_forward_length(t.ff)

    def matrix(name: str, rows: int, cols: int) -> None:
        a = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        if kind == "f16":
            w.add_tensor(name, a.astype(np.float16))
            t.weights[name] = a.astype(np.float16).astype(np.float64)
        elif kind == "q8_0":
            q = quantize(a, GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=GGMLQuantizationType.Q8_0)
            t.weights[name] = dequantize(q, GGMLQuantizationType.Q8_0).astype(np.float64)
        else:
            w.add_tensor(name, a)
            t.weights[name] = a.astype(np.float64)

    def vector(name: str, spread: float) -> None:
        a = (1 + spread * rng.standard_normal(t.d)).astype(np.float32)
        w.add_tensor(name, a)
        t.weights[name] = a.astype(np.float64)

    hd = t.d // t.heads
    matrix("token_embd.weight", t.vocab, t.d)
    for i in range(t.layers):
        vector(f"blk.{i}.attn_norm.weight", 0.1)
        matrix(f"blk.{i}.attn_q.weight", t.heads * hd, t.d)
        matrix(f"blk.{i}.attn_k.weight", t.heads_kv * hd, t.d)
        matrix(f"blk.{i}.attn_v.weight", t.heads_kv * hd, t.d)
        matrix(f"blk.{i}.attn_output.weight", t.d, t.heads * hd)
        vector(f"blk.{i}.ffn_norm.weight", 0.1)
        matrix(f"blk.{i}.ffn_gate.weight", t.ff, t.d)
        matrix(f"blk.{i}.ffn_up.weight", t.ff, t.d)
        matrix(f"blk.{i}.ffn_down.weight", t.d, t.ff)
    vector("output_norm.weight", 0.0)  # no output.weight: tied to token_embd
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return t


def reference_logits(t: Tiny, tokens: list[int]) -> np.ndarray:
    """Return float64 logits ``(len(tokens), vocab)`` of llama's math, written independently."""
    w, hd, n = t.weights, t.d // t.heads, len(tokens)

    def norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        out: np.ndarray = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + t.eps) * weight
        return out

    def rope(x: np.ndarray) -> np.ndarray:  # (n, heads, hd), NORMAL mode: adjacent pairs
        theta = np.arange(n)[:, None] * t.base ** (-np.arange(0, hd, 2) / hd)[None, :]
        cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    x = w["token_embd.weight"][tokens]
    causal = np.triu(np.full((n, n), -np.inf), k=1)
    for i in range(t.layers):
        b = f"blk.{i}."
        h = norm(x, w[b + "attn_norm.weight"])
        q = rope((h @ w[b + "attn_q.weight"].T).reshape(n, t.heads, hd))
        k = rope((h @ w[b + "attn_k.weight"].T).reshape(n, t.heads_kv, hd))
        v = (h @ w[b + "attn_v.weight"].T).reshape(n, t.heads_kv, hd)
        group = t.heads // t.heads_kv
        att = np.empty((n, t.heads, hd))
        for head in range(t.heads):
            g = head // group
            s = q[:, head] @ k[:, g].T / np.sqrt(hd) + causal
            p = np.exp(s - s.max(axis=-1, keepdims=True))
            att[:, head] = (p / p.sum(axis=-1, keepdims=True)) @ v[:, g]
        x = x + att.reshape(n, -1) @ w[b + "attn_output.weight"].T
        h = norm(x, w[b + "ffn_norm.weight"])
        gate = h @ w[b + "ffn_gate.weight"].T
        up = h @ w[b + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[b + "ffn_down.weight"].T
    out: np.ndarray = norm(x, w["output_norm.weight"]) @ w["token_embd.weight"].T
    return out


@pytest.fixture(scope="module", params=KINDS)
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """The tiny llama in each weight type."""
    kind: str = request.param
    return write_tiny(tmp_path_factory.mktemp("models") / f"tiny-{kind}.gguf", kind)


@pytest.fixture(scope="module")
def tiny_f32(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """The tiny llama with F32 matrices."""
    return write_tiny(tmp_path_factory.mktemp("models") / "tiny-f32.gguf", "f32")


def open_model(
    t: Tiny, backend: str, flash: ml.FlashAttentionType = ml.FlashAttentionType.DISABLED
) -> tuple[ml.Backend, Model]:
    """Load ``t`` on ``backend`` and build its model with a 32-position cache."""
    params = ml.BackendParams(alloc_memory=True, flash_attention=flash)
    be = ml.new_backend(str(t.path), params, backend=backend)
    be.load()
    return be, load_model(be, num_ctx=32)


def kind_of(t: Tiny) -> str:
    """Return the weight type a Tiny was written with."""
    return t.path.stem.removeprefix("tiny-")


def test_registry_lists_llama() -> None:
    """``architectures`` maps ``general.architecture`` to the class (and the doctest runs)."""
    import doctest

    import mlplug.models

    assert architectures["llama"] is Llama
    assert doctest.testmod(mlplug.models).failed == 0


@needs_backend
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_forward_matches_numpy_reference(tiny: Tiny, backend_name: str) -> None:
    """Logits at every prompt position match the float64 numpy llama."""
    be, model = open_model(tiny, backend_name)
    with be, model:
        got = model.forward(PROMPT, range(len(PROMPT)), outputs=range(len(PROMPT)))
    want = reference_logits(tiny, PROMPT)
    assert got.shape == (len(PROMPT), tiny.vocab) and got.dtype == np.float32
    tol = TOLERANCE[kind_of(tiny)]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@needs_backend
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_cached_decode_equals_full_recompute(tiny_f32: Tiny, backend_name: str) -> None:
    """Prefill then one-token steps through the KV cache give the full recompute's logits."""
    be, model = open_model(tiny_f32, backend_name)
    with be, model:
        steps = [model.forward(PROMPT[:4], range(4))[0]]
        steps += [model.forward([PROMPT[p]], [p])[0] for p in range(4, len(PROMPT))]
        model.reset()
        full = model.forward(PROMPT, range(len(PROMPT)), outputs=range(3, len(PROMPT)))
    np.testing.assert_allclose(np.stack(steps), full, rtol=1e-5, atol=1e-5)


@needs_backend
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_greedy_tokens_agree_on_every_backend(tiny_f32: Tiny, backend_name: str) -> None:
    """``generate`` gives the reference's greedy tokens and last prompt logits everywhere."""
    be, model = open_model(tiny_f32, backend_name)
    with be, model:
        gen = model.generate(PROMPT[:3], 6)
    seq = PROMPT[:3]
    for _ in range(6):
        seq = [*seq, int(np.argmax(reference_logits(tiny_f32, seq)[-1]))]
    assert gen.tokens == seq[3:]
    want = reference_logits(tiny_f32, PROMPT[:3])[-1]
    np.testing.assert_allclose(gen.prompt_logits, want, rtol=1e-4, atol=1e-4)
    assert gen.prompt_tokens_per_s > 0 and gen.decode_tokens_per_s > 0


@pytest.mark.skipif("cpu_numpy" not in BACKENDS, reason="cpu_numpy not installed")
@pytest.mark.parametrize(
    "config",
    [
        ml.CacheConfig(cache_padding=8, permuted_v=True, mask_dtype=DType.OTHER),
        ml.CacheConfig(cache_padding=16, permuted_v=False, mask_dtype=DType.F16),
        ml.CacheConfig(),
    ],
    ids=["padded-permuted-v", "padded-f16-mask", "default"],
)
def test_cache_follows_backend_cache_config(
    tiny_f32: Tiny, config: ml.CacheConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Padding, a transposed V cache and an F16 mask change the layout, never the logits."""
    be, model = open_model(tiny_f32, "cpu_numpy")
    model.close()
    monkeypatch.setattr(be, "cache_config", lambda: config)
    with be, load_model(be, num_ctx=20) as model:
        assert model.capacity % max(config.cache_padding, 1) == 0 and model.capacity >= 20
        steps = [model.forward(PROMPT[:5], range(5))[0]]
        steps += [model.forward([PROMPT[p]], [p])[0] for p in range(5, len(PROMPT))]
    want = reference_logits(tiny_f32, PROMPT)[4:]
    np.testing.assert_allclose(np.stack(steps), want, rtol=2e-3, atol=2e-3)


@pytest.mark.skipif("ggml" not in BACKENDS, reason="ggml not installed")
def test_ggml_flash_attention(tiny_f32: Tiny) -> None:
    """With flash attention (F16 mask, V not permuted) ggml still matches the reference."""
    be, model = open_model(tiny_f32, "ggml", ml.FlashAttentionType.ENABLED)
    with be, model:
        got = model.forward(PROMPT, range(len(PROMPT)), outputs=range(len(PROMPT)))
    np.testing.assert_allclose(got, reference_logits(tiny_f32, PROMPT), rtol=1e-4, atol=1e-4)


@needs_backend
def test_generate_checks_capacity(tiny_f32: Tiny) -> None:
    """Asking for more positions than the cache holds is a ShapeError."""
    be, model = open_model(tiny_f32, BACKENDS[-1])
    with be, model, pytest.raises(ml.ShapeError, match="cache holds"):
        model.generate(PROMPT, model.capacity)


@needs_backend
def test_cli_run_json_and_logits(
    tiny_f32: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mlplug run --json --logits-out`` prints README.md's keys and saves the prompt logits."""
    out = tmp_path / "logits.npy"
    tokens = ",".join(map(str, PROMPT))
    argv = ["run", str(tiny_f32.path), "--prompt-tokens", tokens, "-n", "5", "--json"]
    assert main([*argv, "--logits-out", str(out)]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert set(data) == {"tokens", "prompt_tokens_per_s", "decode_tokens_per_s"}
    assert len(data["tokens"]) == 5 and data["decode_tokens_per_s"] > 0
    assert "tokens/s" in captured.err
    logits = np.load(out)
    assert logits.shape == (tiny_f32.vocab,)
    np.testing.assert_allclose(logits, reference_logits(tiny_f32, PROMPT)[-1], atol=1e-3)
    assert data["tokens"][0] == int(np.argmax(logits))


@needs_backend
def test_cli_run_plain_output(tiny_f32: Tiny, capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``--json`` stdout is the comma-separated token ids, speed goes to stderr."""
    backend = BACKENDS[-1]
    assert (
        main(["run", str(tiny_f32.path), "-b", backend, "--prompt-tokens", "1,2", "-n", "3"]) == 0
    )
    captured = capsys.readouterr()
    assert len(captured.out.strip().split(",")) == 3
    assert f"backend {backend}" in captured.err


@needs_backend
def test_cli_run_unsupported_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An architecture without a model class is a one-line error listing the supported ones."""
    t = write_tiny(tmp_path / "other.gguf", "f32", arch="gpt2")
    assert main(["run", str(t.path), "--prompt-tokens", "1,2"]) == 1
    err = capsys.readouterr().err
    assert "'gpt2' is not supported" in err and "llama" in err


@needs_backend
def test_cli_run_rejects_token_outside_vocab(
    tiny_f32: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prompt token id outside the vocabulary is an error, not a crash."""
    assert main(["run", str(tiny_f32.path), "--prompt-tokens", "1,99"]) == 1
    assert "[0, 32)" in capsys.readouterr().err
