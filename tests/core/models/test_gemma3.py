"""Gemma 3 on tiny generated files against an independent float64 numpy Gemma 3, every backend.

The tiny model has 7 layers (layer 5 global, the rest sliding with a window of 4 keys), so the
prompts below reach well past the window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_files import TinyModel, gemma3_logits, write_gemma3

import mlplug as ml
from mlplug.models import Gemma3, load_model
from mlplug.registry import manager

BACKENDS: list[str] = [entry.name for entry in manager().backends()]
PROMPT = [2, 7, 11, 3, 40, 5, 9, 1, 33, 17, 8, 21]
TOL = 1e-3

pytestmark = pytest.mark.skipif(not BACKENDS, reason="no backend plugin installed")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny gemma3 with F32 matrices and no soft-cap."""
    return write_gemma3(tmp_path_factory.mktemp("gemma") / "g.gguf")


def open_gemma(
    t: TinyModel, backend: str, *, kv_dtype: str = "f32", **kw: int
) -> tuple[ml.Backend, Gemma3]:
    """Load ``t`` on ``backend`` with a 64-position cache."""
    be = ml.new_backend(str(t.path), ml.BackendParams(alloc_memory=True), backend=backend)
    be.load()
    model = Gemma3(be, num_ctx=64, kv_dtype=kv_dtype, **kw)
    return be, model


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_every_position_matches_reference(tiny: TinyModel, backend_name: str) -> None:
    """Logits at all 12 positions (window 4, one global layer) match the numpy Gemma 3."""
    be, model = open_gemma(tiny, backend_name)
    with be, model:
        got = model.forward(PROMPT, range(len(PROMPT)), outputs=range(len(PROMPT)))
    np.testing.assert_allclose(got, gemma3_logits(tiny, PROMPT), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_softcap_and_load_model(tmp_path: Path, backend_name: str) -> None:
    """``load_model`` picks Gemma3 by architecture; a final soft-cap bounds the logits."""
    t = write_gemma3(tmp_path / "cap.gguf", softcap=1.5, seed=4, layers=6)
    be = ml.new_backend(str(t.path), ml.BackendParams(alloc_memory=True), backend=backend_name)
    be.load()
    with be, load_model(be, num_ctx=32, kv_dtype="f32") as model:
        assert isinstance(model, Gemma3) and model.vocab_size == t.vocab
        got = model.forward(PROMPT[:6], range(6), outputs=range(6))
    assert np.abs(got).max() < 1.5
    np.testing.assert_allclose(got, gemma3_logits(t, PROMPT[:6]), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_decode_through_the_ring_equals_reference(
    tiny: TinyModel, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 3 through a sliding cache of window + 3 cells (it wraps) give the same logits.

    Positions are fed as prompt batches and single steps; the sliding-window cache reuses its
    cells, the global layer's cache keeps everything. (Cells unpadded, so the ring is small.)
    """
    be = ml.new_backend(str(tiny.path), ml.BackendParams(alloc_memory=True), backend=backend_name)
    be.load()
    cfg = be.cache_config()
    unpadded = ml.CacheConfig(cache_padding=1, permuted_v=cfg.permuted_v, mask_dtype=cfg.mask_dtype)
    monkeypatch.setattr(be, "cache_config", lambda: unpadded)
    model = Gemma3(be, num_ctx=64, kv_dtype="f32", max_batch=3)
    with be, model:
        local = model.cache.caches[0]  # type: ignore[attr-defined]
        assert local.cells < len(PROMPT)
        rows = [model.forward(PROMPT[:7], range(7), outputs=range(7))]  # split into 3 + 3 + 1
        rows += [model.forward([PROMPT[p]], [p]) for p in range(7, len(PROMPT))]
    got = np.concatenate(rows)
    np.testing.assert_allclose(got, gemma3_logits(tiny, PROMPT), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_f16_cache_by_default(tiny: TinyModel, backend_name: str) -> None:
    """The default cache is f16; the logits stay within its rounding of the reference."""
    be = ml.new_backend(str(tiny.path), ml.BackendParams(alloc_memory=True), backend=backend_name)
    be.load()
    with be, Gemma3(be, num_ctx=32) as model:
        assert all(c.dtype == ml.DType.F16 for c in model.cache.caches)  # type: ignore[attr-defined]
        got = model.forward(PROMPT, range(len(PROMPT)), outputs=range(len(PROMPT)))
    np.testing.assert_allclose(got, gemma3_logits(tiny, PROMPT), rtol=2e-2, atol=2e-2)


def test_greedy_tokens_agree_across_backends(tiny: TinyModel) -> None:
    """Greedy generation gives the reference's tokens on every backend."""
    seq = PROMPT[:4]
    for _ in range(6):
        seq = [*seq, int(np.argmax(gemma3_logits(tiny, seq)[-1]))]
    for name in BACKENDS:
        be, model = open_gemma(tiny, name)
        with be, model:
            assert model.generate(PROMPT[:4], 6).tokens == seq[4:], name
