"""The llama architecture against a float64 numpy llama (every backend), and ``mlplug run``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from model_files import TinyModel, llama_logits, write_llama

import mlplug as ml
from mlplug.cli import main
from mlplug.dtypes import DType
from mlplug.models import Gemma3, Llama, Model, architectures, load_model
from mlplug.registry import manager

BACKENDS: list[str] = [entry.name for entry in manager().backends()]
KINDS = ("f32", "f16", "q8_0")
#: Max |logit error| allowed against the float64 reference (|logits| <= 3), per weight type.
#: F16: activations are rounded to F16 as ggml does; Q8_0: ggml also quantises them to Q8_0.
TOLERANCE = {"f32": 1e-4, "f16": 5e-3, "q8_0": 1e-1}
PROMPT = [1, 5, 9, 2, 30, 7, 3]

needs_backend = pytest.mark.skipif(not BACKENDS, reason="no backend plugin installed")


Tiny = TinyModel


def write_tiny(path: Path, kind: str, arch: str = "llama", seed: int = 0) -> Tiny:
    """Write the tiny llama (tied output) with ``kind`` matrices."""
    return write_llama(path, kind, arch=arch, seed=seed)


def reference_logits(t: Tiny, tokens: list[int]) -> np.ndarray:
    """Return the float64 reference logits of ``tokens`` at positions 0…n-1."""
    return llama_logits(t, tokens)


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
    return be, load_model(be, num_ctx=32, kv_dtype="f32")


def kind_of(t: Tiny) -> str:
    """Return the weight type a Tiny was written with."""
    return t.path.stem.removeprefix("tiny-")


@needs_backend
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize(
    ("bias", "freqs", "tied"),
    [(True, False, True), (False, True, False), (True, True, False)],
    ids=["qkv-bias", "rope-freqs-untied", "all"],
)
def test_llama_variants_match_reference(
    tmp_path: Path, backend_name: str, bias: bool, freqs: bool, tied: bool
) -> None:
    """q/k/v biases (qwen2 files), rope_freqs divisors and an untied output are all applied."""
    t = write_llama(tmp_path / "v.gguf", "f32", bias=bias, freqs=freqs, tied=tied, seed=3)
    be, model = open_model(t, backend_name)
    with be, model:
        got = model.forward(PROMPT, range(len(PROMPT)), outputs=range(len(PROMPT)))
    np.testing.assert_allclose(got, llama_logits(t, PROMPT), rtol=1e-4, atol=1e-4)


@needs_backend
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_f16_cache_is_the_default_and_stays_close(tiny_f32: Tiny, backend_name: str) -> None:
    """The default KV cache is f16: logits within f16 rounding of the f32 cache's."""
    be = ml.new_backend(
        str(tiny_f32.path), ml.BackendParams(alloc_memory=True), backend=backend_name
    )
    be.load()
    with be, load_model(be, num_ctx=32) as model:
        got = model.forward(PROMPT, range(len(PROMPT)), outputs=range(len(PROMPT)))
        assert model.cache.dtype == DType.F16  # type: ignore[attr-defined]
    want = reference_logits(tiny_f32, PROMPT)
    assert np.abs(got - want).max() > 0
    np.testing.assert_allclose(got, want, rtol=5e-3, atol=5e-3)


def test_registry_lists_llama() -> None:
    """``architectures`` maps ``general.architecture`` to the class (and the doctest runs)."""
    import doctest

    import mlplug.models

    assert architectures["llama"] is Llama
    assert architectures["gemma3"] is Gemma3
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
    with be, load_model(be, num_ctx=20, kv_dtype="f32") as model:
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
    np.testing.assert_allclose(logits, reference_logits(tiny_f32, PROMPT)[-1], atol=5e-3)
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
