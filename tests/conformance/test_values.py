"""Tolerances that mean something and references that stand alone: the reference's own block
decoders against gguf's, ggml's activation rounding, no vacuous tolerance, measured error in
the report, and plausible wrong quantised products that the tight budget rejects."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from mlplug.conformance import all_cases, run
from mlplug.conformance import refquants as RQ
from mlplug.conformance.metrics import compare
from mlplug.conformance.runner import prepare
from mlplug.dtypes import TRAITS, DType
from mlplug.registry import manager, register_backend

gq = pytest.importorskip("gguf.quants", reason="checks the decoders against the gguf package")
from gguf import GGMLQuantizationType  # noqa: E402

#: Two-term formulas (``q * d + m``, ``dl * q - ml``) may differ by one float32 ulp when a
#: decoder fuses the multiply-add; single products are exact.
TWO_TERM = frozenset({DType.Q4_1, DType.Q5_1, DType.Q2_K, DType.Q4_K, DType.Q5_K})


def _gguf(rows: np.ndarray, dtype: DType) -> np.ndarray:
    qtype = GGMLQuantizationType(TRAITS[dtype].ggml_type)
    return np.asarray(gq.dequantize(rows, qtype), np.float64)


def _random_rows(rng: np.random.Generator, dtype: DType, n_rows: int, blocks: int) -> np.ndarray:
    """Random bytes with every f16 field replaced by a finite random scale (any bit pattern is
    a valid block otherwise)."""
    tr = TRAITS[dtype]
    raw = rng.integers(0, 256, (n_rows * blocks, tr.type_size), dtype=np.uint8)
    f16_fields = {
        DType.Q8_0: (0,),
        DType.Q4_0: (0,),
        DType.Q5_0: (0,),
        DType.Q4_1: (0, 2),
        DType.Q5_1: (0, 2),
        DType.Q2_K: (80, 82),
        DType.Q3_K: (108,),
        DType.Q4_K: (0, 2),
        DType.Q5_K: (0, 2),
        DType.Q6_K: (208,),
    }.get(dtype, ())
    for off in f16_fields:
        scale = rng.uniform(-2.0, 2.0, n_rows * blocks).astype(np.float16)
        raw[:, off : off + 2] = scale.view(np.uint8).reshape(-1, 2)
    return raw.reshape(n_rows, blocks * tr.type_size)


@pytest.mark.parametrize(
    "dtype", sorted(RQ.Q8_0_DOT | RQ.Q8_K_DOT, key=lambda d: d.value), ids=lambda d: d.name
)
def test_reference_decoders_match_gguf_on_random_blocks(dtype: DType) -> None:
    """The reference decodes every type itself; on random blocks it agrees with gguf's decoder
    (exactly, or within one float32 ulp for the two-term formulas)."""
    rng = np.random.default_rng(dtype.value)
    rows = _random_rows(rng, dtype, 40, 3)
    with np.errstate(over="ignore"):
        ours, theirs = RQ.dequantize(rows, dtype), _gguf(rows, dtype)
    assert ours.shape == theirs.shape == (40, 3 * TRAITS[dtype].block_size)
    same = (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))  # MXFP4 scales reach inf
    with np.errstate(invalid="ignore", over="ignore"):
        ulp = np.spacing(np.abs(theirs).astype(np.float32)).astype(np.float64)
        close = np.abs(ours - theirs) <= (ulp if dtype in TWO_TERM else 0.0)
    assert np.all(same | close), dtype.name


def test_a_wrong_decoder_is_caught_by_the_comparison() -> None:
    """The comparison above can fail: a Q4_0 decoder with the offset 8 forgotten differs."""
    rows = _random_rows(np.random.default_rng(1), DType.Q4_0, 4, 2)
    blocks = rows.reshape(-1, 18)
    d = blocks[:, :2].copy().view("<f2").astype(np.float64)
    q = np.concatenate([blocks[:, 2:] & 15, blocks[:, 2:] >> 4], axis=1)
    wrong = (d * q).reshape(4, 64)
    assert not np.allclose(wrong, RQ.dequantize(rows, DType.Q4_0))


def test_reference_decoder_rejects_partial_blocks() -> None:
    """Rows that are not whole blocks are an error naming the type."""
    with pytest.raises(ValueError, match="Q8_0"):
        RQ.dequantize(np.zeros((2, 33), np.uint8), DType.Q8_0)


def test_activation_quantisers_round_halves_to_even() -> None:
    """With the block scale exactly 1 (amax 127), 8.5 -> 8, 2.5 -> 2, -3.5 -> -4, 0.5 -> 0 for
    both Q8_0 and Q8_K, as ggml's x86 CPU computes them (roundf would give 9, 3, -4, 1)."""
    x = np.zeros(256, np.float32)
    x[:6] = [127.0, 8.5, 2.5, -3.5, 0.5, -126.5]
    want = [127.0, 8.0, 2.0, -4.0, 0.0, -126.0]
    for weight in (DType.Q8_0, DType.Q4_K):
        assert RQ.dot_activations(x, weight)[:6].tolist() == want, weight.name
    q, d = RQ.q8_k_quantize(x)
    assert q[0] == -127 and float(d.reshape(-1)[0]) == -1.0  # iscale = -127 / max


def test_q8_0_activation_values_are_representable_products() -> None:
    """Q8_0 activations are ``q * f16(amax / 127)`` with |q| <= 127; an all-zero block stays 0."""
    x = np.random.default_rng(3).uniform(-2, 2, (3, 64)).astype(np.float32)
    x[1, :32] = 0.0
    q, _ = RQ.q8_0_quantize(x)
    assert np.abs(q).max() <= 127 and np.all(q[1, :32] == 0)
    y = RQ.dot_activations(x, DType.Q8_0)
    assert np.all(y[1, :32] == 0)
    assert np.max(np.abs(y - x)) <= float(np.abs(x).max()) / 127


# -- tolerances -----------------------------------------------------------------------------------
#: A tolerance is vacuous when it cannot tell a result from nonsense of the same shape:
#: it admits an all-zero result, or a result 50 % off everywhere (one step of a 4-bit grid is
#: a legitimate 25 %), or allows NMSE >= 1e-2, or more
#: than 16 ulp. References with no finite nonzero value (a zero or constant row's norm, which
#: tests NaN-freedom) are judged only by the last two rules.
VACUOUS_NMSE, VACUOUS_ULP, OFF_BY = 1e-2, 16, 1.5


def _admits(case: Any, got: np.ndarray, ref: np.ndarray, bound: np.ndarray | None) -> bool:
    return compare(got.astype(np.float64), ref, case.tol, DType.F64, bound).passed


def test_no_case_has_a_vacuous_tolerance() -> None:
    """Every tolerance rejects zeros and a 50 % error, with NMSE < 1e-2 and at most 16 ulp."""
    vacuous = []
    for case in all_cases():
        tol = case.tol
        if (tol.nmse is not None and tol.nmse >= VACUOUS_NMSE) or (tol.ulp or 0) > VACUOUS_ULP:
            vacuous.append(f"{case.id}: {tol.describe()}")
            continue
        if tol.ulp is not None or case.raw_ref:
            continue
        prep = prepare(case, 0)
        for ref, bound in zip(prep.expected, prep.bounds, strict=True):
            r = np.asarray(ref, np.float64).reshape(-1)
            b = None if bound is None else np.asarray(bound, np.float64).reshape(-1)
            finite = np.isfinite(r)
            if not np.any(finite & (r != 0)):
                continue
            zeros = np.where(finite, 0.0, r)
            off = np.where(finite, r * OFF_BY, r)
            if _admits(case, zeros, r, b) or _admits(case, off, r, b):
                vacuous.append(f"{case.id}: {tol.describe()}")
                break
    assert vacuous == []


def test_the_vacuity_rule_flags_a_loose_tolerance() -> None:
    """The rule above can fail: the same case with atol 10 admits zeros."""
    from dataclasses import replace

    from mlplug.conformance import Tolerance

    case = next(c for c in all_cases() if c.id == "mulmat-f32-8x5x3")
    loose = replace(case, id="mulmat-f32-loose", tol=Tolerance(atol=10.0))
    prep = prepare(loose, 0)
    r = np.asarray(prep.expected[0], np.float64).reshape(-1)
    assert _admits(loose, np.zeros_like(r), r, None)


# -- measured error in the report, and wrong products the budget rejects -------------------------
cpu_numpy = pytest.importorskip("mlplug_cpu_numpy.backend", reason="needs the cpu_numpy plugin")
KERNELS: dict[str, Any] = dict(cpu_numpy.CpuNumpyBackend.kernels)


def test_report_records_measured_error_beside_the_tolerance() -> None:
    """Each JSON result carries its tolerance, max |err|, NMSE, max ulp and the share of the
    per-element limit it used."""
    report = run(["cpu_numpy"], "mulmat-q4_k-256x3x2")
    (row,) = [
        r for r in json.loads(report.to_json())["results"] if r["case"] == "mulmat-q4_k-256x3x2"
    ]
    assert row["tolerance"] == "nmse<=1e-10 +bound"
    assert 0 < row["limit_used"] < 0.5
    assert row["max_abs_err"] is not None and row["nmse"] is not None
    assert row["max_ulp"] is not None and row["max_ulp"] >= 0


def _scaled(factor: float) -> Callable[..., None]:
    def kernel(ctx: Any, t: Any) -> None:
        KERNELS["mulmat"](ctx, t)
        if t.src[0].dtype.is_quantized:
            ctx.arr(t)[...] *= np.float32(factor)

    return kernel


def _one_element_plus_20(ctx: Any, t: Any) -> None:
    KERNELS["mulmat"](ctx, t)
    if t.src[0].dtype.is_quantized:
        out = ctx.arr(t).reshape(-1)
        out[out.size // 2] *= np.float32(1.2)


def _last_block_3pct(ctx: Any, t: Any) -> None:
    """Every output gains 3 % of the last K block's partial product (a per-block scale bug)."""
    KERNELS["mulmat"](ctx, t)
    a, b = t.src
    if not a.dtype.is_quantized or a.ne[2] != b.ne[2] or a.ne[3] != b.ne[3]:
        return
    bs = TRAITS[a.dtype].block_size
    av = ctx.values(a)[..., -bs:]
    bv = RQ.dot_activations(ctx.values(b), a.dtype)[..., -bs:].astype(np.float32)
    ctx.arr(t)[...] += np.float32(0.03) * np.matmul(bv, av.swapaxes(-1, -2))


def _f16_result(ctx: Any, t: Any) -> None:
    KERNELS["mulmat"](ctx, t)
    out = ctx.arr(t)
    out[...] = out.astype(np.float16).astype(np.float32)


@pytest.fixture
def wrong() -> Iterator[Callable[[str, Callable[..., None]], str]]:
    """Register a cpu_numpy backend whose mulmat kernel is replaced; unregister it afterwards."""
    names: list[str] = []

    def make(name: str, kernel: Callable[..., None]) -> str:
        attrs = {"name": name, "kernels": {**KERNELS, "mulmat": kernel}}
        cls: type = type(f"Wrong_{name}", (cpu_numpy.CpuNumpyBackend,), attrs)
        register_backend(name, lambda path, params: cls(path, params))
        names.append(name)
        return name

    yield make
    for n in names:
        manager().unregister_backend(n)


@pytest.mark.parametrize(
    ("label", "kernel"),
    [
        ("times-1.02", _scaled(1.02)),
        ("one-element-plus-20pct", _one_element_plus_20),
        ("last-block-3pct", _last_block_3pct),
    ],
)
def test_wrong_quantised_products_fail_every_quantised_case(
    wrong: Callable[[str, Callable[..., None]], str], label: str, kernel: Callable[..., None]
) -> None:
    """Each plausible wrong quantised product fails every quantised mulmat case (the block
    scale bug: every case whose batches are not broadcast)."""
    report = run([wrong(f"wrong_mulmat_{label}", kernel)], "mulmat-*")
    quantised = [
        r
        for r in report.results
        if r.dtype not in ("f32", "f16", "bf16", "err")
        and not (label == "last-block-3pct" and ("-batch-" in r.case or "-bcast" in r.case))
    ]
    assert len(quantised) >= 15
    assert [r.case for r in quantised if r.status != "fail"] == []


def test_full_precision_product_rounded_to_f16_fails(
    wrong: Callable[[str, Callable[..., None]], str],
) -> None:
    """``mulmat_full_prec`` is held to float32 grade: a result rounded to f16 fails it."""
    report = run([wrong("wrong_full_prec_f16", _f16_result)], "mulmat_full_prec-f32-*")
    assert report.results and {r.status for r in report.results} == {"fail"}
