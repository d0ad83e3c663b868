"""Cases of the matrix ops: mulmat (all left-operand dtypes), mulmat_id, add_id, diag, tri,
solve_tri."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..context import Context
from ..dtypes import DType
from ..tensor import Tensor
from . import reference as R
from ._common import (
    BF16,
    EXACT,
    F16,
    F32,
    FULL_PREC_REL,
    I32,
    K_QUANTS,
    MULMAT_FULL_PREC,
    MXFP4,
    Q4_0,
    Q8_0,
    QUANTS,
    lbl,
    mulmat_f32,
    mulmat_tol,
    sx,
)
from .case import Arg, Case, Inputs, Tolerance

__all__ = ["cases"]


def _mm(op: str) -> Callable[[Context, Tensor, Tensor], Tensor]:
    return lambda ctx, a, b: getattr(a, op)(ctx, b)


def _mulmat_ref(a_dtype: DType, b_dtype: DType) -> Callable[..., np.ndarray]:
    """F16 left with F32 right: the right operand is rounded to f16 first, as ggml does (to
    bf16 for BF16); a quantised left operand sees the right one through ggml's CPU activation
    quantiser."""
    if a_dtype == F16 and b_dtype == F32:
        return lambda a, b: R.mulmat(a, R.f16(b))
    if (a_dtype.is_quantized or a_dtype == BF16) and b_dtype == F32:
        return lambda a, b: R.mulmat_q(a, b, a_dtype)
    return R.mulmat


def _mulmat_bound(op: str, a_dtype: DType, b_dtype: DType) -> Callable[..., np.ndarray] | None:
    """Per-element bound: quantised products and the full-precision product of f32/f16."""
    if b_dtype != F32:
        return None
    if a_dtype.is_quantized:
        return lambda a, b: R.mulmat_q_bound(a, b, a_dtype)
    if op == "mulmat_full_prec" and a_dtype in (F32, F16):
        return lambda a, b: R.mulmat_q_bound(a, b, a_dtype, rel=FULL_PREC_REL)
    return None


def _mulmat_cases(op: str) -> list[Case]:
    call = _mm(op)

    def mk(
        tag: str,
        a: Arg,
        b: Arg,
        build: Callable[[Context, Inputs], Tensor] | None = None,
        ref: Callable[..., np.ndarray] | None = None,
        k: int | None = None,
    ) -> Case:
        full = op == "mulmat_full_prec" and a.dtype in (F32, F16) and b.dtype == F32
        return Case(
            f"{op}-{tag}",
            op,
            (a, b),
            build or (lambda ctx, x: call(ctx, x[0], x[1])),
            ref or _mulmat_ref(a.dtype, b.dtype),
            MULMAT_FULL_PREC if full else mulmat_tol(a.dtype, k or a.ne[0]),
            dtype=lbl(a.dtype)
            if a.dtype == b.dtype or b.dtype == F32
            else f"{lbl(a.dtype)}x{lbl(b.dtype)}",
            out_dtype=F32,
            bound=None if ref is not None else _mulmat_bound(op, a.dtype, b.dtype),
        )

    out = [
        mk("f32-8x5x3", Arg((8, 5)), Arg((8, 3))),
        mk("f32-gqa-16x4x2x1", Arg((16, 4, 2, 1)), Arg((16, 3, 4, 2))),
        mk("f16-32x6x5", Arg((32, 6), F16), Arg((32, 5))),
        mk("q8_0-64x4x3", Arg((64, 4), Q8_0), Arg((64, 3))),
    ]
    if op == "mulmat_full_prec":
        return out
    out += [
        mk("f32-batch-32x6x2", Arg((32, 6)), Arg((32, 4, 2))),
        mk("f32-4d-16x3x2x2", Arg((16, 3, 2, 2)), Arg((16, 5, 2, 2))),
        # a batched on dim 3 only, b broadcast over dim 2 (3 per batch of a)
        mk("f32-dim3-16x3x1x2", Arg((16, 3, 1, 2)), Arg((16, 4, 3, 2))),
        mk("f32-vec-5", Arg((5,)), Arg((5,))),
        mk(
            "f32-permb-16x5x4x3",
            Arg((16, 5)),
            Arg((16, 3, 4)),
            lambda ctx, x: call(ctx, x[0], x[1].permute(ctx, 0, 2, 1, 3)),
            lambda a, b: R.mulmat(a, R.permute(b, (0, 2, 1, 3))),
        ),
        mk(  # a's dim 0 strided but not transposed (nb[0] <= nb[1]): ggml needs a copy
            "f32-perma-16x5x2",
            Arg((2, 16, 5)),
            Arg((16, 3, 2)),
            lambda ctx, x: call(ctx, x[0].permute(ctx, 2, 0, 1, 3), x[1]),
            lambda a, b: R.mulmat(R.permute(a, (2, 0, 1, 3)), b),
            k=16,
        ),
        mk(
            "f32-transa-16x5x3",
            Arg((5, 16)),
            Arg((16, 3)),
            lambda ctx, x: call(ctx, x[0].permute(ctx, 1, 0), x[1]),
            lambda a, b: R.mulmat(R.permute(a, (1, 0)), b),
            k=16,
        ),
        mk(
            "f32-sliceb-16x4x3",
            Arg((16, 4)),
            Arg((24, 3)),
            lambda ctx, x: call(ctx, x[0], x[1].slice(ctx, 0, 4, 20, 1)),
            lambda a, b: R.mulmat(a, R.slice_(b, 0, 4, 20, 1)),
        ),
        mk("f16-batch-32x4x2", Arg((32, 4, 2), F16), Arg((32, 3, 4))),
        mk("f16xf16-32x6x5", Arg((32, 6), F16), Arg((32, 5), F16)),
        mk("bf16-32x4x3", Arg((32, 4), BF16), Arg((32, 3))),
    ]
    for q in QUANTS:
        if q != Q8_0:
            out.append(mk(f"{lbl(q)}-64x4x3", Arg((64, 4), q), Arg((64, 3))))
    for q in (*QUANTS, BF16):
        out.append(mk(f"{lbl(q)}-batch-64x3x2", Arg((64, 3, 2), q), Arg((64, 2, 4))))
    for q in K_QUANTS:
        out.append(mk(f"{lbl(q)}-256x3x2", Arg((256, 3), q), Arg((256, 2))))
    gold = Case(
        "mulmat-f32-gold-3x2",
        "mulmat",
        (
            Arg((3, 2), gen="fixed", values=(1, 2, 3, 4, 5, 6)),
            Arg((3, 2), gen="fixed", values=(1, 0, 1, 0, 1, 0)),
        ),
        lambda ctx, x: x[0].mulmat(ctx, x[1]),
        R.mulmat,
        mulmat_f32(3),
        out_dtype=F32,
        gold=((4, 10, 2, 5),),
    )
    arange = Case(
        "mulmat-f32-gold-arange",
        "mulmat",
        (),
        lambda ctx, x: ctx.arange(0, 4, 1, F32).mulmat(
            ctx, ctx.arange(0, 12, 1, F32).reshape(ctx, 4, 3)
        ),
        lambda: R.mulmat(np.arange(4.0), np.arange(12.0).reshape(3, 4)),
        mulmat_f32(4),
        out_dtype=F32,
        gold=((14, 38, 62),),
    )
    vec = Case(
        "mulmat-f32-gold-vec",
        "mulmat",
        (Arg((3,), gen="fixed", values=(0, 1, 2)),),
        lambda ctx, x: x[0].mulmat(ctx, x[0]),
        lambda a: R.mulmat(a, a),
        mulmat_f32(3),
        out_dtype=F32,
        gold=((5,),),
    )
    # docs/linalg.md's check case: K = 32, t = e0, t2 = 1.0001 e0 (F16: t2 is rounded to f16 first)
    e0 = tuple(1.0 if i == 0 else 0.0 for i in range(32))
    b0 = tuple(1.0001 if i == 0 else 0.0 for i in range(32))
    checks = [
        Case(
            f"mulmat-{lbl(dt)}-gold-check-k32",
            "mulmat",
            (Arg((32,), dt, gen="fixed", values=e0), Arg((32,), gen="fixed", values=b0)),
            lambda ctx, x: x[0].mulmat(ctx, x[1]),
            _mulmat_ref(dt, F32),
            mulmat_tol(dt, 32),
            dtype=lbl(dt),
            out_dtype=F32,
            gold=((want,),),
            gold_atol=1e-7,
        )
        for dt, want in ((F32, 1.0001), (F16, 1.0))
    ]
    return [*out, gold, arange, vec, *checks]


def _ids(ne: tuple[int, ...], n: int) -> Arg:
    return Arg(ne, I32, gen="int", lo=0, hi=n)


def _mulmat_id_ref(dt: DType) -> Callable[..., np.ndarray]:
    """mulmat_id's reference: the activations rounded as the CPU dot product of ``dt`` sees them."""
    if dt == F16:
        return lambda w, xx, i: R.mulmat_id(w, R.f16(xx), i)
    if dt.is_quantized or dt == BF16:
        return lambda w, xx, i: R.mulmat_id(w, R.operand_as_dot(xx, dt), i)
    return R.mulmat_id


def _mulmat_id_bound(dt: DType) -> Callable[..., np.ndarray] | None:
    """mulmat_id's per-element bound for a quantised expert weight (None otherwise)."""
    if not dt.is_quantized:
        return None
    return lambda w, xx, i: R.DOT_REL * R.mulmat_id(np.abs(w), np.abs(R.operand_as_dot(xx, dt)), i)


def _mulmat_id_cases() -> list[Case]:
    op = "mulmat_id"

    def build(ctx: Context, x: Inputs) -> Tensor:
        return x[0].mulmat_id(ctx, x[1], x[2])

    ref_for, bound_for = _mulmat_id_ref, _mulmat_id_bound

    out = []
    for dt, k, r, e, b1, u, t in (
        (F32, 16, 5, 4, 1, 2, 3),
        (F32, 16, 5, 4, 2, 2, 3),
        (F32, 8, 3, 6, 1, 3, 1),
        (F16, 32, 4, 3, 1, 2, 2),
        (Q8_0, 64, 4, 3, 1, 2, 3),
        (Q4_0, 64, 4, 3, 1, 2, 3),
        (MXFP4, 64, 4, 3, 1, 2, 3),
        (MXFP4, 64, 4, 3, 2, 2, 3),
        (DType.Q4_K, 256, 3, 4, 1, 2, 2),
        (BF16, 32, 4, 3, 1, 2, 3),
    ):
        out.append(
            Case(
                f"{op}-{lbl(dt)}-{k}x{r}x{e}-u{u}b{b1}t{t}",
                op,
                (Arg((k, r, e), dt), Arg((k, b1, t)), _ids((u, t), e)),
                build,
                ref_for(dt),
                mulmat_tol(dt, k),
                dtype=lbl(dt),
                out_dtype=F32,
                bound=bound_for(dt),
            )
        )
    out.append(
        Case(
            f"{op}-f32-topk-16x5x6",
            op,
            (Arg((16, 5, 6)), Arg((16, 1, 4)), Arg((6, 4), gen="distinct")),
            lambda ctx, x: x[0].mulmat_id(ctx, x[1], x[2].top_k(ctx, 2)),
            lambda w, xx, logits: R.mulmat_id(w, xx, R.top_k(logits, 2)),
            mulmat_f32(16),
            out_dtype=F32,
        )
    )
    out.append(
        Case(
            f"{op}-f32-gold",
            op,
            (
                Arg((2, 1, 3), gen="fixed", values=(1, 0, 0, 1, 1, 1)),
                Arg((2, 1, 2), gen="fixed", values=(2, 3, 5, 7)),
                Arg((2, 2), I32, gen="fixed", values=(2, 0, 1, 2)),
            ),
            build,
            R.mulmat_id,
            mulmat_f32(2),
            out_dtype=F32,
            gold=((5, 2, 7, 12),),
        )
    )
    return out


def _add_id_cases() -> list[Case]:
    op = "add_id"

    def build(ctx: Context, x: Inputs) -> Tensor:
        return x[0].add_id(ctx, x[1], x[2])

    out = [
        Case(
            f"{op}-f32-8x2x3",
            op,
            (Arg((8, 2, 3)), Arg((8, 4)), _ids((2, 3), 4)),
            build,
            R.add_id,
            EXACT,
            out_dtype=F32,
        ),
        Case(
            f"{op}-f32-4d-4x2x3x2",
            op,
            (Arg((4, 2, 3, 2)), Arg((4, 5)), _ids((2, 3), 5)),
            build,
            R.add_id,
            EXACT,
            out_dtype=F32,
        ),
        Case(
            f"{op}-f32-perm-8x2x3",
            op,
            (Arg((8, 3, 2)), Arg((8, 4)), _ids((2, 3), 4)),
            lambda ctx, x: x[0].permute(ctx, 0, 2, 1, 3).add_id(ctx, x[1], x[2]),
            lambda t, b, i: R.add_id(R.permute(t, (0, 2, 1, 3)), b, i),
            EXACT,
            out_dtype=F32,
        ),
        Case(
            f"{op}-f32-gold",
            op,
            (
                Arg((1, 2, 2), gen="fixed", values=(5, 2, 7, 12)),
                Arg((1, 3), gen="fixed", values=(100, 200, 300)),
                Arg((2, 2), I32, gen="fixed", values=(2, 0, 1, 2)),
            ),
            build,
            R.add_id,
            EXACT,
            out_dtype=F32,
            gold=((305, 102, 207, 312),),
        ),
        # the gpt-oss expert layer: per-expert product, then per-expert bias
        Case(
            f"{op}-f32-moe-16x5x4",
            op,
            (Arg((16, 5, 4)), Arg((16, 1, 3)), _ids((2, 3), 4), Arg((5, 4))),
            lambda ctx, x: x[0].mulmat_id(ctx, x[1], x[2]).add_id(ctx, x[3], x[2]),
            lambda w, xx, i, b: R.add_id(R.mulmat_id(w, xx, i), b, i),
            mulmat_f32(16),
            out_dtype=F32,
        ),
    ]
    return out


def _matrix_cases() -> list[Case]:
    out = [
        Case(
            "diag-f32-gold",
            "diag",
            (Arg((3,), gen="fixed", values=(1, 2, 3)),),
            lambda ctx, x: x[0].diag(ctx),
            R.diag,
            EXACT,
            out_dtype=F32,
            gold=((1, 0, 0, 0, 2, 0, 0, 0, 3),),
        )
    ]
    out += [
        Case(
            f"diag-f32-{sx(ne)}",
            "diag",
            (Arg(ne),),
            lambda ctx, x: x[0].diag(ctx),
            R.diag,
            EXACT,
            out_dtype=F32,
        )
        for ne in ((4, 1, 2), (5, 1, 2, 2))
    ]
    gold_tri = {
        0: (1, 2, 3, 0, 5, 6, 0, 0, 9),
        1: (0, 2, 3, 0, 0, 6, 0, 0, 0),
        2: (1, 0, 0, 4, 5, 0, 7, 8, 9),
        3: (0, 0, 0, 4, 0, 0, 7, 8, 0),
    }
    for kind, want in gold_tri.items():
        out.append(
            Case(
                f"tri-f32-gold-type{kind}",
                "tri",
                (Arg((3, 3), gen="fixed", values=tuple(range(1, 10))),),
                lambda ctx, x, k=kind: x[0].tri(ctx, k),
                lambda a, k=kind: R.tri(a, k),
                EXACT,
                out_dtype=F32,
                gold=(want,),
            )
        )
        out.append(
            Case(
                f"tri-f32-type{kind}-5x5x2",
                "tri",
                (Arg((5, 5, 2)),),
                lambda ctx, x, k=kind: x[0].tri(ctx, k),
                lambda a, k=kind: R.tri(a, k),
                EXACT,
                out_dtype=F32,
            )
        )
    out.append(
        Case(
            "tri-f32-perm-4x4",
            "tri",
            (Arg((4, 4)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).tri(ctx, 2),
            lambda a: R.tri(R.permute(a, (1, 0)), 2),
            EXACT,
            out_dtype=F32,
        )
    )
    solve = Tolerance(nmse=1e-8, atol=1e-6, rtol=1e-4)

    def solve_build(ctx: Context, x: Inputs) -> Tensor:
        return x[0].solve_tri(ctx, x[1], True, True, False)

    for n, k, batch in ((6, 3, (2,)), (4, 1, (2, 3)), (8, 5, ())):
        out.append(
            Case(
                f"solve_tri-f32-{n}x{n}-k{k}" + (f"-b{sx(batch)}" if batch else ""),
                "solve_tri",
                (Arg((n, n, *batch), gen="lower"), Arg((k, n, *batch))),
                solve_build,
                R.solve_tri,
                solve,
                out_dtype=F32,
            )
        )
    out.append(
        Case(
            "solve_tri-f32-gold-2x2",
            "solve_tri",
            (
                Arg((2, 2), gen="fixed", values=(2, 0, 1, 4)),
                Arg((2, 2), gen="fixed", values=(4, 2, 6, 9)),
            ),
            solve_build,
            R.solve_tri,
            solve,
            out_dtype=F32,
            gold=((2, 1, 1, 2),),
        )
    )
    out.append(
        Case(
            "solve_tri-f32-gold-1col",
            "solve_tri",
            (
                Arg((2, 2), gen="fixed", values=(2, 0, 1, 4)),
                Arg((1, 2), gen="fixed", values=(4, 6)),
            ),
            solve_build,
            R.solve_tri,
            solve,
            out_dtype=F32,
            gold=((2, 1),),
        )
    )
    return out


def cases() -> list[Case]:
    """Return the matrix-op cases."""
    return [
        *_mulmat_cases("mulmat"),
        *_mulmat_cases("mulmat_full_prec"),
        *_mulmat_id_cases(),
        *_add_id_cases(),
        *_matrix_cases(),
    ]
