"""The optional torch.compile path: repeating graphs compile once and replay correctly."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("mlplug_torch")


from mlplug import DType, Tensor
from mlplug_torch import TorchBackend
from mlplug_torch.compile import compile_backend_from_env


def _floats(t: Tensor) -> np.ndarray:
    v = t.floats()
    assert v is not None, f"{t!r} was not computed"
    return v


# torch's own modules warn about their deprecated internals while compiling
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _decode_step(
    be: TorchBackend, w: Tensor, cache: Tensor, pos: int, act: str = "silu"
) -> list[float]:
    """One "token": a projection, norm, activation and rope written into a cache row, then a
    readout."""
    with be.new_context() as c:
        x = c.input().from_floats(np.random.default_rng(pos).standard_normal(16).astype(np.float32))
        h = getattr(w.mulmat(c, x).rms_norm(c, None, 1e-6), act)(c)
        p = c.input().from_ints([pos], 1)
        k = h.reshape(c, 32, 1, 1).rope(c, p, 32, 10000.0, 1.0)
        c.forward(cache.set_rows(c, k.reshape(c, 32, 1), p))
        window = cache.view(c, 0, 32, cache.stride(1), 4)
        out = window.softmax(c).sum_rows(c)
        top = window.top_k(c, 2)
        c.compute(out, top)
        return [*_floats(out).tolist(), *top.contiguous(c).shape]


def _run(be: TorchBackend, steps: int, act: str = "silu") -> tuple[list[list[float]], np.ndarray]:
    with be.new_context() as ctx:
        w = ctx.input().from_floats(
            np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
        )
        cache = ctx.input().zeros(DType.F32, 32, 4)
        outs = [_decode_step(be, w, cache, i, act) for i in range(steps)]
        final = cache.contiguous(ctx)
        ctx.compute(final)
        return outs, _floats(final)


def test_option_values() -> None:
    """``MLPLUG_TORCH_COMPILE`` values: off, inductor, or a backend name."""
    assert compile_backend_from_env(None) is None
    assert compile_backend_from_env("0") is None
    assert compile_backend_from_env("1") == "inductor"
    assert compile_backend_from_env("aot_eager") == "aot_eager"


def test_env_var_enables_compilation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment variable turns the compiler on; the default is eager."""
    monkeypatch.setenv("MLPLUG_TORCH_COMPILE", "aot_eager")
    with TorchBackend(None, device="cpu") as be:
        assert be.compiler is not None and be.compiler.backend == "aot_eager"
    monkeypatch.delenv("MLPLUG_TORCH_COMPILE")
    with TorchBackend(None, device="cpu") as be:
        assert be.compiler is None


@pytest.mark.parametrize("act", ["silu", "gelu"])  # gelu: ggml's f16 table, a lookup
def test_repeated_graph_compiles_once_and_matches_eager(act: str) -> None:
    """A decode-like graph (with a KV-cache write) compiles on repeat and equals eager."""
    with TorchBackend(None, device="cpu", compile="aot_eager") as be:
        got, cache = _run(be, 4, act)
        assert be.compiler is not None and be.compiler.compiled_count == 1
    with TorchBackend(None, device="cpu") as ref:
        want, ref_cache = _run(ref, 4, act)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-6)
    np.testing.assert_allclose(cache, ref_cache, rtol=1e-6)


def test_untraceable_graph_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A graph that quantises on the host cannot be traced: it runs eagerly, once warned."""
    v = np.linspace(-1, 1, 64, dtype=np.float32)
    with TorchBackend(None, device="cpu", compile="aot_eager") as be, be.new_context() as ctx:
        x = ctx.input().from_floats(v)
        results = []
        with caplog.at_level(logging.WARNING, logger="mlplug_torch.compile"):
            for _ in range(3):
                with be.new_context() as c:
                    y = x.cast(c, DType.Q8_0).cast(c, DType.F32)
                    c.compute(y)
                    results.append(_floats(y))
        assert be.compiler is not None and be.compiler.compiled_count == 0
    assert sum("running it eagerly" in r.getMessage() for r in caplog.records) == 1
    assert all(np.array_equal(r, results[0]) for r in results)
    assert np.abs(results[0] - v).max() < 1 / 127


#: Opt-in for tests that build native code (CI sets it, in a step after the README's tests).
SLOW = os.environ.get("MLPLUG_SLOW_TESTS") == "1"


@pytest.mark.slow
@pytest.mark.skipif(
    not SLOW, reason="compiles C++ through inductor (~20 s on a cold cache): MLPLUG_SLOW_TESTS=1"
)
def test_inductor_small_graph() -> None:
    """The default inductor backend compiles a small graph (slow: a C++ build)."""
    with TorchBackend(None, device="cpu", compile=True) as be, be.new_context() as ctx:
        a = ctx.input().from_floats(np.arange(8, dtype=np.float32), 4, 2)
        outs = []
        for _ in range(2):
            with be.new_context() as c:
                y = a.scale(c, 0.5).softmax(c)
                c.compute(y)
                outs.append(_floats(y))
        assert be.compiler is not None
        compiled = be.compiler.compiled_count
    e = np.exp(np.arange(8, dtype=np.float32).reshape(2, 4) * 0.5)
    np.testing.assert_allclose(outs[1], (e / e.sum(1, keepdims=True)).reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6)
    assert compiled in (0, 1)  # 0 only where inductor cannot build (then eager, warned)
