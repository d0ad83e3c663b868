"""Fused ops against their decomposition into public ops, on the same backend.

A backend's fused kernel (attention, a norm with its weight, a gated activation, rope) must
agree with the same computation spelled out in simpler public ops. Each case here builds both
on the backend under test and returns three outputs: the fused result, the decomposed result
(each checked against the float64 reference) and their difference, which must stay within the
sum of both tolerances (the backend against itself, so a fused kernel cannot drift from its
parts even where the reference's tolerance would allow it).

Decompositions: attention as ``mulmat(K, Q)``, ``scale``, ``+ mask`` (``-inf`` entries),
``softmax`` (sinks as an extra logit column that is dropped again), ``mulmat(V^T, P)``, with
grouped-query heads met through mulmat's batch broadcast; ``rms_norm`` / ``layer_norm`` /
``l2_norm`` with weight and bias as ``mean``, ``sqrt``, ``div``, ``mul``, ``add``; the gated
activations ``act(g, up)`` as ``act(g) * up``; ``silu_alpha_limit`` as ``clamp``, ``scale``,
``sigmoid``, ``mul``, ``add``; rope (normal, neox, partial rotation) as pairs rotated by
``cos``/``sin`` tables with ``mul``, ``sub``, ``add`` and ``concat``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..context import Context
from ..dtypes import DType
from ..tensor import Tensor
from . import reference as R
from ._common import F16, F32, I32, lbl, max_abs
from .case import Arg, Case, Inputs, Tolerance
from .cases_sizes import FLASH

__all__ = ["attention_case", "attention_parts", "cases", "fused_case"]

Builder = Callable[[Context, Inputs], Tensor]
Bound = Callable[..., np.ndarray]


def fused_case(
    case_id: str,
    op: str,
    args: tuple[Arg, ...],
    fused: Builder,
    parts: Builder,
    ref: Callable[..., np.ndarray],
    tol: Tolerance,
    *,
    bound: Bound | None = None,
    dtype: str = "f32",
    out_dtype: DType = F32,
    tier: str = "default",
    backend_params: tuple[tuple[str, object], ...] = (),
) -> Case:
    """A case whose outputs are ``fused``, ``parts`` and ``fused - parts`` (reference 0).

    ``tol`` (``atol``/``rtol``, no NMSE) and the optional per-element ``bound`` hold the first
    two against ``ref``; the difference is held to twice that (the triangle inequality).
    """
    if tol.nmse is not None or tol.ulp is not None:
        msg = f"{case_id}: fused cases take an atol/rtol tolerance"
        raise ValueError(msg)

    def build(ctx: Context, x: Inputs) -> list[Tensor]:
        a, b = fused(ctx, x), parts(ctx, x)
        return [a, b, a.sub(ctx, b)]

    def reference(*ops: np.ndarray) -> list[np.ndarray]:
        r = np.asarray(ref(*ops), np.float64)
        return [r, r, np.zeros_like(r)]

    def bounds(*ops: np.ndarray) -> list[np.ndarray]:
        r = np.asarray(ref(*ops), np.float64)
        extra = np.zeros_like(r) if bound is None else np.broadcast_to(bound(*ops), r.shape)
        return [extra, extra, tol.atol + 2 * tol.rtol * np.abs(r) + 2 * extra]

    return Case(
        case_id,
        op,
        args,
        build,
        reference,
        tol,
        dtype=dtype,
        out_dtype=out_dtype,
        bound=bounds,
        tier=tier,
        backend_params=backend_params,
    )


# -- attention ------------------------------------------------------------------------------
def attention_parts(
    ctx: Context,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    mask: Tensor | None = None,
    sinks: Tensor | None = None,
) -> Tensor:
    """Attention from public ops: q ``[dk, H, Lq]``, k ``[dk, Hkv, Lk]``, v ``[dv, Hkv, Lk]``."""
    lq, h = q.ne[2], q.ne[1]
    lk = k.ne[2]
    qp = q.permute(ctx, 0, 2, 1, 3)  # [dk, Lq, H]
    kp = k.permute(ctx, 0, 2, 1, 3).contiguous(ctx)  # [dk, Lk, Hkv]
    logits = kp.mulmat(ctx, qp).scale(ctx, scale)  # [Lk, Lq, H]; head h uses kv h // (H/Hkv)
    if mask is not None:
        logits = logits.add(ctx, mask.slice(ctx, 1, 0, lq, 1))
    if sinks is not None:
        col = sinks.reshape(ctx, 1, 1, h).repeat(ctx, 1, lq)  # [1, Lq, H]
        p = logits.concat(ctx, col, 0).softmax(ctx).slice(ctx, 0, 0, lk, 1)
    else:
        p = logits.softmax(ctx)
    vt = v.permute(ctx, 1, 2, 0, 3).contiguous(ctx)  # [Lk, dv, Hkv]
    o = vt.mulmat(ctx, p.contiguous(ctx))  # [dv, Lq, H]
    return o.permute(ctx, 0, 2, 1, 3).contiguous(ctx)  # [dv, H, Lq]


def attention_case(
    tag: str,
    dk: int,
    h: int,
    hkv: int,
    lq: int,
    lk: int,
    *,
    dv: int | None = None,
    kv: DType = F32,
    mask: str = "",
    sinks: bool = False,
    flash: bool = False,
    tier: str = "default",
) -> Case:
    """sdpa against :func:`attention_parts`; ``mask`` is ``""``, ``"shared"`` or ``"heads"``."""
    op = "scaled_dot_product_attention"
    dv = dv or dk
    scale = 1 / math.sqrt(dk)
    args = [
        Arg((dk, h, lq), lo=-2, hi=2),
        Arg((dk, hkv, lk), kv, lo=-2, hi=2),
        Arg((dv, hkv, lk), kv),
    ]
    if mask:
        args.append(Arg((lk, lq + 2, h) if mask == "heads" else (lk, lq + 2), gen="mask"))
    if sinks:
        args.append(Arg((h,), lo=-2, hi=2))

    def split(x: Sequence[object]) -> tuple[object | None, object | None]:
        rest = list(x[3:])
        m = rest.pop(0) if mask else None
        s = rest.pop(0) if sinks else None
        return m, s

    def fused(ctx: Context, x: Inputs) -> Tensor:
        m, s = split(list(x))
        return x[0].scaled_dot_product_attention(
            ctx,
            x[1],
            x[2],
            m,  # type: ignore[arg-type]
            s,  # type: ignore[arg-type]
            None,
            scale,
            False,
        )

    def parts(ctx: Context, x: Inputs) -> Tensor:
        m, s = split(list(x))
        return attention_parts(ctx, x[0], x[1], x[2], scale, m, s)  # type: ignore[arg-type]

    def ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, *rest: np.ndarray) -> np.ndarray:
        m, s = split([q, k, v, *rest])
        return R.sdpa(q, k, v, scale, mask=m, sinks=s)  # type: ignore[arg-type]

    f16 = kv == F16
    tol = Tolerance(atol=1e-6, rtol=1e-5)
    bound: Bound | None = None
    if f16:  # both paths round K and Q·K inputs to f16; ggml's flash path also accumulates V in f16
        tol = Tolerance(rtol=3e-3)
        factor = 4e-3 if flash else 1e-3

        def bound(*ops: np.ndarray) -> np.ndarray:
            return np.asarray(factor * max_abs(ops[2]))

    return fused_case(
        f"{op}-{'f16kv' if f16 else 'f32'}-parts-{tag}{'-flash' if flash else ''}",
        op,
        tuple(args),
        fused,
        parts,
        ref,
        tol,
        bound=bound,
        dtype="f16" if f16 else "f32",
        tier=tier,
        backend_params=FLASH if flash else (),
    )


def _attention_cases() -> list[Case]:
    out: list[Case] = []
    for flash in (False, True):
        out += [
            attention_case("gqa-8x4x3-kv2x5", 8, 4, 2, 3, 5, dv=6, mask="shared", flash=flash),
            attention_case("heads-8x4x2-kv1x6", 8, 4, 1, 2, 6, mask="heads", flash=flash),
            attention_case(
                "sinks-8x2x3-kv2x7", 8, 2, 2, 3, 7, mask="shared", sinks=True, flash=flash
            ),
            attention_case("nomask-8x2x1-kv1x4", 8, 2, 1, 1, 4, flash=flash),
            attention_case("one-key-8x2x1-kv1x1", 8, 2, 1, 1, 1, flash=flash),
            attention_case("one-key-8x4x3-kv2x1", 8, 4, 2, 3, 1, mask="shared", flash=flash),
            attention_case("gqa-8x4x3-kv2x5", 8, 4, 2, 3, 5, kv=F16, mask="shared", flash=flash),
            attention_case(
                "full-d128-h8x2-q9-k73", 128, 8, 2, 9, 73, mask="shared", flash=flash, tier="full"
            ),
            attention_case(
                "full-d256-h8x2-q4-k300",
                256,
                8,
                2,
                4,
                300,
                mask="shared",
                sinks=True,
                flash=flash,
                tier="full",
            ),
            attention_case(
                "full-dk192-dv128-h4x1-q3-k50",
                192,
                4,
                1,
                3,
                50,
                dv=128,
                mask="heads",
                flash=flash,
                tier="full",
            ),
            attention_case(
                "full-d64-h4x4-q5-k40",
                64,
                4,
                4,
                5,
                40,
                kv=F16,
                mask="heads",
                sinks=True,
                flash=flash,
                tier="full",
            ),
        ]
    return out


# -- norms ----------------------------------------------------------------------------------
def _const(ctx: Context, value: float) -> Tensor:
    """A one-element F32 tensor (tiled onto any shape by the binary ops)."""
    return ctx.from_floats(np.asarray([value], np.float32), 1)


def _norm_cases() -> list[Case]:
    tol = Tolerance(atol=1e-6, rtol=1e-5)
    eps = 1e-5
    out: list[Case] = []
    for tag, ne, tier in (("16x4x3", (16, 4, 3), "default"), ("full-1025x4", (1025, 4), "full")):
        w, b = Arg((ne[0],), lo=0.5, hi=2.0), Arg((ne[0],))

        def rms_parts(ctx: Context, x: Inputs) -> Tensor:
            ms = x[0].sqr(ctx).mean(ctx).add(ctx, _const(ctx, eps)).sqrt(ctx)
            return x[0].div(ctx, ms).mul(ctx, x[1])

        def ln_parts(ctx: Context, x: Inputs) -> Tensor:
            d = x[0].sub(ctx, x[0].mean(ctx))
            sd = d.sqr(ctx).mean(ctx).add(ctx, _const(ctx, eps)).sqrt(ctx)
            return d.div(ctx, sd).mul(ctx, x[1]).add(ctx, x[2])

        def l2_parts(ctx: Context, x: Inputs) -> Tensor:
            n = x[0].sqr(ctx).sum_rows(ctx).sqrt(ctx).clamp(ctx, 1e-12, float("inf"))
            return x[0].div(ctx, n)

        out += [
            fused_case(
                f"rms_norm-f32-parts-{tag}",
                "rms_norm",
                (Arg(ne), w),
                lambda ctx, x: x[0].rms_norm(ctx, x[1], eps),
                rms_parts,
                lambda a, ww: R.rms_norm(a, eps, ww),
                tol,
                tier=tier,
            ),
            fused_case(
                f"layer_norm-f32-parts-{tag}",
                "layer_norm",
                (Arg(ne), w, b),
                lambda ctx, x: x[0].layer_norm(ctx, x[1], x[2], eps),
                ln_parts,
                lambda a, ww, bb: R.layer_norm(a, eps, ww, bb),
                tol.scaled(4.0),
                tier=tier,
            ),
            fused_case(
                f"l2_norm-f32-parts-{tag}",
                "l2_norm",
                (Arg(ne),),
                lambda ctx, x: x[0].l2_norm(ctx, 1e-12),
                l2_parts,
                lambda a: R.l2_norm(a, 1e-12),
                tol,
                tier=tier,
            ),
        ]
    return out


# -- gated activations ----------------------------------------------------------------------
def _gated(op: str) -> Builder:
    def build(ctx: Context, x: Inputs) -> Tensor:
        return getattr(x[0], op)(ctx, x[1])  # type: ignore[no-any-return]

    return build


def _act_then_mul(op: str) -> Builder:
    def build(ctx: Context, x: Inputs) -> Tensor:
        act: Tensor = getattr(x[0], op)(ctx)
        return act.mul(ctx, x[1])

    return build


def _gated_cases() -> list[Case]:
    tols = {
        "silu": Tolerance(atol=1e-6, rtol=1e-5),
        "gelu": Tolerance(atol=2e-3, rtol=2e-3),
        "quick_gelu": Tolerance(atol=2e-3, rtol=2e-3),
        "relu": Tolerance(atol=0.0, rtol=1e-7),
    }
    out: list[Case] = []
    for op, tol in tols.items():
        act = R.ACTIVATIONS[op]
        for dt in (F32, F16):
            ne = (16, 5, 2)
            t = tol if dt == F32 else Tolerance(atol=max(tol.atol, 1e-3), rtol=max(tol.rtol, 2e-3))

            def ref(
                g: np.ndarray, u: np.ndarray, act: Callable[..., np.ndarray] = act
            ) -> np.ndarray:
                return np.asarray(act(g) * u)

            out.append(
                fused_case(
                    f"{op}-{lbl(dt)}-parts-gated-{'x'.join(map(str, ne))}",
                    op,
                    (Arg(ne, dt, lo=-4, hi=4), Arg(ne, dt, lo=-2, hi=2)),
                    _gated(op),
                    _act_then_mul(op),
                    ref,
                    t,
                    dtype=lbl(dt),
                    out_dtype=dt,
                )
            )
    alpha, limit = 1.702, 7.0

    def oai_parts(ctx: Context, x: Inputs) -> Tensor:
        g = x[0].clamp(ctx, -float("inf"), limit)
        gate = g.mul(ctx, g.scale(ctx, alpha).sigmoid(ctx))
        return gate.mul(ctx, x[1].clamp(ctx, -limit, limit).add(ctx, _const(ctx, 1.0)))

    out.append(
        fused_case(
            "silu_alpha_limit-f32-parts-16x5x2",
            "silu_alpha_limit",
            (Arg((16, 5, 2), lo=-10, hi=10), Arg((16, 5, 2), lo=-10, hi=10)),
            lambda ctx, x: x[0].silu_alpha_limit(ctx, x[1], alpha, limit),
            oai_parts,
            lambda g, u: R.silu_alpha_limit(g, u, alpha, limit),
            Tolerance(atol=1e-5, rtol=1e-5),
        )
    )
    return out


# -- rope -----------------------------------------------------------------------------------
_ROPE_BASE, _ROPE_SCALE = 10000.0, 0.5


def _rope_tables(pos: Sequence[int], n_dims: int, base: float, scale: float) -> np.ndarray:
    """``cos`` and ``sin`` of each token's angles: ``(2, n_tokens, n_dims / 2)`` float64."""
    k = np.arange(n_dims // 2)
    theta = np.asarray(pos, np.float64)[:, None] * base ** (-2.0 * k / n_dims) * scale
    return np.stack([np.cos(theta), np.sin(theta)])


def _rope_cases() -> list[Case]:
    out: list[Case] = []
    base, scale = _ROPE_BASE, _ROPE_SCALE
    for mode, name in ((0, "normal"), (2, "neox")):
        for d, n_dims, heads in ((16, 16, 3), (16, 8, 2)):
            pos = (0, 5, 17, 300, 999)
            lt = len(pos)
            tables = _rope_tables(pos, n_dims, base, scale)
            half = n_dims // 2
            # ggml shapes: normal [1, half, 1, L] (pair index on dim 1), neox [half, 1, L]
            cos_ne = (1, half, 1, lt) if mode == 0 else (half, 1, lt)
            trig = tuple(
                Arg(cos_ne, gen="fixed", values=tuple(tables[i].reshape(-1).tolist()))
                for i in range(2)
            )
            args = (
                Arg((d, heads, lt)),
                Arg((lt,), I32, gen="fixed", values=tuple(float(p) for p in pos)),
                *trig,
            )

            def parts(
                ctx: Context, x: Inputs, mode: int = mode, n_dims: int = n_dims, d: int = d
            ) -> Tensor:
                t, cos, sin = x[0], x[2], x[3]
                heads, lt = t.ne[1], t.ne[2]
                rot = t.slice(ctx, 0, 0, n_dims, 1).contiguous(ctx)
                if mode == 0:  # pairs (2i, 2i + 1)
                    pairs = rot.reshape(ctx, 2, n_dims // 2, heads, lt)
                    u = pairs.slice(ctx, 0, 0, 1, 1)
                    v = pairs.slice(ctx, 0, 1, 2, 1)
                else:  # pairs (i, i + n/2)
                    u = rot.slice(ctx, 0, 0, n_dims // 2, 1)
                    v = rot.slice(ctx, 0, n_dims // 2, n_dims, 1)
                u2 = u.mul(ctx, cos).sub(ctx, v.mul(ctx, sin))
                v2 = u.mul(ctx, sin).add(ctx, v.mul(ctx, cos))
                both = u2.concat(ctx, v2, 0)
                if mode == 0:
                    both = both.reshape(ctx, n_dims, heads, lt)
                if n_dims == d:
                    return both
                return both.concat(ctx, t.slice(ctx, 0, n_dims, d, 1).contiguous(ctx), 0)

            def ref(
                x: np.ndarray,
                p: np.ndarray,
                *_: np.ndarray,
                mode: int = mode,
                n_dims: int = n_dims,
            ) -> np.ndarray:
                return R.rope(x, p, n_dims, _ROPE_BASE, _ROPE_SCALE, mode=mode)

            def fused(ctx: Context, x: Inputs, mode: int = mode, n_dims: int = n_dims) -> Tensor:
                return x[0].rope(ctx, x[1], n_dims, _ROPE_BASE, _ROPE_SCALE, rope_type=mode)

            def bound(x: np.ndarray, *_: np.ndarray) -> np.ndarray:
                return np.asarray(1e-4 * max_abs(x))

            out.append(
                fused_case(
                    f"rope-f32-parts-{name}-{d}x{heads}x{lt}-r{n_dims}",
                    "rope",
                    args,
                    fused,
                    parts,
                    ref,
                    Tolerance(),
                    bound=bound,
                )
            )
    return out


def cases() -> list[Case]:
    """Return the fused-op cases (default tier, and a few at real sizes in the full tier)."""
    return [*_attention_cases(), *_norm_cases(), *_gated_cases(), *_rope_cases()]
