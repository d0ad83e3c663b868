"""Cases of the copying ops: contiguous, duplicate, copy and cast in every legal direction.

Same-type and float conversions are exact; quantising conversions are checked against the
original values within one quantisation step; dequantisation is exact.
"""

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
    MXFP4,
    Q4_0,
    Q8_0,
    QUANTS,
    data_case,
    dequant_tol,
    lbl,
)
from .case import Arg, Case, Inputs, Tolerance

__all__ = ["cases"]


def _copy_cases() -> list[Case]:
    out = [
        data_case(
            "contiguous",
            "perm-4x3x2",
            (Arg((3, 4, 2)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0, 2, 3).contiguous(ctx),
            lambda a: R.permute(a, (1, 0, 2, 3)),
        ),
        data_case(
            "contiguous",
            "perm-shape-12x2",
            (Arg((3, 4, 2)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0, 2, 3).contiguous(ctx, -1, 2),
            lambda a: R.permute(a, (1, 0, 2, 3)).reshape(2, 12),
        ),
        data_case(
            "contiguous",
            "shape-2x4x3",
            (Arg((6, 4)),),
            lambda ctx, x: x[0].contiguous(ctx, 2, -1, 3),
            lambda a: a.reshape(3, 4, 2),
        ),
        data_case(
            "contiguous",
            "shape-4d-2x2x3x2",
            (Arg((6, 4)),),
            lambda ctx, x: x[0].contiguous(ctx, 2, 2, 3, 2),
            lambda a: a.reshape(2, 3, 2, 2),
        ),
        data_case(
            "contiguous",
            "perm-5x3",
            (Arg((3, 5), F16),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).contiguous(ctx),
            lambda a: R.permute(a, (1, 0)),
            F16,
        ),
        data_case(
            "contiguous",
            "perm-5x3",
            (Arg((3, 5), I32, gen="int", lo=-99, hi=99),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).contiguous(ctx),
            lambda a: R.permute(a, (1, 0)),
            I32,
        ),
        data_case(
            "contiguous",
            "perm-32x2x3",
            (Arg((32, 3, 2), Q8_0),),
            lambda ctx, x: x[0].permute(ctx, 0, 2, 1, 3).contiguous(ctx),
            lambda a: R.permute(a, (0, 2, 1, 3)),
            Q8_0,
        ),
    ]
    for dt, gen in ((F32, "uniform"), (F16, "uniform"), (I32, "int")):
        out.append(
            data_case(
                "duplicate",
                "5x3",
                (Arg((5, 3), dt, gen=gen, lo=-9, hi=9),),
                lambda ctx, x: x[0].duplicate(ctx),
                lambda a: a,
                dt,
            )
        )
    out.append(
        data_case(
            "duplicate",
            "perm-3x5",
            (Arg((5, 3)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).duplicate(ctx),
            lambda a: R.permute(a, (1, 0)),
        )
    )

    def copy_into(ctx: Context, x: Inputs) -> Tensor:
        return x[0].copy(ctx, x[1])

    conversions: list[tuple[DType, DType, Callable[[np.ndarray], np.ndarray]]] = [
        (F32, F16, lambda a: a),
        (F16, F32, lambda a: a),
        (F32, BF16, lambda a: a),
        (F16, F16, lambda a: a),
        (F32, I32, np.trunc),
        (I32, F32, lambda a: a),
    ]
    for src, dst, fn in conversions:
        gen = "int" if src == I32 else "uniform"
        out.append(
            Case(
                f"copy-{lbl(src)}-to-{lbl(dst)}-6x4",
                "copy",
                (Arg((6, 4), src, gen=gen, lo=-10, hi=10), Arg((6, 4), dst, gen="zeros")),
                copy_into,
                lambda a, d, fn=fn: fn(a),
                EXACT,
                dtype=lbl(src),
                out_dtype=dst,
            )
        )
    out += [
        Case(
            "copy-f32-reshaped-6x2-to-4x3",
            "copy",
            (Arg((6, 2)), Arg((4, 3), gen="zeros")),
            copy_into,
            lambda a, d: a.reshape(3, 4),
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "copy-f32-into-window-3x4",
            "copy",
            (Arg((3, 4)), Arg((6, 4))),
            lambda ctx, x: x[0].copy(ctx, x[1].view(ctx, 8, 3, 24, 4)),
            lambda a, d: a,
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "copy-f32-columns-8x2",
            "copy",
            (Arg((8, 6)), Arg((8, 2))),
            lambda ctx, x: x[1].copy(ctx, x[0].duplicate(ctx).view(ctx, 3 * 32, 16)),
            lambda e, img: img.reshape(16),
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "copy-f32-to-q8_0-64x2",
            "copy",
            (Arg((64, 2)), Arg((64, 2), Q8_0)),
            lambda ctx, x: x[0].copy(ctx, x[1]).cast(ctx, F32),
            lambda a, d: a,
            Tolerance(),
            out_dtype=F32,
            bound=lambda a, d: R.quant_step(a, Q8_0),
        ),
        Case(
            "copy-q8_0-to-f32-64x2",
            "copy",
            (Arg((64, 2), Q8_0), Arg((64, 2), gen="zeros")),
            copy_into,
            lambda a, d: a,
            EXACT,
            dtype="q8_0",
            out_dtype=F32,
        ),
    ]
    return out


def _cast_cases() -> list[Case]:
    out: list[Case] = []

    def cast(dt: DType) -> Callable[[Context, Inputs], Tensor]:
        if dt.is_quantized:  # read a quantised result back as F32
            return lambda ctx, x: x[0].cast(ctx, dt).cast(ctx, F32)
        return lambda ctx, x: x[0].cast(ctx, dt)

    floats = ((F32, (F32, F16, BF16)), (F16, (F16, F32, BF16)), (BF16, (BF16, F32, F16)))
    for src, targets in floats:
        for dst in targets:
            out.append(
                Case(
                    f"cast-{lbl(src)}-to-{lbl(dst)}-9x4",
                    "cast",
                    (Arg((9, 4), src),),
                    cast(dst),
                    lambda a: a,
                    EXACT,
                    dtype=f"{lbl(src)}>{lbl(dst)}",
                    out_dtype=dst,
                )
            )
    for src in (F32, F16):
        out.append(
            Case(
                f"cast-{lbl(src)}-to-i32-9x4",
                "cast",
                (Arg((9, 4), src, lo=-10, hi=10),),
                cast(I32),
                np.trunc,
                EXACT,
                dtype=f"{lbl(src)}>i32",
                out_dtype=I32,
            )
        )
        for q in QUANTS if src == F32 else (Q8_0, Q4_0, MXFP4):
            out.append(
                Case(
                    f"cast-{lbl(src)}-to-{lbl(q)}-64x3",
                    "cast",
                    (Arg((64, 3), src),),
                    cast(q),
                    lambda a: a,
                    Tolerance(),
                    dtype=f"{lbl(src)}>{lbl(q)}",
                    out_dtype=F32,
                    bound=lambda a, q=q: R.quant_step(a, q),
                )
            )
    out += [
        Case(
            "cast-f32-to-i32-gold",
            "cast",
            (Arg((4,), gen="fixed", values=(3.7, -3.7, 0.5, -0.5)),),
            cast(I32),
            np.trunc,
            EXACT,
            dtype="f32>i32",
            out_dtype=I32,
            gold=((3, -3, 0, 0),),
        ),
        Case(
            "cast-i32-to-f32-9x4",
            "cast",
            (Arg((9, 4), I32, gen="int", lo=-1000, hi=1000),),
            cast(F32),
            lambda a: a,
            EXACT,
            dtype="i32>f32",
            out_dtype=F32,
        ),
        Case(
            "cast-i32-to-f32-large-9x4",  # above 2^24: rounded to the nearest float32
            "cast",
            (Arg((9, 4), I32, gen="int", lo=-(1 << 30), hi=1 << 30),),
            cast(F32),
            R.f32,
            EXACT,
            dtype="i32>f32",
            out_dtype=F32,
        ),
        Case(
            "cast-bf16-to-i32-9x4",
            "cast",
            (Arg((9, 4), BF16, lo=-50, hi=50),),
            cast(I32),
            np.trunc,
            EXACT,
            dtype="bf16>i32",
            out_dtype=I32,
        ),
        *(
            Case(
                f"cast-f32-to-{lbl(q)}-256x2",
                "cast",
                (Arg((256, 2)),),
                cast(q),
                lambda a: a,
                Tolerance(),
                dtype=f"f32>{lbl(q)}",
                out_dtype=F32,
                bound=lambda a, q=q: R.quant_step(a, q),
            )
            # not Q2_K: its largest errors reach half a value's magnitude, so no bound that
            # admits them rejects a 50 % error (test_no_case_has_a_vacuous_tolerance); its
            # bytes are checked against ggml's in plugins/ggml/tests/test_host_kquants.py
            for q in (DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K)
        ),
        Case(
            "cast-i32-to-i32-9x4",
            "cast",
            (Arg((9, 4), I32, gen="int", lo=-1000, hi=1000),),
            cast(I32),
            lambda a: a,
            EXACT,
            dtype="i32>i32",
            out_dtype=I32,
        ),
        Case(
            "cast-f32-to-f16-perm-4x9",
            "cast",
            (Arg((9, 4)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).cast(ctx, F16),
            lambda a: R.permute(a, (1, 0)),
            EXACT,
            dtype="f32>f16",
            out_dtype=F16,
        ),
        Case(
            "cast-f32-to-f16-overflow",
            "cast",
            (Arg((4,), gen="fixed", values=(70000.0, -70000.0, 1e-8, 65504.0)),),
            cast(F16),
            lambda a: a,
            EXACT,
            dtype="f32>f16",
            out_dtype=F16,
        ),
        Case(
            "cast-q8_0-to-q8_0-64x3",
            "cast",
            (Arg((64, 3), Q8_0),),
            cast_same(Q8_0),
            lambda a: a,
            EXACT,
            dtype="q8_0>q8_0",
            out_dtype=Q8_0,
            raw_ref=True,
        ),
    ]
    for q in (*QUANTS, *K_QUANTS):
        n = 256 if q in K_QUANTS else 64
        out.append(
            Case(
                f"cast-{lbl(q)}-to-f32-{n}x3",
                "cast",
                (Arg((n, 3), q),),
                cast(F32),
                lambda a: a,
                dequant_tol(q),
                dtype=f"{lbl(q)}>f32",
                out_dtype=F32,
            )
        )
    return out


def cast_same(dt: DType) -> Callable[[Context, Inputs], Tensor]:
    """A same-type cast: a byte copy."""
    return lambda ctx, x: x[0].cast(ctx, dt)


def cases() -> list[Case]:
    """Return the copy and cast cases."""
    return [*_copy_cases(), *_cast_cases()]
