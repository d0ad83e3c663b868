"""Cases of pad, concat, stack, repeat, repeat_4d and the gather/scatter ops rows, set_rows,
set_inplace."""

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
    I32,
    K_QUANTS,
    Q8_0,
    QUANTS,
    arange_arg,
    data_case,
    dequant_tol,
    lbl,
    sx,
)
from .case import Arg, Case, Inputs, Tolerance

__all__ = ["cases"]


def _join_cases() -> list[Case]:
    out = [
        data_case(
            "pad",
            "gold-2x1",
            (Arg((2, 1), gen="fixed", values=(1, 2)),),
            lambda ctx, x: x[0].pad(ctx, 1, 2, 0, 0),
            lambda a: R.pad(a, (1, 2, 0, 0)),
            gold=((1, 2, 0, 0, 0, 0, 0, 0, 0),),
        ),
        data_case(
            "pad",
            "4x3x2",
            (Arg((4, 3, 2)),),
            lambda ctx, x: x[0].pad(ctx, 2, 1, 3, 0),
            lambda a: R.pad(a, (2, 1, 3, 0)),
        ),
        data_case(
            "pad",
            "crop-4x3",
            (Arg((4, 3)),),
            lambda ctx, x: x[0].pad(ctx, 0, -1, 0, 0),
            lambda a: R.pad(a, (0, -1, 0, 0)),
        ),
        data_case(
            "pad",
            "mixed-4x3x2",
            (Arg((4, 3, 2)),),
            lambda ctx, x: x[0].pad(ctx, -1, 2, 1, 0),
            lambda a: R.pad(a, (-1, 2, 1, 0)),
        ),
        data_case(
            "pad",
            "perm-3x4",
            (Arg((4, 3)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).pad(ctx, 1, 1, 0, 0),
            lambda a: R.pad(R.permute(a, (1, 0)), (1, 1, 0, 0)),
        ),
    ]
    for dim, (na, nb) in enumerate(
        (
            ((3, 2), (4, 2)),
            ((3, 2, 2), (3, 5, 2)),
            ((3, 2, 2), (3, 2, 1)),
            ((2, 2, 2, 1), (2, 2, 2, 3)),
        )
    ):
        out.append(
            data_case(
                "concat",
                f"dim{dim}-{sx(na)}+{sx(nb)}",
                (Arg(na), Arg(nb)),
                lambda ctx, x, d=dim: x[0].concat(ctx, x[1], d),
                lambda a, b, d=dim: R.concat(a, b, d),
            )
        )
    out += [
        data_case(
            "concat",
            "dim1-4x2+4x3",
            (Arg((4, 2), F16), Arg((4, 3), F16)),
            lambda ctx, x: x[0].concat(ctx, x[1], 1),
            lambda a, b: R.concat(a, b, 1),
            F16,
        ),
        data_case(
            "concat",
            "dim0-3+5",
            (Arg((3,), I32, gen="int", lo=0, hi=9), Arg((5,), I32, gen="int", lo=0, hi=9)),
            lambda ctx, x: x[0].concat(ctx, x[1], 0),
            lambda a, b: R.concat(a, b, 0),
            I32,
        ),
        data_case(
            "concat",
            "dim2-perm",
            (Arg((3, 4, 2)), Arg((3, 4, 1))),
            lambda ctx, x: (
                x[0].permute(ctx, 1, 0, 2, 3).concat(ctx, x[1].permute(ctx, 1, 0, 2, 3), 2)
            ),
            lambda a, b: R.concat(R.permute(a, (1, 0, 2, 3)), R.permute(b, (1, 0, 2, 3)), 2),
        ),
        data_case(
            "stack",
            "dim0-3x2x3",
            (Arg((3, 2)), Arg((2, 2)), Arg((4, 2))),
            lambda ctx, x: x[0].stack(ctx, 0, x[1], x[2]),
            lambda a, b, c: R.concat(R.concat(a, b, 0), c, 0),
        ),
        data_case(
            "stack",
            "dim1-3x2x2",
            (Arg((3, 2, 2)), Arg((3, 1, 2))),
            lambda ctx, x: x[0].stack(ctx, 1, x[1]),
            lambda a, b: R.concat(a, b, 1),
        ),
        data_case(
            "stack", "alone-3x2", (Arg((3, 2)),), lambda ctx, x: x[0].stack(ctx, 0), lambda a: a
        ),
    ]
    for tag, ne, dim, n, dt in (
        ("gold-2", (2,), 0, 3, F32),
        ("3x2", (3, 2), 1, 2, F32),
        ("3x2x2", (3, 2, 2), 2, 3, F32),
        ("2x2x1x2", (2, 2, 1, 2), 3, 2, F32),
        ("3x2", (3, 2), 0, 2, F16),
        ("3x2", (3, 2), 1, 3, I32),
    ):
        reps = [1, 1, 1, 1]
        reps[3 - dim] = n
        arg = (
            Arg(ne, gen="fixed", values=(1, 2))
            if tag.startswith("gold")
            else Arg(ne, dt, gen="int" if dt == I32 else "uniform", lo=-9, hi=9)
        )
        out.append(
            data_case(
                "repeat",
                f"dim{dim}x{n}-{tag}",
                (arg,),
                lambda ctx, x, d=dim, k=n: x[0].repeat(ctx, d, k),
                lambda a, r=tuple(reps): np.tile(R.v4(a), r),
                dt,
                gold=((1, 2, 1, 2, 1, 2),) if tag.startswith("gold") else None,
            )
        )
    out.append(
        data_case(
            "repeat",
            "perm-3x2",
            (Arg((2, 3)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).repeat(ctx, 1, 2),
            lambda a: np.tile(R.v4(R.permute(a, (1, 0))), (1, 1, 2, 1)),
        )
    )
    for ne, target, dt in (
        ((2, 3), (4, 6, 2, 1), F32),
        ((3, 1, 2), (6, 2, 4, 3), F32),
        ((2, 2, 2, 2), (4, 2, 4, 2), F32),
        ((2, 3), (6, 3, 2, 1), I32),
        ((2, 3), (4, 3, 1, 2), F16),
    ):
        out.append(
            data_case(
                "repeat_4d",
                f"{sx(ne)}-to-{sx(target)}",
                (Arg(ne, dt, gen="int" if dt == I32 else "uniform", lo=-9, hi=9),),
                lambda ctx, x, s=target: x[0].repeat_4d(ctx, *s),
                lambda a, s=target: R.tile(R.v4(a), tuple(reversed(s))),
                dt,
            )
        )
    return out


def _gather_cases() -> list[Case]:
    def rows(ctx: Context, x: Inputs) -> Tensor:
        return x[0].rows(ctx, x[1])

    def ids(ne: tuple[int, ...], n: int) -> Arg:
        return Arg(ne, I32, gen="int", lo=0, hi=n)

    out = [
        Case(
            "rows-f32-gold-3x4",
            "rows",
            (arange_arg((3, 4)), Arg((2,), I32, gen="fixed", values=(2, 0))),
            rows,
            R.rows,
            EXACT,
            out_dtype=F32,
            gold=((6, 7, 8, 0, 1, 2),),
        ),
        Case(
            "rows-f32-8x10",
            "rows",
            (Arg((8, 10)), ids((5,), 10)),
            rows,
            R.rows,
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "rows-f32-3d-6x5x3",
            "rows",
            (Arg((6, 5, 3)), ids((4, 3), 5)),
            rows,
            R.rows,
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "rows-f32-4d-4x5x2x3",
            "rows",
            (Arg((4, 5, 2, 3)), ids((3, 2, 3), 5)),
            rows,
            R.rows,
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "rows-f32-perm-8x5x2",
            "rows",
            (Arg((8, 2, 5)), ids((3, 2), 5)),
            lambda ctx, x: x[0].permute(ctx, 0, 2, 1, 3).rows(ctx, x[1]),
            lambda t, i: R.rows(R.permute(t, (0, 2, 1, 3)), i),
            EXACT,
            out_dtype=F32,
        ),
        # MoE routing: gather the probabilities of each token's top-k experts
        Case(
            "rows-f32-topk-routing-6x4",
            "rows",
            (Arg((6, 4), gen="distinct"),),
            lambda ctx, x: x[0].softmax(ctx).reshape(ctx, 1, 6, 4).rows(ctx, x[0].top_k(ctx, 2)),
            lambda lg: R.rows(R.softmax(lg).reshape(4, 6, 1), R.top_k(lg, 2)),
            Tolerance(nmse=1e-10, atol=1e-6, rtol=1e-5),
            out_dtype=F32,
        ),
        Case(
            "rows-i32-6x7",
            "rows",
            (Arg((6, 7), I32, gen="int", lo=-99, hi=99), ids((4,), 7)),
            rows,
            R.rows,
            EXACT,
            dtype="i32",
            out_dtype=I32,
        ),
    ]
    for dt in (F16, BF16, *QUANTS, *K_QUANTS):
        n = 256 if dt in K_QUANTS else (64 if dt.is_quantized else 8)
        out.append(
            Case(
                f"rows-{lbl(dt)}-{n}x6",
                "rows",
                (Arg((n, 6), dt), ids((4,), 6)),
                rows,
                R.rows,
                dequant_tol(dt),
                dtype=lbl(dt),
                out_dtype=F32,
            )
        )

    def set_rows(ctx: Context, x: Inputs) -> Tensor:
        return x[0].set_rows(ctx, x[1], x[2])

    def distinct(ne: tuple[int, ...], n: int, dt: DType = I32) -> Arg:
        return Arg(ne, dt, gen="perm", lo=0, hi=n)

    out += [
        Case(
            "set_rows-f32-gold-3x4",
            "set_rows",
            (
                Arg((3, 4), gen="zeros"),
                Arg((3, 2), gen="fixed", values=(1, 2, 3, 4, 5, 6)),
                Arg((2,), I32, gen="fixed", values=(3, 1)),
            ),
            set_rows,
            R.set_rows,
            EXACT,
            out_dtype=F32,
            gold=((0, 0, 0, 4, 5, 6, 0, 0, 0, 1, 2, 3),),
        ),
        Case(
            "set_rows-f32-8x6",
            "set_rows",
            (Arg((8, 6)), Arg((8, 3)), distinct((3,), 6)),
            set_rows,
            R.set_rows,
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "set_rows-f32-bcast-8x5x4",
            "set_rows",
            (Arg((8, 5, 4)), Arg((8, 2, 4)), distinct((2, 2), 5)),
            set_rows,
            R.set_rows,
            EXACT,
            out_dtype=F32,
        ),
        Case(  # ids broadcast over dims 2 and 3 with three distinct extents
            "set_rows-f32-bcast-8x5x2x4",
            "set_rows",
            (Arg((8, 5, 2, 4)), Arg((8, 3, 2, 4)), distinct((3, 1, 2), 5)),
            set_rows,
            R.set_rows,
            EXACT,
            out_dtype=F32,
        ),
        Case(  # ids broadcast over dim 3 only (dim 2 of one)
            "set_rows-f32-bcast-8x5x1x2",
            "set_rows",
            (Arg((8, 5, 1, 2)), Arg((8, 3, 1, 2)), distinct((3, 1, 2), 5)),
            set_rows,
            R.set_rows,
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "set_rows-f32-i64-8x6",
            "set_rows",
            (Arg((8, 6)), Arg((8, 3)), distinct((3,), 6, DType.I64)),
            set_rows,
            R.set_rows,
            EXACT,
            dtype="f32+i64",
            out_dtype=F32,
        ),
        Case(
            "set_rows-f32-perm-src-8x6",
            "set_rows",
            (Arg((8, 6)), Arg((3, 8)), distinct((3,), 6)),
            lambda ctx, x: x[0].set_rows(ctx, x[1].permute(ctx, 1, 0), x[2]),
            lambda d, s, i: R.set_rows(d, R.permute(s, (1, 0)), i),
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "set_rows-f16-8x6",
            "set_rows",
            (Arg((8, 6), F16), Arg((8, 3)), distinct((3,), 6)),
            set_rows,
            R.set_rows,
            EXACT,
            dtype="f16",
            out_dtype=F16,
        ),
        Case(
            "set_rows-bf16-8x6",
            "set_rows",
            (Arg((8, 6), BF16), Arg((8, 3)), distinct((3,), 6)),
            set_rows,
            R.set_rows,
            EXACT,
            dtype="bf16",
            out_dtype=BF16,
        ),
        Case(
            "set_rows-q8_0-32x4",
            "set_rows",
            (Arg((32, 4), Q8_0), Arg((32, 2)), distinct((2,), 4)),
            lambda ctx, x: x[0].set_rows(ctx, x[1], x[2]).cast(ctx, F32),
            R.set_rows,
            Tolerance(),
            dtype="q8_0",
            out_dtype=F32,
            bound=_set_rows_quant_bound(Q8_0),
        ),
        Case(
            "set_rows-q4_0-32x4",
            "set_rows",
            (Arg((32, 4), DType.Q4_0), Arg((32, 2)), distinct((2,), 4)),
            lambda ctx, x: x[0].set_rows(ctx, x[1], x[2]).cast(ctx, F32),
            R.set_rows,
            Tolerance(),
            dtype="q4_0",
            out_dtype=F32,
            bound=_set_rows_quant_bound(DType.Q4_0),
        ),
    ]

    def set_inplace(p: tuple[int, int, int, int]) -> Callable[[Context, Inputs], Tensor]:
        return lambda ctx, x: x[0].set_inplace(ctx, x[1], *p)

    for tag, dne, sne, p, dt in (
        ("6x4+2x3", (6, 4), (2, 3), (24, 96, 96, 28), F32),
        ("4x3x2+2x2x2", (4, 3, 2), (2, 2, 2), (16, 48, 96, 4), F32),
        ("6x4+3x2", (6, 4), (3, 2), (48, 96, 96, 8), I32),
    ):
        gen = "int" if dt == I32 else "uniform"
        out.append(
            Case(
                f"set_inplace-{lbl(dt)}-{tag}",
                "set_inplace",
                (Arg(dne, dt, gen=gen, lo=-9, hi=9), Arg(sne, dt, gen=gen, lo=-9, hi=9)),
                set_inplace(p),
                lambda d, s, p=p: R.set_inplace(d, s, 4, *p),
                EXACT,
                dtype=lbl(dt),
                out_dtype=dt,
            )
        )
    # One row, as a decode step reads an embedding and writes its K/V cache row: backends may
    # take a one-index path (torch reads the index on the host and copies one row).
    for dt in (F32, F16, BF16):
        out.append(
            Case(
                f"rows-{lbl(dt)}-one-row-8x7",
                "rows",
                (Arg((8, 7), dt), Arg((1,), I32, gen="fixed", values=(6,))),
                rows,
                R.rows,
                EXACT if dt == F32 else dequant_tol(dt),
                dtype=lbl(dt),
                out_dtype=F32,
            )
        )
        out.append(
            Case(
                f"set_rows-{lbl(dt)}-one-row-8x7",
                "set_rows",
                (Arg((8, 7), dt), Arg((8, 1)), Arg((1,), I32, gen="fixed", values=(6,))),
                set_rows,
                R.set_rows,
                EXACT,
                dtype=lbl(dt),
                out_dtype=dt,
            )
        )
    out.append(
        Case(
            "set_inplace-f32-perm-src",
            "set_inplace",
            (Arg((6, 4)), Arg((3, 2))),
            lambda ctx, x: x[0].set_inplace(ctx, x[1].permute(ctx, 1, 0), 24, 96, 96, 4),
            lambda d, s: R.set_inplace(d, R.permute(s, (1, 0)), 4, 24, 96, 96, 4),
            EXACT,
            out_dtype=F32,
        )
    )
    return out


def _set_rows_quant_bound(q: DType) -> Callable[..., np.ndarray]:
    """Rows written through a quantiser are within one step; untouched rows are exact."""

    def bound(dst: np.ndarray, src: np.ndarray, idx: np.ndarray) -> np.ndarray:
        written = R.set_rows(np.zeros_like(dst), np.ones_like(src), idx) > 0
        steps = R.quant_step(R.set_rows(dst, src, idx), q)
        return np.where(written, steps, 0.0)

    return bound


def cases() -> list[Case]:
    """Return the join, repeat, gather and scatter cases."""
    return [*_join_cases(), *_gather_cases()]
