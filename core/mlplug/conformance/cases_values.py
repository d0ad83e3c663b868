"""Cases of special and edge values: the inputs that tell a right kernel from a plausible wrong one.

Each case holds values an op meets in real models but random inputs in ``[-1, 1]`` never reach:
softmax and attention logits around ``±1e4`` (a softmax without max-subtraction overflows),
``exp`` near overflow and into the subnormals, long sums, ``±inf`` / NaN / ``±0`` where the op's
definition fixes the result (a NaN the reference also produces passes, an inf must match in
sign), f16 and f32 subnormals (a kernel that flushes them fails), norms whose ``eps`` dominates
and constant or zero rows (a norm without ``eps`` divides by zero), fully masked attention rows
with a sink (the result is 0), and sort keys with ties (checked as a permutation whose gathered
values equal the sorted keys, since the order among equal keys is unspecified).

Ids read ``<op>-<dtype>-values-<what>``; fixed inputs come from :func:`_special`, a generator
seeded by the case's own name, so the values do not depend on the run's seed.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Final

import numpy as np

from ..context import Context
from ..dtypes import DType
from ..tensor import Tensor
from . import reference as R
from ._common import EXACT, F16, F32, TRANSCENDENTAL, ULP1, mulmat_tol, rows_tol
from .case import Arg, Case, Inputs, Tolerance

__all__ = ["cases"]

INF, NAN = float("inf"), float("nan")
#: The smallest positive subnormals of f32 and f16.
F32_TINY, F16_TINY = 2.0**-149, 2.0**-24
F64 = np.float64
#: Row-op tolerance with no absolute slack: results far below 1e-6 are still compared.
ROWS_STRICT = Tolerance(nmse=1e-10, atol=1e-30, rtol=1e-5)


def _special(name: str, n: int, pool: tuple[float, ...], mix: float = 0.5) -> tuple[float, ...]:
    """``n`` values (flat, ggml order): each from ``pool`` with probability ``mix``, else
    uniform in ``[-2, 2)``; every pool value appears at least once when ``n >= len(pool)``."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    v = rng.uniform(-2.0, 2.0, n)
    pick = rng.random(n) < mix
    v[pick] = rng.choice(np.asarray(pool, np.float64), int(pick.sum()))
    k = min(len(pool), n)
    v[rng.permutation(n)[:k]] = pool[:k]
    return tuple(float(x) for x in v)


def _fixed(ne: tuple[int, ...], values: tuple[float, ...], dtype: DType = F32) -> Arg:
    return Arg(ne, dtype, gen="fixed", values=values)


def _unary(
    op: str,
    tag: str,
    arg: Arg,
    fn: Callable[[Context, Tensor], Tensor],
    ref: Callable[[np.ndarray], np.ndarray],
    tol: Tolerance,
    dtype: DType = F32,
) -> Case:
    return Case(
        f"{op}-{dtype.name.lower()}-values-{tag}",
        op,
        (arg,),
        lambda ctx, x: fn(ctx, x[0]),
        ref,
        tol,
        dtype=dtype.name.lower(),
        out_dtype=dtype,
    )


def _softmax_cases() -> list[Case]:
    def sm(ctx: Context, t: Tensor) -> Tensor:
        return t.softmax(ctx)

    neg = _special("softmax-neginf", 12 * 4, (-INF,), mix=0.3)
    rows = np.asarray(neg).reshape(4, 12)
    rows[:, 5] = 0.0  # every row keeps a finite entry: -inf entries give exactly 0
    return [
        _unary("softmax", "large-1e4", Arg((16, 4), lo=-1e4, hi=1e4), sm, R.softmax, ROWS_STRICT),
        _unary("softmax", "shift+1e4", Arg((33, 3), lo=1e4 - 3, hi=1e4 + 3), sm, R.softmax,
               ROWS_STRICT),
        _unary("softmax", "shift-1e4", Arg((33, 3), lo=-1e4 - 3, hi=-1e4 + 3), sm, R.softmax,
               ROWS_STRICT),
        _unary("softmax", "neginf", _fixed((12, 4), tuple(rows.reshape(-1))), sm, R.softmax,
               ROWS_STRICT),
        _unary("softmax", "long-1025", Arg((1025, 2), lo=-8, hi=8), sm, R.softmax, rows_tol()),
    ]  # fmt: skip


def _exp_cases() -> list[Case]:
    def ex(ctx: Context, t: Tensor) -> Tensor:
        return t.exp(ctx)

    def exp32(a: np.ndarray) -> np.ndarray:  # beyond the float32 range: inf
        with np.errstate(over="ignore"):
            return R.f32(np.exp(a))

    # expf: relative error 1e-5 of normal results, two subnormal steps below 2^-126
    edge = Tolerance(atol=2 * F32_TINY, rtol=1e-5)
    special = (INF, -INF, NAN, 0.0, -0.0, 88.0, 88.7, 89.0, -87.0, -100.0, -104.0, -110.0)
    return [
        _unary("exp", "overflow-edge", Arg((16, 2), lo=80.0, hi=88.7), ex, exp32, edge),
        _unary("exp", "subnormal", Arg((16, 2), lo=-103.0, hi=-87.5), ex, exp32, edge),
        _unary("exp", "special", _fixed((24,), _special("exp-special", 24, special)), ex, exp32,
               edge),
    ]  # fmt: skip


def _binary_cases() -> list[Case]:
    pool = (INF, -INF, NAN, 0.0, -0.0, F32_TINY, -3 * F32_TINY, 1e-39, 3.4e38, -3.4e38)
    out = []
    for op in ("add", "sub", "mul", "div"):
        a = _special(f"{op}-special-a", 32, pool)
        b = _special(f"{op}-special-b", 32, pool)
        out.append(
            Case(
                f"{op}-f32-values-special",
                op,
                (_fixed((8, 4), a), _fixed((8, 4), b)),
                lambda ctx, x, op=op: getattr(x[0], op)(ctx, x[1]),
                lambda a, b, op=op: R.binary(op, a, b),
                EXACT,
                out_dtype=F32,
            )
        )
    # subnormal operands and results: a kernel that flushes them to zero fails
    tiny = tuple(float(v) * F32_TINY for v in range(-12, 12))
    out.append(
        Case(
            "add-f32-values-subnormal",
            "add",
            (_fixed((24,), tiny), _fixed((24,), tuple(reversed(tiny)))),
            lambda ctx, x: x[0].add(ctx, x[1]),
            lambda a, b: R.binary("add", a, b),
            EXACT,
            out_dtype=F32,
        )
    )
    out.append(
        Case(
            "mul-f32-values-subnormal",
            "mul",
            (Arg((16, 2), gen="magnitude", lo=1e-22, hi=1e-19), Arg((16, 2), lo=-1e-19, hi=1e-19)),
            lambda ctx, x: x[0].mul(ctx, x[1]),
            lambda a, b: R.binary("mul", a, b),
            EXACT,
            out_dtype=F32,
        )
    )
    h = tuple(float(v) * F16_TINY for v in (-9, -5, -3, -1, 0, 1, 2, 3, 7, 100, 1000, 1023))
    out.append(
        Case(
            "add-f16-values-subnormal",
            "add",
            (_fixed((12,), h, F16), _fixed((12,), tuple(reversed(h)), F16)),
            lambda ctx, x: x[0].add(ctx, x[1]),
            lambda a, b: R.binary("add", a, b),
            ULP1,
            dtype="f16",
            out_dtype=F16,
        )
    )
    return out


def _sqrt(a: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(np.sqrt(a))


def _unary_special_cases() -> list[Case]:
    pool = (INF, -INF, NAN, 0.0, -0.0, F32_TINY, -F32_TINY, 30.0, -30.0)
    vals = _special("unary-special", 24, pool)
    nan_free = tuple(v for v in vals if not math.isnan(v))
    return [
        _unary("neg", "special", _fixed((24,), vals), lambda c, t: t.neg(c), np.negative, EXACT),
        _unary("relu", "special", _fixed((24,), vals), lambda c, t: t.relu(c),
               R.ACTIVATIONS["relu"], EXACT),
        _unary("tanh", "special", _fixed((len(nan_free),), nan_free), lambda c, t: t.tanh(c),
               np.tanh, TRANSCENDENTAL[F32]),
        _unary("sqrt", "special", _fixed((24,), vals), lambda c, t: t.sqrt(c), _sqrt,
               Tolerance(atol=F32_TINY, rtol=1e-6)),
        _unary("clamp", "special", _fixed((24,), vals), lambda c, t: t.clamp(c, -1.5, 2.5),
               lambda a: R.clamp(a, -1.5, 2.5), EXACT),
    ]  # fmt: skip


def _const_rows(name: str, n: int, rows: int, scale: float) -> tuple[float, ...]:
    """``rows`` rows of ``n`` equal values (row 0 all zeros), magnitudes up to ``scale``."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    c = rng.uniform(-scale, scale, rows)
    c[0] = 0.0
    return tuple(float(v) for v in np.repeat(c, n))


def _rms(eps: float) -> tuple[Callable[[Context, Tensor], Tensor], Callable[..., np.ndarray]]:
    return (lambda c, t: t.rms_norm(c, None, eps)), (lambda a: R.rms_norm(a, eps))


def _norm_cases() -> list[Case]:
    out = []
    for eps in (1e-6, 1e-5):
        build, ref = _rms(eps)
        out.append(
            _unary(
                "rms_norm",
                f"eps{eps:g}-dominated",
                Arg((16, 4), gen="magnitude", lo=1e-5, hi=1e-3),
                build,
                ref,
                rows_tol(),
            )
        )
    const = _fixed((8, 5), _const_rows("rms-const", 8, 5, 2.0))
    out += [
        _unary("rms_norm", "const-rows", const, lambda c, t: t.rms_norm(c, None, 1e-6),
               lambda a: R.rms_norm(a, 1e-6), rows_tol()),
        _unary("layer_norm", "const-rows", const,
               lambda c, t: t.layer_norm(c, None, None, 1e-5),
               lambda a: R.layer_norm(a, 1e-5), rows_tol()),
        _unary("layer_norm", "eps-dominated", Arg((16, 4), gen="magnitude", lo=1e-5, hi=1e-3),
               lambda c, t: t.layer_norm(c, None, None, 1e-5),
               lambda a: R.layer_norm(a, 1e-5), rows_tol()),
        _unary("l2_norm", "const-rows", const, lambda c, t: t.l2_norm(c, 1e-6),
               lambda a: R.l2_norm(a, 1e-6), rows_tol()),
    ]  # fmt: skip
    return out


def _sum_cases() -> list[Case]:
    # long rows with a large common offset: a float32 running sum loses digits
    sums = Tolerance(nmse=1e-12, rtol=1e-6)
    return [
        _unary("sum_rows", "long-4096", Arg((4096, 2), lo=1000.0, hi=1001.0),
               lambda c, t: t.sum_rows(c), R.sum_rows, sums),
        _unary("mean", "long-4096", Arg((4096, 2), lo=1000.0, hi=1001.0),
               lambda c, t: t.mean(c), R.mean, sums),
        _unary("variance", "offset-1e3", Arg((1024, 2), lo=1000.0, hi=1001.0),
               lambda c, t: t.variance(c), R.variance, Tolerance(nmse=1e-8, rtol=1e-4)),
    ]  # fmt: skip


def _sort_cases() -> list[Case]:
    """Ties: the gathered keys must equal the sorted keys, and argsort's result must be a
    permutation (its own indices, sorted by the same kernel and gathered, are ``0..n-1``)."""

    def gather(ctx: Context, x: Tensor, idx: Tensor) -> Tensor:
        n, r = x.ne[0], x.ne[1]
        return x.reshape(ctx, 1, n, r).rows(ctx, idx).reshape(ctx, idx.ne[0], r)

    def argsort_build(ctx: Context, x: Inputs) -> list[Tensor]:
        idx = x[0].argsort(ctx)
        as_f = idx.cast(ctx, F32)
        return [gather(ctx, x[0], idx), gather(ctx, as_f, as_f.argsort(ctx))]

    def argsort_ref(a: np.ndarray) -> list[np.ndarray]:
        return [np.sort(a, axis=-1), np.broadcast_to(np.arange(a.shape[-1], dtype=F64), a.shape)]

    def top_k_build(k: int) -> Callable[[Context, Inputs], Tensor]:
        return lambda ctx, x: gather(ctx, x[0], x[0].top_k(ctx, k).contiguous(ctx))

    def top_k_ref(k: int) -> Callable[[np.ndarray], np.ndarray]:
        return lambda a: -np.sort(-a, axis=-1)[..., :k]

    ties = Arg((12, 5), gen="int", lo=-3, hi=3)
    out = [
        Case("argsort-f32-values-ties-12x5", "argsort", (ties,), argsort_build, argsort_ref,
             EXACT),
        Case("argsort-f32-values-special-10x3", "argsort",
             (_fixed((10, 3), _special("argsort-special", 30, (INF, -INF, 0.0, -0.0, 1.0))),),
             argsort_build, argsort_ref, EXACT),
    ]  # fmt: skip
    for k in (1, 4):
        out.append(
            Case(
                f"top_k-f32-values-ties-k{k}-12x5",
                "top_k",
                (ties,),
                top_k_build(k),
                top_k_ref(k),
                EXACT,
            )
        )
    return out


def _sdpa_cases() -> list[Case]:
    op = "scaled_dot_product_attention"
    tol = Tolerance(atol=1e-6, rtol=1e-5)

    def build(mask: bool, sinks: bool) -> Callable[[Context, Inputs], Tensor]:
        def b(ctx: Context, x: Inputs) -> Tensor:
            i = 3
            m = s = None
            if mask:
                m, i = x[i], i + 1
            if sinks:
                s = x[i]
            return x[0].scaled_dot_product_attention(ctx, x[1], x[2], m, s, None, 1.0, False)

        return b

    def ref(mask: bool, sinks: bool) -> Callable[..., np.ndarray]:
        def r(q: np.ndarray, k: np.ndarray, v: np.ndarray, *rest: np.ndarray) -> np.ndarray:
            it = iter(rest)
            m = next(it) if mask else None
            s = next(it) if sinks else None
            return R.sdpa(q, k, v, 1.0, mask=m, sinks=s, f32_logits=True)

        return r

    dk, h, lq, lk = 8, 2, 3, 6
    big = (Arg((dk, h, lq), lo=-40, hi=40), Arg((dk, h, lk), lo=-40, hi=40), Arg((4, h, lk)))
    neg = (
        Arg((dk, h, lq), lo=-1, hi=1),
        Arg((dk, h, lk), lo=-1, hi=1),
        Arg((4, h, lk)),
    )
    # mask rows: row 0 hides key 0, row 1 hides every key (only the sink remains), row 2 -1e4
    m = np.zeros((lq, lk))
    m[0, 0] = -INF
    m[1, :] = -INF
    m[2, :] = -1e4
    m[2, 3] = 0.0
    mask = _fixed((lk, lq), tuple(m.reshape(-1)))
    shift = _fixed((lk, lq), tuple(np.full(lq * lk, -1e4)))
    sinks = Arg((h,), lo=-1, hi=1)

    def mk(tag: str, args: tuple[Arg, ...], has_mask: bool, has_sinks: bool) -> Case:
        return Case(
            f"{op}-f32-values-{tag}",
            op,
            args,
            build(has_mask, has_sinks),
            ref(has_mask, has_sinks),
            tol,
            out_dtype=F32,
        )

    return [
        mk("logits-1e4", big, False, False),
        mk("mask-shift-1e4", (*neg, shift), True, False),
        mk("masked-rows-sinks", (*neg, mask, sinks), True, True),
    ]


def _ties(name: str, k: int, n: int) -> tuple[float, ...]:
    """Activations whose quantised values land on exact halves: each 32-block opens with
    ``±127`` (so the Q8_0 and Q8_K scales are exactly 1) and holds ``m + 0.5`` elsewhere."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    v = rng.integers(-126, 126, (n, k)).astype(np.float64) + 0.5
    v[:, ::32] = 127.0 * rng.choice([-1.0, 1.0], (n, k // 32))
    return tuple(float(x) for x in v.reshape(-1))


def _quant_tie_cases() -> list[Case]:
    """Quantised products whose activations round on exact halves: ggml's x86 CPU rounds them
    to even (8.5 -> 8), the portable C quantiser away from zero (8.5 -> 9)."""
    out = []
    for q, k in ((DType.Q8_0, 64), (DType.Q4_0, 64), (DType.Q4_K, 256), (DType.Q6_K, 256)):
        name = f"mulmat-{q.name.lower()}-values-ties-{k}x3x2"
        out.append(_quant_product_case(name, q, k, _ties(name, k, 2)))
    return out


def _quant_product_case(name: str, q: DType, k: int, activations: tuple[float, ...]) -> Case:
    """A ``[k, 3]`` weight of type ``q`` times the fixed ``[k, 2]`` ``activations``, held to the
    activation-rounding reference and its per-element bound."""
    return Case(
        name,
        "mulmat",
        (Arg((k, 3), q), _fixed((k, 2), activations)),
        lambda ctx, x: x[0].mulmat(ctx, x[1]),
        lambda a, b: R.mulmat_q(a, b, q),
        mulmat_tol(q, k),
        dtype=q.name.lower(),
        out_dtype=F32,
        bound=lambda a, b: R.mulmat_q_bound(a, b, q),
    )


#: ``(first value, second value, block length)`` per activation quantiser: the scale
#: ``127 / |first|`` correctly rounded (ggml's one float32 division) and rounded twice (``1 / m``
#: then ``* 127``, as torch evaluates ``127.0 / tensor``) differ by an ulp, and ``second * scale``
#: rounds to 20 (Q8_0) or ``-103`` (Q8_K, whose scale is ``-127 / m``) with the first, 21 or
#: ``-104`` with the second: a one-step error ``|a_k| d`` far over the per-element bound.
_SCALE_PAIRS: Final = {
    DType.Q4_0: (float.fromhex("0x1.6c5f2p-1"), float.fromhex("0x1.d686fp-4"), 32),
    DType.Q4_K: (float.fromhex("-0x1.fecebcp-1"), float.fromhex("0x1.a049bcp-1"), 256),
}


def _quant_scale_cases() -> list[Case]:
    """Quantised products whose activation scale must be one float32 division: every block
    opens with a pair from :data:`_SCALE_PAIRS`, the rest is drawn in ``[-0.45, 0.45]``."""
    out = []
    for q, (m, x, block) in _SCALE_PAIRS.items():
        k = 2 * block
        name = f"mulmat-{q.name.lower()}-values-scale-{k}x3x2"
        v = np.random.default_rng(zlib.crc32(name.encode())).uniform(-0.45, 0.45, (2, k))
        v[:, ::block], v[:, 1::block] = m, x
        out.append(_quant_product_case(name, q, k, tuple(float(t) for t in v.reshape(-1))))
    return out


def cases() -> list[Case]:
    """Every special-value case."""
    return [
        *_softmax_cases(),
        *_exp_cases(),
        *_binary_cases(),
        *_unary_special_cases(),
        *_norm_cases(),
        *_sum_cases(),
        *_sort_cases(),
        *_sdpa_cases(),
        *_quant_tie_cases(),
        *_quant_scale_cases(),
    ]
