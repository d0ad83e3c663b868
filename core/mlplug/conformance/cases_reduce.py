"""Cases of the row ops: softmax, norms, sums and means, variance, cumsum, argsort, top_k."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..context import Context
from ..tensor import Tensor
from . import reference as R
from ._common import EXACT, F32, I32, rows_tol, shape_check, stride_check, sx
from .case import Arg, Case, Inputs, Tolerance

__all__ = ["cases"]

INF = float("inf")


def _row_sum_bound(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """``factor * sum|x|`` of each row, as a per-output-element bound of a row result."""
    return lambda x: factor * np.abs(R.v4(x)).sum(-1, keepdims=True)


def _simple(
    op: str,
    fn: Callable[..., Tensor],
    ref: Callable[..., np.ndarray],
    tol: Tolerance,
    *,
    bound: Callable[..., np.ndarray] | None = None,
    shapes: tuple[tuple[int, ...], ...] = ((16, 4), (9, 4, 3), (7, 3, 2, 2)),
    lo: float = -1.0,
    hi: float = 1.0,
) -> list[Case]:
    """Plain shapes, a column slice (rows strided) and a transposed (copied) input."""
    out = [
        Case(
            f"{op}-f32-{sx(ne)}",
            op,
            (Arg(ne, lo=lo, hi=hi),),
            lambda ctx, x: fn(ctx, x[0]),
            ref,
            tol,
            out_dtype=F32,
            bound=bound,
        )
        for ne in shapes
    ]
    out.append(
        Case(
            f"{op}-f32-slice-8x5",
            op,
            (Arg((12, 5), lo=lo, hi=hi),),
            lambda ctx, x: fn(ctx, x[0].slice(ctx, 0, 2, 10, 1)),
            lambda a: ref(R.slice_(a, 0, 2, 10, 1)),
            tol,
            out_dtype=F32,
            bound=None if bound is None else lambda a: bound(R.slice_(a, 0, 2, 10, 1)),
        )
    )
    out.append(
        Case(
            f"{op}-f32-perm-6x8",
            op,
            (Arg((8, 6), lo=lo, hi=hi),),
            lambda ctx, x: fn(ctx, x[0].permute(ctx, 1, 0)),
            lambda a: ref(R.permute(a, (1, 0))),
            tol,
            out_dtype=F32,
            bound=None if bound is None else lambda a: bound(R.permute(a, (1, 0))),
        )
    )
    return out


def _gold(
    op: str,
    fn: Callable[..., Tensor],
    ref: Callable[..., np.ndarray],
    tol: Tolerance,
    values: tuple[float, ...],
    ne: tuple[int, ...],
    want: tuple[float, ...],
    tag: str = "gold",
    **kw: Any,
) -> Case:
    return Case(
        f"{op}-f32-{tag}",
        op,
        (Arg(ne, gen="fixed", values=values),),
        lambda ctx, x: fn(ctx, x[0]),
        ref,
        tol,
        out_dtype=F32,
        gold=(want,),
        **kw,
    )


def _norm_cases() -> list[Case]:
    tol = rows_tol()
    out = _simple(
        "softmax",
        lambda ctx, t: t.softmax(ctx),
        R.softmax,
        tol,
        shapes=((10, 4), (33, 5), (7, 3, 2, 2)),
        lo=-3,
        hi=3,
    )
    out += [
        _gold(
            "softmax",
            lambda ctx, t: t.softmax(ctx),
            R.softmax,
            tol,
            (1, 2, 3, 1, 1, 1),
            (3, 2),
            (0.090030573, 0.24472848, 0.66524094, 0.33333334, 0.33333334, 0.33333334),
            gold_atol=1e-7,
        ),
        _gold(
            "softmax",
            lambda ctx, t: t.softmax(ctx),
            R.softmax,
            tol,
            (-INF, 0, -INF),
            (3,),
            (0, 1, 0),
            tag="gold-neginf",
        ),
    ]
    for eps in (1e-12, 1e-6):
        out += _simple(
            "l2_norm",
            lambda ctx, t, e=eps: t.l2_norm(ctx, e),
            lambda a, e=eps: R.l2_norm(a, e),
            tol,
            shapes=((8, 5),),
        )
        out[-3:] = [c.with_id(c.id.replace("-f32-", f"-f32-eps{eps:g}-", 1)) for c in out[-3:]]
    out += [
        _gold(
            "l2_norm",
            lambda ctx, t: t.l2_norm(ctx, 1e-12),
            lambda a: R.l2_norm(a, 1e-12),
            tol,
            (3, 4),
            (2,),
            (0.6, 0.8),
        ),
        _gold(
            "l2_norm",
            lambda ctx, t: t.l2_norm(ctx, 1e-6),
            lambda a: R.l2_norm(a, 1e-6),
            tol,
            (3e-7, 4e-7),
            (2,),
            (0.3, 0.4),
            tag="gold-eps-floor",
        ),
    ]
    out += _simple(
        "rms_norm", lambda ctx, t: t.rms_norm(ctx, None, 1e-6), lambda a: R.rms_norm(a, 1e-6), tol
    )
    out += [
        _gold(
            "rms_norm",
            lambda ctx, t: t.rms_norm(ctx, None, 1e-6),
            lambda a: R.rms_norm(a, 1e-6),
            tol,
            (1, 2, 3, 4),
            (4,),
            (0.36514837, 0.73029673, 1.0954452, 1.4605935),
        ),
        Case(
            "rms_norm-f32-weight-16x4",
            "rms_norm",
            (Arg((16, 4)), Arg((16,))),
            lambda ctx, x: x[0].rms_norm(ctx, x[1], 1e-5),
            lambda a, w: R.rms_norm(a, 1e-5, w),
            tol,
            out_dtype=F32,
        ),
        Case(
            "rms_norm-f32-weight-tile-16x4x3",
            "rms_norm",
            (Arg((16, 4, 3)), Arg((16, 2))),
            lambda ctx, x: x[0].rms_norm(ctx, x[1], 1e-5),
            lambda a, w: R.rms_norm(a, 1e-5, w),
            tol,
            out_dtype=F32,
        ),
    ]
    out += _simple(
        "layer_norm",
        lambda ctx, t: t.layer_norm(ctx, None, None, 1e-5),
        lambda a: R.layer_norm(a, 1e-5),
        tol,
    )
    out += [
        _gold(
            "layer_norm",
            lambda ctx, t: t.layer_norm(ctx, None, None, 0.0),
            lambda a: R.layer_norm(a, 0.0),
            tol,
            (1, 2, 3, 4),
            (4,),
            (-1.3416407, -0.4472136, 0.4472136, 1.3416407),
        ),
        Case(
            "layer_norm-f32-weight-16x4",
            "layer_norm",
            (Arg((16, 4)), Arg((16,))),
            lambda ctx, x: x[0].layer_norm(ctx, x[1], None, 1e-5),
            lambda a, w: R.layer_norm(a, 1e-5, w),
            tol,
            out_dtype=F32,
        ),
        Case(
            "layer_norm-f32-weight-bias-16x4x2",
            "layer_norm",
            (Arg((16, 4, 2)), Arg((16,)), Arg((16,))),
            lambda ctx, x: x[0].layer_norm(ctx, x[1], x[2], 1e-5),
            lambda a, w, b: R.layer_norm(a, 1e-5, w, b),
            tol,
            out_dtype=F32,
        ),
        Case(
            "layer_norm-f32-bias-only-16x4",
            "layer_norm",
            (Arg((16, 4)), Arg((16,))),
            lambda ctx, x: x[0].layer_norm(ctx, None, x[1], 1e-5),
            lambda a, b: R.layer_norm(a, 1e-5),
            tol,
            out_dtype=F32,
        ),
    ]
    return out


def _sum_cases() -> list[Case]:
    tol = rows_tol()
    sums = Tolerance(nmse=1e-10, rtol=1e-5)
    out = _simple(
        "sum_rows", lambda ctx, t: t.sum_rows(ctx), R.sum_rows, sums, bound=_row_sum_bound(1e-6)
    )
    out += [
        _gold(
            "sum_rows",
            lambda ctx, t: t.sum_rows(ctx),
            R.sum_rows,
            sums,
            (1, 2, 3, 4, 5, 6),
            (3, 2),
            (6, 15),
            check=shape_check((1, 2)),
        ),
        _gold(
            "sum_rows",
            lambda ctx, t: t.sum_rows(ctx),
            R.sum_rows,
            sums,
            (1, 2, 3, 4, 5),
            (5,),
            (15,),
            tag="gold-vector",
            check=shape_check((1,)),
        ),
    ]
    out += _simple("mean", lambda ctx, t: t.mean(ctx), R.mean, tol)
    out.append(
        _gold("mean", lambda ctx, t: t.mean(ctx), R.mean, tol, (1, 2, 3, 4, 5, 6), (3, 2), (2, 5))
    )
    out += _simple("variance", lambda ctx, t: t.variance(ctx), R.variance, tol)
    out.append(
        _gold(
            "variance",
            lambda ctx, t: t.variance(ctx),
            R.variance,
            tol,
            (1, 2, 3, 4, 5, 6),
            (3, 2),
            (0.6666667, 0.6666667),
        )
    )
    out += _simple("stddev", lambda ctx, t: t.stddev(ctx), lambda a: np.sqrt(R.variance(a)), tol)
    out.append(
        _gold(
            "stddev",
            lambda ctx, t: t.stddev(ctx),
            lambda a: np.sqrt(R.variance(a)),
            tol,
            (1, 2, 3, 4, 5, 6),
            (3, 2),
            (0.8164966, 0.8164966),
        )
    )
    cum = Tolerance()

    def cum_bound(x: np.ndarray) -> np.ndarray:  # 2e-6 * sum|x| of the row, every element
        return np.broadcast_to(2e-6 * np.abs(x).sum(-1, keepdims=True), x.shape)

    out += _simple(
        "cum_sum",
        lambda ctx, t: t.cum_sum(ctx),
        R.cumsum,
        cum,
        shapes=((33, 4), (7, 2, 2, 2)),
        bound=cum_bound,
    )
    out.append(
        _gold(
            "cum_sum",
            lambda ctx, t: t.cum_sum(ctx),
            R.cumsum,
            cum,
            (1, 2, 3, 4, 5, 6),
            (3, 2),
            (1, 3, 6, 4, 9, 15),
            bound=cum_bound,
        )
    )
    return out


def _sort_cases() -> list[Case]:
    def argsort(ctx: Context, x: Inputs) -> Tensor:
        return x[0].argsort(ctx)

    def asc(a: np.ndarray) -> np.ndarray:
        return np.argsort(a, axis=-1, kind="stable")

    out = [
        Case(
            f"argsort-f32-{sx(ne)}",
            "argsort",
            (Arg(ne, gen="distinct"),),
            argsort,
            asc,
            EXACT,
            out_dtype=I32,
        )
        for ne in ((10, 3), (7, 2, 2), (5, 2, 2, 2))
    ]
    out += [
        Case(
            "argsort-i32-perm-8",
            "argsort",
            (Arg((8,), I32, gen="perm"),),
            argsort,
            asc,
            EXACT,
            dtype="i32",
            out_dtype=I32,
        ),
        Case(
            "argsort-f32-perm-6x4",
            "argsort",
            (Arg((4, 6), gen="distinct"),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).argsort(ctx),
            lambda a: asc(R.permute(a, (1, 0))),
            EXACT,
            out_dtype=I32,
        ),
        Case(
            "argsort-f32-gold",
            "argsort",
            (Arg((4,), gen="fixed", values=(0.1, 0.9, 0.5, 0.3)),),
            argsort,
            asc,
            EXACT,
            out_dtype=I32,
            gold=((0, 3, 2, 1),),
        ),
    ]

    def top_k(k: int) -> Callable[[Context, Inputs], Tensor]:
        return lambda ctx, x: x[0].top_k(ctx, k)

    for ne, k, dt in (
        ((10, 3), 3, F32),
        ((6, 2), 6, F32),
        ((9, 4), 1, F32),
        ((8, 3, 2), 2, F32),
        ((7, 3), 2, I32),
    ):
        gen = "perm" if dt == I32 else "distinct"
        out.append(
            Case(
                f"top_k-{dt.name.lower()}-k{k}-{sx(ne)}",
                "top_k",
                (Arg(ne, dt, gen=gen),),
                top_k(k),
                lambda a, k=k: R.top_k(a, k),
                EXACT,
                dtype=dt.name.lower(),
                out_dtype=I32,
                check=stride_check(1, lambda t, n=ne[0]: 4 * n),
            )
        )
    out.append(
        Case(
            "top_k-f32-gold",
            "top_k",
            (Arg((4, 2), gen="fixed", values=(0.1, 0.9, 0.5, 0.3, 4, 3, 2, 1)),),
            top_k(2),
            lambda a: R.top_k(a, 2),
            EXACT,
            out_dtype=I32,
            gold=((1, 2, 0, 1),),
            check=stride_check(1, lambda t: 16),
        )
    )
    return out


def cases() -> list[Case]:
    """Return the row-op cases."""
    return [*_norm_cases(), *_sum_cases(), *_sort_cases()]
