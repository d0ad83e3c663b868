"""Built passes run again with new inputs: same logits as a fresh build, freed with the model."""

from __future__ import annotations

import resource
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_files import TinyModel, write_gemma3, write_llama

import mlplug as ml
from mlplug.context import Context
from mlplug.kvcache import KVCache
from mlplug.models import Gemma3, Llama
from mlplug.models.decoder import Decoder
from mlplug.models.passes import BuiltPass, PassCache
from mlplug.registry import manager
from mlplug.tensor import Tensor

BACKENDS: list[str] = [entry.name for entry in manager().backends()]
PROMPT = [2, 7, 11, 3, 5]

pytestmark = pytest.mark.skipif(not BACKENDS, reason="no backend plugin installed")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_llama(tmp_path_factory.mktemp("reuse") / "l.gguf", "f32", seed=3)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_gemma3(tmp_path_factory.mktemp("reuse") / "g.gguf", seed=5)


def open_model(
    t: TinyModel, backend: str, arch: str, threads: int = 0, **kw: Any
) -> tuple[ml.Backend, Decoder]:
    params = ml.BackendParams(alloc_memory=True, num_threads=threads)
    be = ml.new_backend(str(t.path), params, backend=backend)
    be.load()
    cls = Llama if arch == "llama" else Gemma3
    model: Decoder = cls(be, kv_dtype="f32", **kw)
    return be, model


def decode(model: Decoder, steps: int, batch: int = 1) -> list[np.ndarray]:
    """The prompt's logits, then ``steps`` passes of ``batch`` tokens (token = argmax)."""
    n = len(PROMPT)
    out = [model.forward(PROMPT, range(n), outputs=range(n))]
    tok = int(np.argmax(out[-1][-1]))
    for _ in range(steps):
        toks = [(tok + j) % model.vocab_size for j in range(batch)]
        out.append(model.forward(toks, range(n, n + batch), outputs=range(batch)))
        n += batch
        tok = int(np.argmax(out[-1][-1]))
    return out


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_reuse_equals_a_fresh_build_at_every_step(
    llama: TinyModel, gemma: TinyModel, backend_name: str, arch: str
) -> None:
    """Reused passes give the logits of passes built anew, across buckets and the ring's wrap.

    A history bucket of 8 cells changes the history length every 8 tokens on a backend without
    cache padding (the gemma ring of window 4 + 3 cells wraps many times); single steps and
    batches of 3 alternate keys.
    """
    t = llama if arch == "llama" else gemma
    kw = {"num_ctx": 128, "max_batch": 3, "history_bucket": 8}
    be, fresh = open_model(t, backend_name, arch, **kw)
    with be, fresh:
        fresh.reuse_passes = False
        want = decode(fresh, 30) + decode_more(fresh)
        assert len(fresh.passes) == 0
        fresh.reset()
        reused = type(fresh)(be, kv_dtype="f32", **kw)
        with reused:
            got = decode(reused, 30) + decode_more(reused)
            assert reused.passes.hits > 20
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=f"pass {step}")


def decode_more(model: Decoder) -> list[np.ndarray]:
    """Three more passes of 3 tokens after :func:`decode` (positions go on)."""
    start = _next_position(model)
    out = []
    for k in range(3):
        p = start + 3 * k
        out.append(model.forward([1, 2, 3], range(p, p + 3), outputs=[0, 2]))
    return out


def _next_position(model: Decoder) -> int:
    caches = getattr(model.cache, "caches", [model.cache])
    return max(int(c.cell_pos.max()) for c in caches) + 1


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_reuse_builds_once_per_shape(llama: TinyModel, backend_name: str) -> None:
    """40 single-token steps with a bucket of 16 build one pass per history length."""
    be, model = open_model(llama, backend_name, "llama", num_ctx=128, history_bucket=16)
    with be, model:
        decode(model, 40)
        step = model.cache.history_step  # type: ignore[attr-defined]
        lengths = {min(-(-n // step) * step, model.capacity) for n in range(6, 46)}
        assert model.passes.builds == 1 + len(lengths)  # the prompt, then one per length
        assert model.passes.hits == 40 - len(lengths)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_passes_are_freed_with_the_model(llama: TinyModel, backend_name: str) -> None:
    """close() frees every kept pass's context; at most ``kept`` passes stay."""
    be, model = open_model(llama, backend_name, "llama", num_ctx=128)
    with be:
        model.passes.kept = 2
        for batch in (1, 2, 3):  # four shapes: the prompt's and one per batch size
            decode(model, 3, batch)
        kept = list(model.passes)
        assert len(kept) == 2 and model.passes.builds > 2
        assert all(not p.ctx.closed for p in kept)
        model.close()
        assert len(model.passes) == 0 and all(p.ctx.closed for p in kept)


def test_pass_cache_evicts_least_recently_used() -> None:
    """The least recently used pass is closed when a new one goes past ``kept``."""

    class Fake(BuiltPass):
        def __init__(self) -> None:
            self.closed = False

        def close(self) -> None:
            self.closed = True

    cache = PassCache(kept=2)
    a, b, c = Fake(), Fake(), Fake()
    assert cache.put("a", a) and cache.put("b", b)
    assert cache.get("a") is a  # now b is the least recently used
    cache.put("c", c)
    assert b.closed and not a.closed and cache.get("b") is None
    assert list(cache) == [a, c] and cache.builds == 3 and cache.hits == 1
    none = PassCache(kept=0)
    assert not none.put("a", Fake()) and len(none) == 0


class _BeginOnly(KVCache):
    """A cache that implements only the required methods (no refill): passes always build."""

    def __init__(self, inner: KVCache) -> None:
        self.inner = inner
        self.max_batch = inner.max_batch

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def begin(self, ctx: Context, positions: Sequence[int]) -> None:
        self.inner.begin(ctx, positions)

    def put(self, ctx: Context, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.inner.put(ctx, layer, k, v)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()


def test_cache_without_refill_builds_every_pass(llama: TinyModel) -> None:
    """A third-party cache without prepare/bind still works: nothing is kept."""
    be, model = open_model(llama, BACKENDS[0], "llama", num_ctx=64)
    with be, model:
        want = decode(model, 6)
        kept, builds = len(model.passes), model.passes.builds
        model.reset()
        model.cache = _BeginOnly(model.cache)
        got = decode(model, 6)
        assert (len(model.passes), model.passes.builds) == (kept, builds)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def _rss_bytes() -> int:
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * resource.getpagesize()


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_rss_of_a_long_decode_stays_flat(llama: TinyModel, backend_name: str) -> None:
    """1,000 decode steps: resident memory after the first window grows by < 16 MB."""
    be, model = open_model(llama, backend_name, "llama", threads=1, num_ctx=1024)
    with be, model:
        tok, window = 1, 256
        for p in range(1000):
            tok = int(np.argmax(model.forward([tok], [p])[0]))
            if p == window:
                base = _rss_bytes()
        grown = _rss_bytes() - base
    assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MB after the first window"
