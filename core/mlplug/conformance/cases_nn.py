"""Cases of the network ops: pooling, im2col, convolutions, state-space ops, interpolation,
RoPE (every mode, YaRN, frequency factors) and scaled dot-product attention."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..context import Context
from ..dtypes import DType
from ..tensor import Tensor
from . import reference as R
from ._common import EXACT, F16, F32, I32, Q8_0, lbl, max_abs, scaled_bound, sx
from .case import Arg, Case, Inputs, Tolerance

__all__ = ["cases"]

INF = float("inf")


def _pool_cases() -> list[Case]:
    tol = Tolerance(rtol=1e-6)
    bound = scaled_bound(1e-6)
    out = [
        Case(
            "avg_pool_2d-f32-gold-4x4-k2s2",
            "avg_pool_2d",
            (Arg((4, 4), gen="fixed", values=tuple(range(16))),),
            lambda ctx, x: x[0].avg_pool_2d(ctx, 2, 2, 0),
            lambda a: R.avg_pool_2d(a, 2, 2, 0),
            tol,
            out_dtype=F32,
            bound=bound,
            gold=((2.5, 4.5, 10.5, 12.5),),
        )
    ]
    for ne, k, s, p, dt in (
        ((7, 6, 3, 2), 3, 2, 0, F32),
        ((6, 6, 2), 3, 1, 1, F32),
        ((5, 5), 2, 1, 0, F32),
        ((6, 4, 2), 2, 2, 0, F16),
        ((9, 7, 3), 2, 1, 0.5, F32),  # a fractional padding
        ((6, 5, 2), 4, 1, 2.5, F32),  # needs trailing zeros beyond int(p) (last window)
    ):
        out.append(
            Case(
                f"avg_pool_2d-{lbl(dt)}-{sx(ne)}-k{k}s{s}p{p}",
                "avg_pool_2d",
                (Arg(ne, dt),),
                lambda ctx, x, a=(k, s, p): x[0].avg_pool_2d(ctx, *a),
                lambda v, a=(k, s, p): R.avg_pool_2d(v, *a),
                tol,
                dtype=lbl(dt),
                out_dtype=F32,
                bound=bound,
            )
        )
    out.append(
        Case(
            "avg_pool_2d-f32-perm-8x6x2",
            "avg_pool_2d",
            (Arg((6, 8, 2)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0, 2, 3).avg_pool_2d(ctx, 2, 2, 0),
            lambda a: R.avg_pool_2d(R.permute(a, (1, 0, 2, 3)), 2, 2, 0),
            tol,
            out_dtype=F32,
            bound=bound,
        )
    )
    return out


ConvP = tuple[int, int, int, int, int, int]


def _conv_cases() -> list[Case]:
    out: list[Case] = []
    im2col_geoms: list[tuple[tuple[int, ...], tuple[int, int, int], ConvP, DType]] = [
        ((5, 4, 2, 1), (3, 3, 2), (1, 1, 1, 1, 1, 1), F32),
        ((7, 6, 1, 2), (3, 2, 1), (2, 1, 0, 1, 1, 2), F32),
        ((6, 5, 3), (2, 2, 3), (2, 2, 0, 0, 1, 1), F16),
        # one-wide kernels with padding: the windows reach the trailing padding
        ((5, 4, 2, 1), (3, 1, 2), (1, 1, 1, 1, 1, 1), F32),
        ((5, 4, 2, 1), (1, 3, 2), (1, 1, 1, 1, 1, 1), F32),
        # stride, padding and dilation each different per axis
        ((9, 8, 2, 1), (3, 2, 2), (2, 3, 2, 1, 1, 2), F32),
    ]
    for ne, (kw, kh, c), p, kdt in im2col_geoms:
        out.append(
            Case(
                f"im2col-f32-{sx(ne)}-k{kw}x{kh}-{''.join(map(str, p))}",
                "im2col",
                (Arg(ne),),
                lambda ctx, x, k=(kw, kh, c), p=p, d=kdt: (
                    ctx.input().empty(d, *k).im2col(ctx, x[0], *p)
                ),
                lambda a, k=(kw, kh), p=p: R.im2col(a, *k, *p),
                EXACT,
                out_dtype=F32,
            )
        )

    def conv_bound(factor: float, round_x: bool = False) -> Callable[..., np.ndarray]:
        def bound(w: np.ndarray, x: np.ndarray) -> np.ndarray:
            w_sum = float(np.abs(R.v4(w)).reshape(R.v4(w).shape[0], -1).sum(-1).max())
            return np.asarray(factor * w_sum * max_abs(R.f16(x) if round_x else x))

        return bound

    conv_geoms: list[tuple[str, tuple[int, ...], tuple[int, ...], ConvP, DType]] = [
        ("3x3", (3, 3, 2, 4), (6, 5, 2, 2), (1, 1, 1, 1, 1, 1), F32),
        ("s2-d2", (3, 2, 3, 2), (9, 7, 3, 1), (2, 1, 0, 1, 1, 2), F32),
        ("1x1", (1, 1, 4, 3), (5, 5, 4, 2), (1, 1, 0, 0, 1, 1), F32),
        ("3x3", (3, 3, 2, 3), (6, 6, 2, 1), (1, 1, 1, 1, 1, 1), F16),
    ]
    for tag, wne, xne, p, wdt in conv_geoms:
        f16w = wdt == F16
        ref = (
            (lambda w, x, p=p: R.conv_2d(w, R.f16(x), *p))
            if f16w
            else (lambda w, x, p=p: R.conv_2d(w, x, *p))
        )
        out.append(
            Case(
                f"conv_2d-{lbl(wdt)}-{tag}-{sx(xne)}",
                "conv_2d",
                (Arg(wne, wdt), Arg(xne)),
                lambda ctx, x, p=p: x[0].conv_2d(ctx, x[1], *p),
                ref,
                Tolerance(rtol=2e-3 if f16w else 1e-4),
                dtype=lbl(wdt),
                out_dtype=F32,
                bound=conv_bound(1e-5, f16w),
            )
        )
    out += [
        Case(
            "conv_2d-f32-gold-ones",
            "conv_2d",
            (
                Arg((2, 2, 1, 1), gen="fixed", values=(1, 1, 1, 1)),
                Arg((3, 3, 1, 1), gen="fixed", values=tuple(range(9))),
            ),
            lambda ctx, x: x[0].conv_2d(ctx, x[1], 1, 1, 0, 0, 1, 1),
            lambda w, x: R.conv_2d(w, x, 1, 1, 0, 0, 1, 1),
            Tolerance(rtol=1e-4),
            out_dtype=F32,
            bound=conv_bound(1e-5),
            gold=((8, 12, 20, 24),),
        ),
        Case(
            "conv_2d-f32-perm-input",
            "conv_2d",
            (Arg((3, 3, 2, 2)), Arg((5, 6, 2))),
            lambda ctx, x: x[0].conv_2d(ctx, x[1].permute(ctx, 1, 0, 2, 3), 1, 1, 0, 0, 1, 1),
            lambda w, x: R.conv_2d(w, R.permute(x, (1, 0, 2, 3)), 1, 1, 0, 0, 1, 1),
            Tolerance(rtol=1e-4),
            out_dtype=F32,
            bound=conv_bound(1e-5),
        ),
    ]
    conv3: list[tuple[str, tuple[int, ...], tuple[int, ...], int, Sequence[int], DType]] = [
        ("patch", (2, 3, 2, 12), (2, 3, 2, 6), 3, (2, 3, 2, 0, 0, 0, 1, 1, 1), F32),
        ("pad", (4, 4, 1, 6), (2, 2, 1, 4), 2, (1, 1, 1, 1, 1, 0, 1, 1, 1), F32),
        ("dilation", (2, 2, 2, 4), (3, 3, 3, 2), 2, (1, 1, 1, 0, 0, 0, 2, 2, 2), F32),
        ("patch", (2, 2, 2, 6), (2, 2, 2, 6), 3, (2, 2, 2, 0, 0, 0, 1, 1, 1), F16),
    ]
    for tag, wne, xne, c, q, wdt in conv3:
        f16w = wdt == F16
        out.append(
            Case(
                f"conv_3d-{lbl(wdt)}-{tag}-{sx(wne)}",
                "conv_3d",
                (Arg(wne, wdt), Arg(xne)),
                lambda ctx, x, c=c, q=q: x[0].conv_3d(ctx, x[1], c, *q),
                lambda w, x, c=c, q=q, r=f16w: R.conv_3d(
                    w, R.f16(x) if r else x, c, q[0:3], q[3:6], q[6:9]
                ),
                Tolerance(rtol=2e-3 if f16w else 1e-4),
                dtype=lbl(wdt),
                out_dtype=F32,
                bound=conv_bound(1e-5, f16w),
            )
        )
    return out


def _ssm_cases() -> list[Case]:
    tol = Tolerance(atol=1e-6, rtol=1e-5)
    out = [
        Case(
            "ssm_conv-f32-gold",
            "ssm_conv",
            (
                Arg((4, 1, 1), gen="fixed", values=(1, 2, 3, 4)),
                Arg((3, 1), gen="fixed", values=(1, 0, -1)),
            ),
            lambda ctx, x: x[0].ssm_conv(ctx, x[1]),
            R.ssm_conv,
            tol,
            out_dtype=F32,
            gold=((-2, -2),),
        ),
        Case(
            "ssm_conv-f32-8x6x2-k4",
            "ssm_conv",
            (Arg((8, 6, 2)), Arg((4, 6))),
            lambda ctx, x: x[0].ssm_conv(ctx, x[1]),
            R.ssm_conv,
            tol,
            out_dtype=F32,
        ),
        Case(
            "ssm_conv-f32-6x3-k4",
            "ssm_conv",
            (Arg((6, 3)), Arg((4, 3))),
            lambda ctx, x: x[0].ssm_conv(ctx, x[1]),
            R.ssm_conv,
            tol,
            out_dtype=F32,
        ),
        Case(
            "ssm_conv-f32-slice-8x6x2",
            "ssm_conv",
            (Arg((10, 6, 2)), Arg((4, 6))),
            lambda ctx, x: x[0].slice(ctx, 0, 1, 9, 1).ssm_conv(ctx, x[1]),
            lambda s, k: R.ssm_conv(R.slice_(s, 0, 1, 9, 1), k),
            tol,
            out_dtype=F32,
        ),
    ]
    scan_tol = Tolerance(atol=1e-5, rtol=1e-4)

    def scan_args(
        d_state: int,
        head_dim: int,
        n_head: int,
        n_group: int,
        n_tok: int,
        ids: tuple[int, ...],
        n_slots: int,
        a_state: bool,
        dt_range: tuple[float, float] = (-3.0, 3.0),
    ) -> tuple[Arg, ...]:
        n_seq = len(ids)
        return (
            Arg((d_state, head_dim, n_head, n_slots)),
            Arg((head_dim, n_head, n_tok, n_seq)),
            Arg((n_head, n_tok, n_seq), lo=dt_range[0], hi=dt_range[1]),
            Arg((d_state if a_state else 1, n_head), lo=-2.0, hi=-0.5),
            Arg((d_state, n_group, n_tok, n_seq)),
            Arg((d_state, n_group, n_tok, n_seq)),
            Arg((n_seq,), I32, gen="fixed", values=ids),
        )

    def scan(ctx: Context, x: Inputs) -> Tensor:
        return x[0].ssm_scan(ctx, x[1], x[2], x[3], x[4], x[5], x[6])

    for tag, args in (
        ("mamba2-8x4x4-t5-s2", scan_args(8, 4, 4, 2, 5, (2, 0), 3, False)),
        ("mamba1-4x3x2-t4", scan_args(4, 3, 2, 1, 4, (1,), 2, True)),
        ("decode-8x2x4-s3", scan_args(8, 2, 4, 4, 1, (1, 2, 0), 3, False)),
        ("big-dt-4x2x2-t3", scan_args(4, 2, 2, 1, 3, (0,), 1, False, (15, 25))),
    ):
        out.append(
            Case(f"ssm_scan-f32-{tag}", "ssm_scan", args, scan, R.ssm_scan, scan_tol, out_dtype=F32)
        )
    return out


def _interpolate_cases() -> list[Case]:
    tol = Tolerance(rtol=1e-6)

    def mk(
        tag: str,
        arg: Arg,
        dims: tuple[int, int, int, int],
        mode: int,
        gold: tuple[float, ...] | None = None,
        perm: bool = False,
    ) -> Case:
        def build(ctx: Context, x: Inputs) -> Tensor:
            t = x[0].permute(ctx, 1, 0, 2, 3) if perm else x[0]
            return t.interpolate(ctx, dims, mode)

        def ref(a: np.ndarray) -> np.ndarray:
            return R.interpolate(R.permute(a, (1, 0, 2, 3)) if perm else a, dims, mode)

        name = "nearest" if mode == 0 else "bilinear"
        return Case(
            f"interpolate-f32-{name}-{tag}",
            "interpolate",
            (arg,),
            build,
            ref,
            EXACT if mode == 0 else tol,
            out_dtype=F32,
            bound=None if mode == 0 else scaled_bound(1e-6),
            gold=None if gold is None else (gold,),
        )

    row = Arg((2,), gen="fixed", values=(0, 10))
    return [
        mk("gold-2-to-4", row, (4, 1, 1, 1), 0, (0, 0, 10, 10)),
        mk("gold-2-to-4", row, (4, 1, 1, 1), 1, (0, 2.5, 7.5, 10)),
        mk(
            "gold-14-to-2",
            Arg((14,), gen="fixed", values=tuple(range(14))),
            (2, 1, 1, 1),
            0,
            (0, 6),
        ),
        mk("up-5x4x3", Arg((5, 4, 3)), (8, 6, 3, 1), 1),
        mk("down-9x7x2", Arg((9, 7, 2)), (4, 3, 2, 1), 1),
        mk("dim2-4x4x3", Arg((4, 4, 3)), (6, 6, 5, 1), 1),
        mk("up-3x2x2", Arg((3, 2, 2)), (6, 4, 4, 2), 0),
        mk("down-7x5x2", Arg((7, 5, 2)), (3, 2, 2, 1), 0),
        mk("mixed-3x2x2x2", Arg((3, 2, 2, 2)), (5, 4, 3, 1), 0),  # each dim its own size
        mk("perm-6x4", Arg((4, 6)), (9, 5, 1, 1), 1, perm=True),
    ]


def _rope_cases() -> list[Case]:
    """RoPE against exact (float64) angles, bounded by the float32 angle error (``rope_bound``)."""

    def mk(
        tag: str,
        args: tuple[Arg, ...],
        n_dims: int,
        base: float,
        scale: float,
        kw: dict[str, Any] | None = None,
        dtype: DType = F32,
        gold: tuple[float, ...] | None = None,
        perm: bool = False,
        fview: tuple[Callable[[Context, Tensor], Tensor], Callable[..., np.ndarray]] | None = None,
    ) -> Case:
        kw = kw or {}
        has_factors = "factors" in kw
        opts: dict[str, Any] = {k: v for k, v in kw.items() if k != "factors"}

        def build(ctx: Context, x: Inputs) -> Tensor:
            t = x[0].permute(ctx, 0, 2, 1, 3) if perm else x[0]
            fx = fview[0](ctx, x[2]) if fview and has_factors else x[2] if has_factors else None
            f: dict[str, Any] = {"factors": fx} if fx is not None else {}
            return t.rope(ctx, x[1], n_dims, base, scale, **opts, **f)

        ref_kw = {
            "mode": opts.get("rope_type", 0),
            "sections": opts.get("sections", ()),
            "n_ctx_orig": opts.get("original_context_length") or 131072,
            "ext_factor": opts.get("extrapolation_factor", 0.0),
            "attn_factor": opts.get("attention_factor") or 1.0,
            "beta_fast": opts.get("beta_fast") or 32.0,
            "beta_slow": opts.get("beta_slow") or 1.0,
        }

        def ref(x: np.ndarray, pos: np.ndarray, *f: np.ndarray) -> np.ndarray:
            xx = R.permute(x, (0, 2, 1, 3)) if perm else x
            fac = (fview[1](f[0]) if fview else f[0]) if f else None
            return R.rope(xx, pos, n_dims, base, scale, factors=fac, **ref_kw)

        def bound(x: np.ndarray, pos: np.ndarray, *f: np.ndarray) -> np.ndarray:
            xx = R.permute(x, (0, 2, 1, 3)) if perm else x
            fac = (fview[1](f[0]) if fview else f[0]) if f else None
            return R.rope_bound(xx, pos, n_dims, base, scale, factors=fac, **ref_kw)

        out_dt = F32 if dtype.is_quantized else dtype
        return Case(
            f"rope-{lbl(dtype)}-{tag}",
            "rope",
            args,
            build,
            ref,
            Tolerance(rtol=1e-3) if dtype == F16 else Tolerance(),
            dtype=lbl(dtype),
            out_dtype=out_dt,
            bound=bound,
            gold=None if gold is None else (gold,),
            gold_atol=6e-5,
        )

    def pos(n: int, hi: int = 3000) -> Arg:
        return Arg((n,), I32, gen="int", lo=0, hi=hi)

    x4 = Arg((4, 1, 1), gen="fixed", values=(1, 2, 3, 4))
    one = Arg((1,), I32, gen="fixed", values=(1,))
    mrope = {"sections": (2, 3, 3)}
    return [
        mk("gold-normal", (x4, one), 4, 10000, 1.0, gold=(-1.1426, 1.9221, 2.9599, 4.0298)),
        mk(
            "gold-neox",
            (x4, one),
            4,
            10000,
            1.0,
            {"rope_type": 2},
            gold=(-1.9841, 1.9599, 2.4624, 4.0198),
        ),
        mk("normal-16x4x5", (Arg((16, 4, 5)), pos(5)), 16, 10000, 1.0),
        mk("normal-partial-16x2x3x2", (Arg((16, 2, 3, 2)), pos(3)), 8, 10000, 1.0),
        mk("neox-16x4x5", (Arg((16, 4, 5)), pos(5)), 16, 1e6, 0.5, {"rope_type": 2}),
        mk(
            "neox-factors-16x2x4",
            (Arg((16, 2, 4)), pos(4, 1000), Arg((8,), lo=1, hi=4)),
            16,
            10000,
            1.0,
            {"rope_type": 2, "factors": True},
        ),
        mk(  # factors as a 4x2 tensor: ggml reads them flat
            "neox-factors-2d-16x2x4",
            (Arg((16, 2, 4)), pos(4, 1000), Arg((4, 2), lo=1, hi=4)),
            16,
            10000,
            1.0,
            {"rope_type": 2, "factors": True},
        ),
        mk(  # factors as a transposed view of a 2x4 tensor
            "neox-factors-perm-16x2x4",
            (Arg((16, 2, 4)), pos(4, 1000), Arg((2, 4), lo=1, hi=4)),
            16,
            10000,
            1.0,
            {"rope_type": 2, "factors": True},
            fview=(
                lambda ctx, f: f.permute(ctx, 1, 0, 2, 3),
                lambda f: R.permute(f, (1, 0, 2, 3)),
            ),
        ),
        mk(
            "normal-yarn-16x2x4",
            (Arg((16, 2, 4)), pos(4, 1000)),
            16,
            10000,
            0.25,
            {"original_context_length": 64, "extrapolation_factor": 1.0},
        ),
        mk(
            "neox-yarn-16x2x4",
            (Arg((16, 2, 4)), pos(4, 1000)),
            16,
            150000,
            1 / 32,
            {
                "rope_type": 2,
                "original_context_length": 4096,
                "extrapolation_factor": 1.0,
                "attention_factor": 1.0,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
            },
        ),
        mk(
            "mrope-16x2x3",
            (Arg((16, 2, 3)), pos(12, 500)),
            16,
            10000,
            1.0,
            {"rope_type": 8, **mrope},
        ),
        mk(
            "imrope-16x2x3",
            (Arg((16, 2, 3)), pos(12, 500)),
            16,
            10000,
            1.0,
            # sections with 3*s0 above every t-sector: ggml builds differ on the others
            # (ollama v0.17.5's ggml falls back to t, later ggml to e); models never reach them
            {"rope_type": 40, "sections": (3, 3, 2)},
        ),
        mk(
            "vision-16x2x3",
            (Arg((16, 2, 3)), pos(12, 100)),
            8,
            10000,
            1.0,
            {"rope_type": 24, "sections": (4, 4)},
        ),
        mk(
            "mrope-wrap-16x2x5",  # sections cover fewer pairs than n_dims/2: sectors wrap
            (Arg((16, 2, 5)), pos(20, 200)),
            12,
            10000,
            1.0,
            {"rope_type": 8, "sections": (1, 1, 2)},
        ),
        *(
            mk(
                f"{name}-yarn-factors-16x3x5",
                (Arg((16, 3, 5)), pos(5), Arg((8,), lo=1, hi=4)),
                16,
                500000,
                0.25,
                {
                    "rope_type": mode,
                    "factors": True,
                    "original_context_length": 4096,
                    "extrapolation_factor": 1.0,
                    "attention_factor": 1.0,
                },
            )
            for name, mode in (("normal", 0), ("neox", 2))
        ),
        mk("normal-16x2x3", (Arg((16, 2, 3), F16), pos(3)), 16, 10000, 1.0, dtype=F16),
        mk("neox-16x2x3", (Arg((16, 2, 3), F16), pos(3)), 16, 10000, 1.0, {"rope_type": 2}, F16),
        mk(
            "mrope-2d-pos-factors-8x2x5",  # positions as a [tokens, 4] tensor
            (Arg((8, 2, 5)), Arg((5, 4), I32, gen="int", lo=0, hi=300), Arg((4,), lo=0.5, hi=2)),
            8,
            10000,
            1.0,
            {"rope_type": 8, "sections": (2, 1, 1), "factors": True},
        ),
        mk("normal-32x2x3", (Arg((32, 2, 3), Q8_0), pos(3)), 32, 10000, 1.0, dtype=Q8_0),
        mk(
            "neox-perm-16x2x3",
            (Arg((16, 3, 2)), pos(3)),
            16,
            10000,
            1.0,
            {"rope_type": 2},
            perm=True,
        ),
    ]


def _mask(ne: tuple[int, ...], dt: DType = F32) -> Arg:
    return Arg(ne, dt, gen="mask")


def _sdpa_cases() -> list[Case]:
    op = "scaled_dot_product_attention"
    tol = Tolerance(atol=1e-6, rtol=1e-5)

    def mk(
        tag: str,
        args: tuple[Arg, ...],
        scale: float,
        *,
        mask: bool = False,
        sinks: bool = False,
        vmla: bool = False,
        applied: bool = False,
        gold: tuple[float, ...] | None = None,
    ) -> Case:
        f16 = args[1].dtype == F16

        def build(ctx: Context, x: Inputs) -> Tensor:
            i = 3
            m = s = v = None
            if mask:
                m, i = x[i], i + 1
            if sinks:
                s, i = x[i], i + 1
            if vmla:
                v = x[i]
            value = x[2]
            if applied and ctx.backend.cache_config().permuted_v:
                value = value.permute(ctx, 1, 2, 0, 3).contiguous(ctx)
            return x[0].scaled_dot_product_attention(ctx, x[1], value, m, s, v, scale, applied)

        def ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, *rest: np.ndarray) -> np.ndarray:
            it = iter(rest)
            m = next(it) if mask else None
            s = next(it) if sinks else None
            w = next(it) if vmla else None
            return R.sdpa(q, k, v, scale, mask=m, sinks=s, vmla=w)

        return Case(
            f"{op}-{'f16kv' if f16 else 'f32'}-{tag}",
            op,
            args,
            build,
            ref,
            Tolerance(rtol=3e-3) if f16 else tol,
            dtype="f16" if f16 else "f32",
            out_dtype=F32,
            bound=scaled_bound(1e-3, 2) if f16 else None,
            gold=None if gold is None else (gold,),
            gold_atol=6e-5,
        )

    def qkv(
        dk: int, dv: int, h: int, hkv: int, lq: int, lk: int, b: int = 1, kv: DType = F32
    ) -> tuple[Arg, Arg, Arg]:
        tail = (b,) if b > 1 else ()
        return (
            Arg((dk, h, lq, *tail)),
            Arg((dk, hkv, lk, *tail), kv),
            Arg((dv, hkv, lk, *tail), kv),
        )

    gold_q = (
        Arg((1, 2, 1), gen="fixed", values=(1, 2)),
        Arg((1, 1, 2), gen="fixed", values=(1, 0)),
        Arg((1, 1, 2), gen="fixed", values=(10, 20)),
    )
    s8 = 1 / math.sqrt(8)
    return [
        mk("gold-gqa", gold_q, 1.0, gold=(12.6894, 11.1920)),
        mk(
            "gold-gqa-sinks",
            (*gold_q, Arg((2,), gen="fixed", values=(0.5, -1))),
            1.0,
            sinks=True,
            gold=(8.7913, 10.7219),
        ),
        mk("gqa-8x4x3-kv2x5", qkv(8, 6, 4, 2, 3, 5), s8),
        mk("mask-8x4x3-kv2x5", (*qkv(8, 6, 4, 2, 3, 5), _mask((5, 4, 2, 1))), s8, mask=True),
        mk(
            "mask-sinks-8x4x3",
            (*qkv(8, 8, 4, 1, 3, 6), _mask((6, 3)), Arg((4,))),
            s8,
            mask=True,
            sinks=True,
        ),
        mk("batch-8x4x2x2", (*qkv(8, 8, 4, 2, 2, 4, b=2), _mask((4, 2, 1, 1))), s8, mask=True),
        mk(  # mask planes repeated over heads (4 / 2) and batch (4 / 2)
            "mask-planes-8x4x2x4",
            (*qkv(8, 8, 4, 2, 2, 5, b=4), _mask((5, 2, 2, 2))),
            s8,
            mask=True,
        ),
        mk("vmla-8x4x3", (*qkv(8, 6, 4, 1, 3, 5), Arg((6, 5, 2))), s8, vmla=True),
        mk("decode-sinks-8x2x1", (*qkv(8, 6, 2, 1, 1, 7), Arg((2,), lo=-2, hi=2)), s8, sinks=True),
        mk(
            "mask-f16-heads-8x4x3",  # an F16 mask with one plane per head
            (*qkv(8, 6, 4, 2, 3, 5), _mask((5, 4, 4, 1), F16)),
            s8,
            mask=True,
        ),
        mk(
            "cache-applied-8x4x3",
            (*qkv(8, 6, 4, 2, 3, 5), _mask((5, 3))),
            s8,
            mask=True,
            applied=True,
        ),
        mk("gqa-8x4x3-kv2x5", (*qkv(8, 6, 4, 2, 3, 5, kv=F16), _mask((5, 4), F16)), s8, mask=True),
    ]


def cases() -> list[Case]:
    """Return the network-op cases."""
    return [
        *_pool_cases(),
        *_conv_cases(),
        *_ssm_cases(),
        *_interpolate_cases(),
        *_rope_cases(),
        *_sdpa_cases(),
    ]
