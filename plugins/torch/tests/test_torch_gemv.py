"""Compiled decode kernels (:mod:`mlplug_torch.ops.compiled`): one-column products
(:mod:`mlplug_torch.ops.gemv`) and one-query attention. When they are used, and that every
weight type's kernel, and attention's, gives the conformance suite's results."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from model_files import llama_logits, write_llama

pytest.importorskip("torch")
pytest.importorskip("mlplug_torch")

from mlplug import DType
from mlplug.conformance import all_cases, run_case
from mlplug_torch import TorchBackend
from mlplug_torch.ops.compiled import FUSED_MIN_BYTES, CompiledKernels, fused_from_env
from mlplug_torch.ops.gemv import GEMV_TYPES

SLOW = os.environ.get("MLPLUG_SLOW_TESTS") == "1"
needs_compiler = pytest.mark.skipif(
    not SLOW, reason="compiles C++ through inductor (seconds per shape): MLPLUG_SLOW_TESTS=1"
)

# torch's own modules warn about their deprecated internals while compiling
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, FUSED_MIN_BYTES),
        ("", FUSED_MIN_BYTES),
        ("auto", FUSED_MIN_BYTES),
        ("0", None),
        ("off", None),
        ("1", 0),
        ("yes", 0),
    ],
)
def test_option_values(value: str | None, expected: int | None) -> None:
    assert fused_from_env(value) == expected


def test_which_sizes_compile() -> None:
    kernels = CompiledKernels(FUSED_MIN_BYTES)
    assert kernels.on and kernels.wants(FUSED_MIN_BYTES)
    assert not kernels.wants(FUSED_MIN_BYTES - 1)
    assert not CompiledKernels(None).wants(1 << 30)
    assert {d for d in DType if d.is_quantized} <= set(GEMV_TYPES)  # every block type compiles


def test_off_runs_eagerly() -> None:
    with TorchBackend(None, device="cpu", fused_gemv=False) as be, be.new_context() as ctx:
        w = np.ones((256, 512), dtype=np.float32)
        out = ctx.from_floats(w).mulmat(ctx, ctx.from_floats(np.ones((1, 512), np.float32)))
        ctx.compute(out)
        assert out.floats().tolist() == [512.0] * 256
        assert len(be.compiled) == 0


@pytest.mark.slow
@needs_compiler
def test_every_type_compiles_and_conforms() -> None:
    """Every one-column mulmat case of the catalogue, each compiled (whatever its size), passes;
    every type with an expression was compiled at least once; closing drops the kernels."""
    cases = [
        c
        for c in all_cases("all")
        if c.op == "mulmat" and len(c.args) == 2 and all(n == 1 for n in c.args[1].ne[1:])
    ]
    assert len(cases) >= 20
    with TorchBackend(None, device="cpu", fused_gemv=True) as be:
        outcomes = {c.id: run_case(be, c) for c in cases}
        compiled = {key[1] for key in be.compiled.compiled_keys() if key[0] == "gemv"}
    failed = {k: o.error for k, o in outcomes.items() if o.status != "pass"}
    assert not failed
    assert compiled == set(GEMV_TYPES), f"not compiled: {set(GEMV_TYPES) - compiled}"
    assert len(be.compiled) == 0


@pytest.mark.slow
@needs_compiler
def test_one_query_attention_compiles_and_conforms() -> None:
    """Every one-query attention case of the catalogue (F16 and F32 caches, GQA, masks), with
    its kernel compiled whatever its size, passes; at least one kernel was compiled."""
    cases = [
        c
        for c in all_cases("all")
        if c.op == "scaled_dot_product_attention" and (*c.args[0].ne, 1, 1)[2:4] == (1, 1)
    ]
    assert len(cases) >= 4
    with TorchBackend(None, device="cpu", fused_gemv=True) as be:
        outcomes = {c.id: run_case(be, c) for c in cases}
        compiled = [key for key in be.compiled.compiled_keys() if key[0] == "attention"]
    failed = {k: o.error for k, o in outcomes.items() if o.status != "pass"}
    assert not failed
    assert compiled


@pytest.mark.slow
@needs_compiler
def test_one_query_attention_with_large_values_compiles() -> None:
    """Gemma 3's layout (4 query heads on one KV head of 256) with values up to about 100: a
    probability rounded to f16 the other way moves the output by more than 1e-4 of it, which the
    first-result check allows (it once turned every compiled kernel off)."""
    import torch

    from mlplug_torch.ops.attention import _one_query, _one_query_gap
    from mlplug_torch.ops.compiled import CompiledKernels

    gen = torch.Generator().manual_seed(0)
    n = 300
    q = torch.randn(4, 256, generator=gen)
    k = torch.randn(n, 1, 256, generator=gen).half()
    v = (100 * torch.randn(n, 1, 256, generator=gen)).half()
    args = (q, k, v, torch.zeros(n), torch.tensor(1.0))
    kernels = CompiledKernels(0)
    fn = _one_query(True, True, True)
    assert kernels.kernel("gemma", fn, lambda: args, dynamic=True, atol=_one_query_gap) is not None
    assert kernels.on


def test_a_failed_compilation_turns_it_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No C++ compiler (simulated): one warning, then every product runs eagerly and right."""
    import torch

    def no_compiler(*args: object, **kwargs: object) -> object:
        msg = "no C++ compiler"
        raise RuntimeError(msg)

    monkeypatch.setattr(torch._inductor, "compile", no_compiler)
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, size=(64, 256)).astype(np.float32)
    x = rng.uniform(-1, 1, size=256).astype(np.float32)
    with TorchBackend(None, device="cpu", fused_gemv=True) as be:
        for _ in range(2):
            with be.new_context() as ctx:
                out = ctx.from_floats(w).mulmat(ctx, ctx.from_floats(x[None, :]))
                ctx.compute(out)
                np.testing.assert_allclose(out.floats(), w @ x, rtol=1e-5, atol=1e-5)
        assert not be.compiled.on and len(be.compiled) == 0
    warned = [r for r in caplog.records if "turned off" in r.getMessage()]
    assert len(warned) == 1 and "no C++ compiler" in warned[0].getMessage()


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize(("kind", "tol"), [("f32", 1e-4), ("f16", 5e-3), ("q8_0", 1e-1)])
def test_decode_steps_match_the_reference_model(
    kind: str, tol: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny llama's one-token steps, every product compiled, against the float64 llama (the
    tolerances of tests/core/models/test_llama.py)."""
    import mlplug as ml
    from mlplug.models import load_model

    monkeypatch.setenv("MLPLUG_TORCH_FUSED", "1")
    t = write_llama(tmp_path / f"tiny-{kind}.gguf", kind, tied=False)
    prompt = [1, 5, 9, 2, 30, 7, 3]
    be = ml.new_backend(str(t.path), ml.BackendParams(alloc_memory=True), backend="torch")
    be.load()
    with be, load_model(be, num_ctx=32, kv_dtype="f32") as model:
        steps = [model.forward(prompt[:3], range(3))[0]]
        steps += [model.forward([prompt[p]], [p])[0] for p in range(3, len(prompt))]
        assert isinstance(be, TorchBackend) and len(be.compiled) > 0
    want = llama_logits(t, prompt)[2:]
    np.testing.assert_allclose(np.stack(steps), want, rtol=tol, atol=tol)


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("kind", ["gelu", "gelu_quick"])
def test_table_activations_compile_bit_for_bit(kind: str) -> None:
    """GELU and QuickGELU (ggml's f16 tables), gated and not, compiled once with symbolic sizes:
    equal to the eager lookup bit for bit at every size (a decode step's, a prompt's), values
    past the ±10 cuts and NaN included; the catalogue's cases of both ops pass compiled."""
    import torch

    from mlplug_torch.context import TorchContext
    from mlplug_torch.ops.elementwise import _ACT, compiled_table_act

    gen = torch.Generator().manual_seed(0)
    with TorchBackend(None, device="cpu", fused_gemv=True) as be, be.new_context() as ctx:
        assert isinstance(ctx, TorchContext)
        for n in (2, 2048, 3 * 2048 + 5):
            x = 6 * torch.randn(n, generator=gen)
            x[:4] = torch.tensor([10.0, -10.0, 9.9995, float("nan")])[: min(4, n)]
            up = torch.randn(n, generator=gen)
            eager = _ACT[kind](x, DType.F32, True)
            for got, want in (
                (compiled_table_act(ctx, kind, x), eager),
                (compiled_table_act(ctx, kind, x, up), eager * up),
            ):
                assert got is not None
                assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))
        keys = {key for key in be.compiled.compiled_keys() if key[0] == "table-act"}
        assert keys == {("table-act", kind, False), ("table-act", kind, True)}
        name = {"gelu": "gelu", "gelu_quick": "quick_gelu"}[kind]
        cases = [c for c in all_cases("all") if c.op == name]
        assert len(cases) >= 20
        failed = {c.id: o.error for c in cases if (o := run_case(be, c)).status != "pass"}
        assert not failed


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("kind", ["q8_0", "q8_k", "f16", "bf16"])
def test_activation_roundings_compile_bit_for_bit(kind: str) -> None:
    """A prompt's activations rounded to a weight's dot type (Q8_0, Q8_K, F16, BF16) through one
    compiled kernel (symbolic sizes, casts rounded as eagerly): equal to the torch ops bit for
    bit at two sizes, with zero blocks, ties of magnitude, infinities, NaN and subnormals."""
    import torch

    from mlplug_torch.context import TorchContext
    from mlplug_torch.ops.linalg import _HOST_ROUNDING, _ROUNDINGS, _rounded

    gen = torch.Generator().manual_seed(1)
    with TorchBackend(None, device="cpu", fused_gemv=True) as be, be.new_context() as ctx:
        assert isinstance(ctx, TorchContext)
        for rows, k in ((80, 256), (37, 2048)):
            x = 3 * torch.randn(rows, k, generator=gen) * torch.rand(rows, 1, generator=gen)
            assert x.numel() > _HOST_ROUNDING
            x[0, :256] = 0.0
            x[1, 7] = -x[1, :256].abs().max()  # a tie: the first of largest magnitude wins
            x[2, 3], x[3, 300 % k], x[4, 9] = float("inf"), float("nan"), -float("inf")
            x[5] *= 1e-38
            got, want = _rounded(ctx, x, kind), _ROUNDINGS[kind](x)
            assert torch.equal(got.nan_to_num(7.0, 8.0, 9.0), want.nan_to_num(7.0, 8.0, 9.0))
        assert ("round", kind) in be.compiled.compiled_keys()
