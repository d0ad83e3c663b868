"""Cases of the view ops: reshape, view, permute, slice, chunk, chunk_sections (exact, every
dtype; quantised data compared as raw blocks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..dtypes import DType
from . import reference as R
from ._common import (
    F16,
    I32,
    Q8_0,
    arange_arg,
    data_case,
    shape_check,
    sx,
)
from .case import Arg, Case

__all__ = ["cases"]


def _view_cases() -> list[Case]:
    out = [
        data_case(
            "reshape",
            "gold-2x3x4-to-6x4",
            (arange_arg((2, 3, 4)),),
            lambda ctx, x: x[0].reshape(ctx, -1, 4),
            lambda a: a.reshape(4, 6),
            check=shape_check((6, 4)),
        ),
        data_case(
            "reshape",
            "2x3x4-to-2x12",
            (Arg((2, 3, 4)),),
            lambda ctx, x: x[0].reshape(ctx, 2, -1),
            lambda a: a.reshape(12, 2),
        ),
        data_case(
            "reshape",
            "2x3x4-to-2x2x3x2",
            (Arg((2, 3, 4)),),
            lambda ctx, x: x[0].reshape(ctx, 2, -1, 3, 2),
            lambda a: a.reshape(2, 3, 2, 2),
        ),
        data_case(
            "reshape",
            "perm-copy-3x4-to-12",
            (Arg((4, 3)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).reshape(ctx, 12),
            lambda a: R.permute(a, (1, 0)).reshape(12),
        ),
        data_case(
            "reshape",
            "6x4-to-24",
            (Arg((6, 4), F16),),
            lambda ctx, x: x[0].reshape(ctx, 24),
            lambda a: a.reshape(24),
            F16,
        ),
        data_case(
            "reshape",
            "6x4-to-3x8",
            (Arg((6, 4), I32, gen="int", lo=-50, hi=50),),
            lambda ctx, x: x[0].reshape(ctx, 3, 8),
            lambda a: a.reshape(8, 3),
            I32,
        ),
        data_case(
            "reshape",
            "64x2-to-32x4",
            (Arg((64, 2), Q8_0),),
            lambda ctx, x: x[0].reshape(ctx, 32, 4),
            lambda a: a.reshape(4, -1),
            Q8_0,
        ),
    ]
    views: list[tuple[str, tuple[int, ...], int, tuple[int, ...]]] = [
        ("1d-20", (12, 3), 0, (20,)),
        ("1d-offset-10", (12, 3), 20, (10,)),
        ("2d-window-3x4", (6, 4), 8, (3, 24, 4)),
        ("3d-2x3x2", (4, 3, 2), 4, (2, 16, 3, 48, 2)),
        ("4d-4x3x2x2", (4, 3, 2, 2), 0, (4, 16, 3, 48, 2, 96, 2)),
    ]
    for tag, ne, off, shape in views:
        out.append(
            data_case(
                "view",
                tag,
                (Arg(ne),),
                lambda ctx, x, o=off, s=shape: x[0].view(ctx, o, *s),
                lambda a, o=off, s=shape: R.view(a, 4, o, s[0::2], s[1::2]),
            )
        )
    out += [
        data_case(
            "view",
            "2d-window-3x4",
            (Arg((6, 4), F16),),
            lambda ctx, x: x[0].view(ctx, 4, 3, 12, 4),
            lambda a: R.view(a, 2, 4, (3, 4), (12,)),
            F16,
        ),
        data_case(
            "view",
            "of-permuted-12",
            (Arg((4, 3)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).view(ctx, 0, 12),
            lambda a: a.reshape(12),
        ),
    ]
    perms: Sequence[tuple[int, ...]] = (
        (0, 2, 1, 3),
        (1, 0, 2, 3),
        (1, 2, 0, 3),
        (2, 0, 1, 3),
        (0, 1, 3, 2),
        (3, 2, 1, 0),
        (1, 3, 0, 2),
    )
    for order in perms:
        out.append(
            data_case(
                "permute",
                f"{''.join(map(str, order))}-2x3x4x5",
                (Arg((2, 3, 4, 5)),),
                lambda ctx, x, o=order: x[0].permute(ctx, *o),
                lambda a, o=order: R.permute(a, o),
            )
        )
    out += [
        data_case(
            "permute",
            "gold-120-2x3x4",
            (arange_arg((2, 3, 4)),),
            lambda ctx, x: x[0].permute(ctx, 1, 2, 0),
            lambda a: R.permute(a, (1, 2, 0)),
            check=shape_check((4, 2, 3)),
            gold=(
                (
                    0,
                    6,
                    12,
                    18,
                    1,
                    7,
                    13,
                    19,
                    2,
                    8,
                    14,
                    20,
                    3,
                    9,
                    15,
                    21,
                    4,
                    10,
                    16,
                    22,
                    5,
                    11,
                    17,
                    23,
                ),
            ),
        ),
        data_case(
            "permute",
            "gold-2013-2x3x5",
            (arange_arg((2, 3, 5)),),
            lambda ctx, x: x[0].permute(ctx, 2, 0, 1, 3),
            lambda a: R.permute(a, (2, 0, 1, 3)),
            check=shape_check((3, 5, 2)),
        ),
        data_case(
            "permute",
            "2axes-4x3x1",
            (Arg((4, 3, 1)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0),
            lambda a: R.permute(a, (1, 0)),
        ),
        data_case(
            "permute",
            "0213-4x3x2",
            (Arg((4, 3, 2), F16),),
            lambda ctx, x: x[0].permute(ctx, 0, 2, 1, 3),
            lambda a: R.permute(a, (0, 2, 1, 3)),
            F16,
        ),
        data_case(
            "permute",
            "0213-4x3x2",
            (Arg((4, 3, 2), I32, gen="int", lo=-9, hi=9),),
            lambda ctx, x: x[0].permute(ctx, 0, 2, 1, 3),
            lambda a: R.permute(a, (0, 2, 1, 3)),
            I32,
        ),
        *(
            data_case(
                "permute",
                f"0213-{sx(ne)}",
                (Arg(ne, dt),),
                lambda ctx, x: x[0].permute(ctx, 0, 2, 1, 3),
                lambda a: R.permute(a, (0, 2, 1, 3)),
                dt,
            )
            for dt, ne in (
                (Q8_0, (32, 3, 2)),
                (DType.BF16, (8, 3, 2)),
                (DType.Q4_0, (64, 3, 2)),
                (DType.MXFP4, (64, 3, 2)),
            )
        ),
    ]
    slices: list[tuple[str, tuple[int, ...], tuple[int, int, int, int]]] = [
        ("dim0-step2-9x3", (9, 3), (0, 0, 5, 2)),
        ("dim0-len-rule-0-4-3", (9, 3), (0, 0, 4, 3)),
        ("dim0-len-rule-0-7-3", (8, 2), (0, 0, 7, 3)),
        ("dim1-step2-4x7", (4, 7), (1, 1, 7, 2)),
        ("dim2-step3-3x2x8", (3, 2, 8), (2, 0, 7, 3)),
        ("dim3-2x2x2x5", (2, 2, 2, 5), (3, 1, 4, 1)),
        ("dim1-empty-4x3", (4, 3), (1, 0, 1, 3)),
    ]
    for tag, ne, (d, lo, hi, st) in slices:
        out.append(
            data_case(
                "slice",
                tag,
                (Arg(ne),),
                lambda ctx, x, p=(d, lo, hi, st): x[0].slice(ctx, *p),
                lambda a, p=(d, lo, hi, st): R.slice_(a, *p),
            )
        )
    out += [
        data_case(
            "slice",
            "gold-4x4x4x4",
            (arange_arg((4, 4, 4, 4)),),
            lambda ctx, x: x[0].slice(ctx, 0, 1, 3, 1),
            lambda a: R.slice_(a, 0, 1, 3, 1),
            check=shape_check((2, 4, 4, 4)),
        ),
        data_case(
            "slice",
            "dim1-6x5",
            (Arg((6, 5), F16),),
            lambda ctx, x: x[0].slice(ctx, 1, 1, 4, 1),
            lambda a: R.slice_(a, 1, 1, 4, 1),
            F16,
        ),
        *(
            data_case(
                "slice",
                f"dim1-{sx(ne)}",
                (Arg(ne, dt),),
                lambda ctx, x: x[0].slice(ctx, 1, 2, 5, 1),
                lambda a: R.slice_(a, 1, 2, 5, 1),
                dt,
            )
            for dt, ne in (
                (Q8_0, (32, 6)),
                (DType.BF16, (8, 6)),
                (DType.Q4_0, (64, 6)),
                (DType.MXFP4, (64, 6)),
            )
        ),
    ]
    return out


_CHUNK_GOLD = {
    "gold-0-1-3x4": ((0, 3, 6, 9), (1, 4, 7, 10), (2, 5, 8, 11)),
    "gold-0-2-3x4": ((0, 1, 3, 4, 6, 7, 9, 10), (2, 5, 8, 11)),
    "gold-1-2-3x4": ((0, 1, 2, 3, 4, 5), (6, 7, 8, 9, 10, 11)),
}


def _chunk_cases() -> list[Case]:
    def pieces(a: np.ndarray, dim: int, sizes: Sequence[int]) -> list[np.ndarray]:
        offs = np.cumsum([0, *sizes])
        return [
            R.slice_(a, dim, int(o), int(o + s), 1) for o, s in zip(offs[:-1], sizes, strict=True)
        ]

    out = []
    for tag, ne, dim, size, sizes in (
        ("gold-0-1-3x4", (3, 4), 0, 1, (1, 1, 1)),
        ("gold-0-2-3x4", (3, 4), 0, 2, (2, 1)),
        ("gold-1-2-3x4", (3, 4), 1, 2, (2, 2)),
        ("0-4-10x3", (10, 3), 0, 4, (4, 4, 2)),
        ("2-2-2x3x5", (2, 3, 5), 2, 2, (2, 2, 1)),
    ):
        arg = arange_arg(ne) if tag.startswith("gold") else Arg(ne)
        out.append(
            data_case(
                "chunk",
                tag,
                (arg,),
                lambda ctx, x, d=dim, s=size: x[0].chunk(ctx, d, s),
                lambda a, d=dim, ss=sizes: pieces(a, d, ss),
                gold=_CHUNK_GOLD.get(tag),
            )
        )
    for tag, ne, dim, sizes in (
        ("0-8-4-12x3", (12, 3), 0, (8, 4)),
        ("1-1-2-3-3x6x2", (3, 6, 2), 1, (1, 2, 3)),
        ("0-16-8-24x2x3", (24, 2, 3), 0, (16, 8)),
    ):
        out.append(
            data_case(
                "chunk_sections",
                tag,
                (Arg(ne),),
                lambda ctx, x, d=dim, ss=sizes: x[0].chunk_sections(ctx, d, *ss),
                lambda a, d=dim, ss=sizes: pieces(a, d, ss),
            )
        )
    return out


def cases() -> list[Case]:
    """Return the view cases."""
    return [*_view_cases(), *_chunk_cases()]
