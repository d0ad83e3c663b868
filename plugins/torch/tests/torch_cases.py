"""Graph builders run on both torch and cpu_numpy (the reference) and compared.

Each case builds its inputs from a seeded generator, so both backends see identical data,
and returns the tensors to compare. ``EXACT`` cases must agree byte for byte; the others
within ``(rtol, atol relative to max |reference|)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mlplug import Context, DType, Tensor
from mlplug.ops import UNARY_METHODS

Builder = Callable[[Context, np.random.Generator], list[Tensor]]
EXACT: tuple[float, float] = (0.0, 0.0)
TIGHT: tuple[float, float] = (1e-5, 1e-6)
MATMUL: tuple[float, float] = (1e-5, 1e-5)
HALF: tuple[float, float] = (2e-3, 2e-3)

CASES: dict[str, tuple[Builder, tuple[float, float]]] = {}


def case(name: str, tol: tuple[float, float] = TIGHT) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        CASES[name] = (fn, tol)
        return fn

    return deco


def f32(
    ctx: Context, rng: np.random.Generator, *shape: int, lo: float = -1.0, hi: float = 1.0
) -> Tensor:
    """An F32 input of ggml ``shape`` with uniform values."""
    v = rng.uniform(lo, hi, size=int(np.prod(shape))).astype(np.float32)
    return ctx.input().from_floats(v, *shape)


def typed(
    ctx: Context,
    rng: np.random.Generator,
    dtype: DType,
    *shape: int,
    lo: float = -1.0,
    hi: float = 1.0,
) -> Tensor:
    """An input of ``dtype`` (F16/BF16 stored directly, quantised via a cast node)."""
    v = rng.uniform(lo, hi, size=int(np.prod(shape))).astype(np.float32)
    if dtype == DType.F32:
        return ctx.input().from_floats(v, *shape)
    if dtype == DType.F16:
        return ctx.input().from_bytes(DType.F16, v.astype(np.float16).tobytes(), *shape)
    if dtype == DType.BF16:
        bits = (v.view(np.uint32) >> 16).astype(np.uint16)
        return ctx.input().from_bytes(DType.BF16, bits.tobytes(), *shape)
    from mlplug.quants import quantize

    raw = quantize(v.reshape(-1, shape[0]), dtype)
    return ctx.input().from_bytes(dtype, raw.tobytes(), *shape)


def ints(ctx: Context, values: Any, *shape: int) -> Tensor:
    return ctx.input().from_ints(np.asarray(values, np.int32), *shape)


# -- element-wise ------------------------------------------------------------------------------
@case("binary_tile", EXACT)
def _binary_tile(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    a, b = f32(ctx, r, 6, 4, 3), f32(ctx, r, 2, 1, 3, lo=0.5, hi=2)
    return [a.add(ctx, b), a.sub(ctx, b), a.mul(ctx, b), a.div(ctx, b)]


@case("binary_views", EXACT)
def _binary_views(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    a = f32(ctx, r, 5, 4, 3, 2)
    b = f32(ctx, r, 4, 5, 1, 2).permute(ctx, 1, 0, 2, 3)  # dim 0 not packed: made contiguous
    c = a.permute(ctx, 0, 2, 1, 3)  # a view with dim 0 packed
    return [c.add(ctx, f32(ctx, r, 5, 1, 4)), a.mul(ctx, b)]


@case("binary_f16", HALF)
def _binary_f16(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    a, b = typed(ctx, r, DType.F16, 8, 3), typed(ctx, r, DType.F16, 8, 3)
    return [a.add(ctx, b), a.mul(ctx, f32(ctx, r, 8, 1)), a.div(ctx, f32(ctx, r, 4, 3, lo=1))]


@case("add_quant", EXACT)
def _add_quant(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    for d in (DType.Q8_0, DType.Q4_0, DType.MXFP4):
        q = typed(ctx, r, d, 64, 3)
        outs.append(q.add(ctx, f32(ctx, r, 64, 1)))
    return outs


_UNARY = UNARY_METHODS


@case("unary_f32")
def _unary_f32(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    for name in _UNARY:
        lo = 0.0 if name == "sqrt" else -12.0
        x = f32(ctx, r, 40, 3, 2, lo=lo, hi=12.0)
        outs.append(getattr(x, name)(ctx))
    x = f32(ctx, r, 9, 4, lo=-30, hi=30)
    outs.append(x.softplus(ctx))
    return outs


@case("unary_f16", HALF)
def _unary_f16(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    for name in _UNARY:
        lo = 0.0 if name == "sqrt" else -4.0
        outs.append(getattr(typed(ctx, r, DType.F16, 16, 3, lo=lo, hi=4.0), name)(ctx))
    return outs


@case("unary_view")
def _unary_view(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    x = f32(ctx, r, 8, 6, 4)
    v = x.slice(ctx, 0, 2, 7, 1)  # a column window: rows not contiguous
    w = x.permute(ctx, 1, 0, 2, 3)  # dim 0 moved: copied first
    return [v.exp(ctx).contiguous(ctx), w.tanh(ctx).contiguous(ctx)]


@case("glu")
def _glu(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    for name in ("gelu", "quick_gelu", "silu", "relu"):
        g, u = f32(ctx, r, 12, 5, lo=-4, hi=4), f32(ctx, r, 12, 5)
        outs.append(getattr(g, name)(ctx, u))
    g, u = f32(ctx, r, 12, 5, lo=-10, hi=10), f32(ctx, r, 12, 5, lo=-10, hi=10)
    outs.append(g.silu_alpha_limit(ctx, u, 1.702, 7.0))
    return outs


@case("glu_f16", HALF)
def _glu_f16(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    return [
        getattr(typed(ctx, r, DType.F16, 8, 3, lo=-3, hi=3), n)(ctx, typed(ctx, r, DType.F16, 8, 3))
        for n in ("gelu", "quick_gelu", "silu", "relu")
    ]


@case("scale_clamp_fill", EXACT)
def _scale_clamp_fill(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    a = f32(ctx, r, 7, 3)
    b = f32(ctx, r, 7, 3).clamp(ctx, -0.25, 0.5)
    c = typed(ctx, r, DType.F16, 7, 3).clamp(ctx, -0.3, 0.1)
    ones = ctx.input().zeros(DType.F32, 4, 4).fill(ctx, 1.5)
    return [a.scale(ctx, 0.1), b, c, ones]


# -- matrix products --------------------------------------------------------------------------
@case("mulmat_f32", MATMUL)
def _mulmat_f32(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    w, x = f32(ctx, r, 64, 24), f32(ctx, r, 64, 7, 2, 3)
    a2, b2 = f32(ctx, r, 16, 5, 2, 1), f32(ctx, r, 16, 3, 4, 3)  # batch repeat (GQA)
    a3, b3 = f32(ctx, r, 16, 5, 2, 2), f32(ctx, r, 16, 3, 4, 4)  # repeat along dim 3 too
    v1, v2 = f32(ctx, r, 16), f32(ctx, r, 16)
    q = f32(ctx, r, 16, 4, 6).permute(ctx, 0, 2, 1, 3)  # [16, 6, 4] view
    k = f32(ctx, r, 16, 2, 9).permute(ctx, 0, 2, 1, 3)  # [16, 9, 2]
    t = f32(ctx, r, 5, 16).permute(ctx, 1, 0, 2, 3)  # transposed left: made contiguous
    return [
        w.mulmat(ctx, x),
        a2.mulmat(ctx, b2),
        a3.mulmat(ctx, b3),
        v1.mulmat(ctx, v2),
        k.mulmat_full_prec(ctx, q),
        t.mulmat(ctx, f32(ctx, r, 16, 3)),
    ]


@case("mulmat_typed", (1e-4, 1e-5))
def _mulmat_typed(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    for d in (
        DType.F16,
        DType.BF16,
        DType.Q8_0,
        DType.Q4_0,
        DType.MXFP4,
        DType.Q4_1,
        DType.Q5_0,
        DType.Q5_1,
    ):
        w = typed(ctx, r, d, 64, 12, 2)
        outs.append(w.mulmat(ctx, f32(ctx, r, 64, 5, 4)))
    h = typed(ctx, r, DType.F16, 32, 3)
    outs.append(h.mulmat(ctx, typed(ctx, r, DType.F16, 32, 2)))
    return outs


@case("mulmat_id", MATMUL)
def _mulmat_id(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    for d in (DType.F32, DType.F16, DType.Q8_0):
        experts = typed(ctx, r, d, 32, 6, 5)  # K=32, R=6, E=5
        scores = f32(ctx, r, 5, 4)  # 4 tokens
        ids = scores.top_k(ctx, 2)  # strided view [2, 4]
        x = f32(ctx, r, 32, 1, 4)
        y = experts.mulmat_id(ctx, x, ids)
        outs.append(y)
        outs.append(experts.mulmat_id(ctx, f32(ctx, r, 32, 2, 4), ids))
        bias = f32(ctx, r, 6, 5)
        outs.append(y.add_id(ctx, bias, ids))
    return outs


@case("matrix_build", EXACT)
def _matrix_build(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    a = f32(ctx, r, 5, 5, 2)
    outs = [a.tri(ctx, k) for k in range(4)]
    outs.append(f32(ctx, r, 4, 1, 3).diag(ctx))
    outs.append(ctx.arange(0.5, 5, 1.5, DType.F32))
    outs.append(ctx.arange(-3, 7.25, 0.37, DType.F32))
    return outs


@case("solve_tri", (1e-4, 1e-5))
def _solve_tri(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    v = r.uniform(-1, 1, size=(2, 6, 6)).astype(np.float32)
    v += np.eye(6, dtype=np.float32) * np.sign(r.uniform(-1, 1, size=6)).astype(np.float32) * 3
    a = ctx.input().from_floats(v, 6, 6, 2)
    return [a.solve_tri(ctx, f32(ctx, r, 3, 6, 2), True, True, False)]


# -- reductions -------------------------------------------------------------------------------
@case("rows")
def _rows(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    x = f32(ctx, r, 33, 4, 3, lo=-3, hi=3)
    w, bias = f32(ctx, r, 33), f32(ctx, r, 33)
    xv = f32(ctx, r, 40, 4, 3).slice(ctx, 0, 0, 33, 1)  # strided rows
    return [
        x.softmax(ctx),
        x.rms_norm(ctx, w, 1e-6),
        x.layer_norm(ctx, w, bias, 1e-5),
        x.l2_norm(ctx, 1e-12),
        x.sum_rows(ctx),
        x.mean(ctx),
        x.variance(ctx),
        x.stddev(ctx),
        x.cum_sum(ctx),
        xv.rms_norm(ctx, None, 1e-6),
        xv.sum_rows(ctx),
        xv.layer_norm(ctx, None, None, 0.0),
    ]


@case("sort", EXACT)
def _sort(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    x = ctx.input().from_floats(r.permutation(60).astype(np.float32).reshape(3, 4, 5), 5, 4, 3)
    i = ints(ctx, r.permutation(24), 8, 3)
    return [
        x.argsort(ctx),
        x.top_k(ctx, 2).contiguous(ctx),
        i.argsort(ctx),
        i.top_k(ctx, 3).contiguous(ctx),
    ]


# -- layout -----------------------------------------------------------------------------------
@case("layout", EXACT)
def _layout(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    x = f32(ctx, r, 2, 3, 4, 5)
    outs = [
        x.permute(ctx, 1, 2, 0, 3).contiguous(ctx),
        x.permute(ctx, 2, 0, 1, 3).contiguous(ctx),
        x.permute(ctx, 0, 1, 3, 2).contiguous(ctx, -1, 4),
        x.reshape(ctx, 6, -1).duplicate(ctx),
        x.view(ctx, 8, 2, 24, 5).contiguous(ctx),
        x.view(ctx, 4, 3, 8, 2, 24, 4).contiguous(ctx),
        x.slice(ctx, 0, 0, 2, 2),
        x.slice(ctx, 2, 1, 4, 2).contiguous(ctx),
        x.slice(ctx, 1, 0, 3, 3).contiguous(ctx),
    ]
    outs += [c.contiguous(ctx) for c in x.chunk(ctx, 2, 3)]
    outs += [c.contiguous(ctx) for c in f32(ctx, r, 7, 3).chunk_sections(ctx, 0, 4, 3)]
    outs.append(x.permute(ctx, 1, 0, 2, 3).reshape(ctx, 30, 4))  # non-contiguous reshape
    return outs


@case("layout_typed", EXACT)
def _layout_typed(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    for d in (DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0, DType.MXFP4):
        x = typed(ctx, r, d, 64, 3, 2)
        outs.append(x.permute(ctx, 0, 2, 1, 3).contiguous(ctx))
        outs.append(x.slice(ctx, 1, 1, 3, 1).contiguous(ctx))
    i = ints(ctx, r.integers(-100, 100, 24), 4, 3, 2)
    outs.append(i.permute(ctx, 2, 0, 1, 3).contiguous(ctx))
    return outs


@case("cast", EXACT)
def _cast(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    x = f32(ctx, r, 64, 3, lo=-70000, hi=70000)
    y = f32(ctx, r, 64, 3, lo=-5, hi=5)
    outs = [
        x.cast(ctx, DType.F16),
        x.cast(ctx, DType.I32),
        x.cast(ctx, DType.BF16),
        y.cast(ctx, DType.F16).cast(ctx, DType.F32),
        y.cast(ctx, DType.BF16).cast(ctx, DType.F32),
        ints(ctx, r.integers(-1 << 30, 1 << 30, 12), 12).cast(ctx, DType.F32),
        y.cast(ctx, DType.F16).cast(ctx, DType.I32),
        y.permute(ctx, 1, 0, 2, 3).cast(ctx, DType.F16),
    ]
    for d in (DType.Q8_0, DType.Q4_0, DType.MXFP4, DType.Q4_1, DType.Q5_0, DType.Q5_1):
        q = y.cast(ctx, d)
        outs += [q, q.cast(ctx, DType.F32)]
    outs.append(typed(ctx, r, DType.F16, 32, 2).cast(ctx, DType.Q8_0))
    return outs


@case("copy_into_views", EXACT)
def _copy(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    cache = ctx.input().zeros(DType.F16, 8, 6)
    src = f32(ctx, r, 8, 2)
    c1 = src.copy(ctx, cache.view(ctx, 2 * cache.stride(1), 8, cache.stride(1), 2))
    ctx.forward(c1)
    h = f32(ctx, r, 4, 5).duplicate(ctx)
    img = f32(ctx, r, 4, 2)
    c2 = img.copy(ctx, h.view(ctx, 1 * h.stride(1), 8))
    ctx.forward(c2)
    q = ctx.input().zeros(DType.Q8_0, 32, 3)
    c3 = f32(ctx, r, 32, 2).copy(ctx, q.view(ctx, q.stride(1), 32, q.stride(1), 2))
    ctx.forward(c3)
    t = f32(ctx, r, 3, 4).permute(ctx, 1, 0, 2, 3)
    c4 = t.copy(ctx, ctx.input().zeros(DType.F32, 12))
    return [cache.reshape(ctx, 48).contiguous(ctx), h.contiguous(ctx), q.contiguous(ctx), c4]


@case("join_pad_repeat", EXACT)
def _join(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    a = f32(ctx, r, 3, 4, 2)
    outs = [a.concat(ctx, f32(ctx, r, 3, 4, 2), d) for d in range(3)]
    outs.append(a.concat(ctx, f32(ctx, r, 3, 4, 2, 2), 3))
    outs.append(a.permute(ctx, 1, 0, 2, 3).concat(ctx, f32(ctx, r, 4, 2, 2), 1))
    outs.append(a.stack(ctx, 0, f32(ctx, r, 3, 4, 2), f32(ctx, r, 3, 4, 2)))
    outs += [a.pad(ctx, 1, 2, 0, 0), a.pad(ctx, -1, 1, -1, 0)]
    outs += [a.repeat(ctx, 0, 3), a.repeat(ctx, 2, 2), a.repeat_4d(ctx, 6, 8, 2, 3)]
    outs.append(typed(ctx, r, DType.F16, 3, 2).repeat_4d(ctx, 6, 4, 1, 1))
    outs.append(ints(ctx, [1, 2, 3], 3).repeat(ctx, 1, 2))
    outs.append(ints(ctx, [1, 2], 2).concat(ctx, ints(ctx, [3], 1), 0))
    return outs


@case("gather", EXACT)
def _gather(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    for d in (DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0, DType.MXFP4):
        tbl = typed(ctx, r, d, 32, 10)
        outs.append(tbl.rows(ctx, ints(ctx, [3, 0, 9, 3], 4)))
    t3 = f32(ctx, r, 4, 5, 3)
    outs.append(t3.rows(ctx, ints(ctx, r.integers(0, 5, 6), 2, 3)))
    outs.append(ints(ctx, r.integers(0, 99, 15), 3, 5).rows(ctx, ints(ctx, [4, 1], 2)))
    return outs


@case("scatter", EXACT)
def _scatter(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    for d in (DType.F32, DType.F16, DType.Q8_0, DType.Q4_0, DType.BF16):
        dst = ctx.input().zeros(d, 32, 6)
        y = dst.set_rows(ctx, f32(ctx, r, 32, 2), ints(ctx, [4, 1], 2))
        ctx.forward(y)
        outs.append(dst.cast(ctx, DType.F32) if d.is_quantized else dst.contiguous(ctx))
    dst3 = ctx.input().zeros(DType.F32, 3, 5, 4)
    y3 = dst3.set_rows(ctx, f32(ctx, r, 3, 2, 4), ints(ctx, [0, 4, 2, 1], 2, 2))
    ctx.forward(y3)
    outs.append(dst3.contiguous(ctx))
    d2 = f32(ctx, r, 4, 5).duplicate(ctx)
    s = d2.set_inplace(
        ctx, f32(ctx, r, 2, 2), d2.stride(1), d2.stride(2), d2.stride(3), d2.stride(1) + 4
    )
    outs.append(s.contiguous(ctx))
    di = ints(ctx, np.arange(12), 12)
    outs.append(di.set_inplace(ctx, ints(ctx, [-1, -2, -3], 3), 12, 12, 12, 8).contiguous(ctx))
    return outs


# -- nn ---------------------------------------------------------------------------------------
@case("pool_conv", (1e-4, 1e-5))
def _pool_conv(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    img = f32(ctx, r, 9, 7, 3, 2)
    outs = [
        img.avg_pool_2d(ctx, 2, 2, 0),
        img.avg_pool_2d(ctx, 3, 1, 1),
        img.avg_pool_2d(ctx, 3, 2, 0),
        img.avg_pool_2d(ctx, 2, 1, 0.5),
    ]
    k = ctx.input().empty(DType.F32, 3, 2, 3)
    outs.append(k.im2col(ctx, img, 2, 1, 1, 0, 1, 2))
    w = f32(ctx, r, 3, 2, 3, 4)
    outs.append(w.conv_2d(ctx, img, 1, 2, 1, 1, 2, 1))
    wh = typed(ctx, r, DType.F16, 3, 3, 3, 2)
    outs.append(wh.conv_2d(ctx, img, 2, 2, 0, 0, 1, 1))
    w3 = f32(ctx, r, 4, 3, 2, 5 * 2)  # OC=5, IC=2
    x3 = f32(ctx, r, 4, 3, 2, 3 * 2)  # N=3
    outs.append(w3.conv_3d(ctx, x3, 2, 4, 3, 2, 0, 0, 0, 1, 1, 1))
    outs.append(w3.conv_3d(ctx, f32(ctx, r, 2, 1, 2, 4), 2, 1, 1, 1, 1, 1, 0, 1, 1, 1))
    return outs


@case("ssm", (1e-4, 1e-5))
def _ssm(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    sx = f32(ctx, r, 3 + 5, 6, 2)
    outs = [sx.ssm_conv(ctx, f32(ctx, r, 4, 6))]
    for a_n in (1, 4):
        s = f32(ctx, r, 4, 3, 4, 3)  # d_state, head_dim, n_head, slots
        x = f32(ctx, r, 3, 4, 5, 2)
        dt = f32(ctx, r, 4, 5, 2, lo=-3, hi=25)
        a = f32(ctx, r, a_n, 4, lo=-2, hi=-0.1)
        b, c = f32(ctx, r, 4, 2, 5, 2), f32(ctx, r, 4, 2, 5, 2)
        outs.append(s.ssm_scan(ctx, x, dt, a, b, c, ints(ctx, [2, 0], 2)))
    return outs


@case("interpolate", (1e-6, 1e-6))
def _interpolate(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    x = f32(ctx, r, 14, 5, 3, 2)
    return [
        x.interpolate(ctx, (2, 9, 3, 2), 0),
        x.interpolate(ctx, (20, 3, 5, 3), 0),
        x.interpolate(ctx, (27, 11, 3, 2), 1),
        x.interpolate(ctx, (5, 2, 2, 1), 1),
        f32(ctx, r, 2).interpolate(ctx, (4, 1, 1, 1), 1),
    ]


@case("rope", (1e-5, 1e-6))
def _rope(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = []
    pos = ints(ctx, r.integers(0, 3000, 5), 5)
    for mode in (0, 2):
        x = f32(ctx, r, 16, 3, 5)
        outs.append(x.rope(ctx, pos, 12, 10000.0, 1.0, rope_type=mode))
        outs.append(
            x.rope(
                ctx,
                pos,
                16,
                500000.0,
                0.25,
                rope_type=mode,
                factors=f32(ctx, r, 8, lo=1, hi=4),
                extrapolation_factor=1.0,
                original_context_length=4096,
                attention_factor=1.0,
            )
        )
    xh = typed(ctx, r, DType.F16, 8, 2, 5)
    outs.append(xh.rope(ctx, pos, 8, 10000.0, 1.0, rope_type=2))
    xq = typed(ctx, r, DType.Q8_0, 32, 2, 5)
    outs.append(xq.rope(ctx, pos, 32, 10000.0, 1.0))
    mpos = ints(ctx, r.integers(0, 100, 20), 20)
    for mode, secs, d in ((8, (2, 3, 3, 0), 16), (40, (2, 3, 3, 0), 16), (24, (2, 2, 2, 2), 8)):
        x = f32(ctx, r, 16, 2, 5)
        outs.append(x.rope(ctx, mpos, d, 10000.0, 1.0, rope_type=mode, sections=secs))
    return outs


def _attn(
    ctx: Context,
    r: np.random.Generator,
    kv: DType,
    mask: DType | None,
    sinks: bool,
    lq: int = 3,
    lk: int = 7,
    h: int = 4,
    hkv: int = 2,
    batch: int = 1,
    m2: int = 1,
) -> Tensor:
    q = f32(ctx, r, 8, h, lq, batch)
    k, v = typed(ctx, r, kv, 8, hkv, lk, batch), typed(ctx, r, kv, 6, hkv, lk, batch)
    m = None
    if mask is not None:
        mv = r.uniform(-2, 2, size=(1, m2, lq + 1, lk)).astype(np.float32)
        mv[..., 0, -1] = -np.inf
        mt = ctx.input().from_floats(mv, lk, lq + 1, m2, 1)
        m = mt if mask == DType.F32 else mt.cast(ctx, mask)
    s = f32(ctx, r, h, lo=-2, hi=2) if sinks else None
    return q.scaled_dot_product_attention(ctx, k, v, m, s, None, 0.35, False)


@case("sdpa_f32", (1e-5, 1e-6))
def _sdpa(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    outs = [
        _attn(ctx, r, DType.F32, None, False),
        _attn(ctx, r, DType.F32, DType.F32, False),
        _attn(ctx, r, DType.F32, DType.F16, False, m2=4),
        _attn(ctx, r, DType.F32, DType.F32, True, m2=2),
        _attn(ctx, r, DType.F32, DType.F32, False, batch=2, h=6, hkv=3),
        _attn(ctx, r, DType.F32, None, True, lq=1, h=2, hkv=1),
    ]
    q = f32(ctx, r, 8, 4, 2)
    kv = f32(ctx, r, 8, 1, 5)
    vmla = f32(ctx, r, 8, 3, 4)
    outs.append(q.scaled_dot_product_attention(ctx, kv, kv, None, None, vmla, 0.5, False))
    return outs


@case("sdpa_f16", (3e-3, 1e-3))
def _sdpa_f16(ctx: Context, r: np.random.Generator) -> list[Tensor]:
    return [_attn(ctx, r, DType.F16, DType.F16, False), _attn(ctx, r, DType.F16, None, True)]
