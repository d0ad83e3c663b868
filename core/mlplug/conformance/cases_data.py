"""Cases of the Context constructors and of the Tensor data accessors (round trips, exact)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..context import Context
from ..dtypes import DType, row_size
from ..tensor import Tensor
from . import reference as R
from ._common import BF16, EXACT, F16, F32, I32, MXFP4, Q4_0, Q8_0, lbl, shape_check, sx
from .case import Arg, Build, Case, Inputs
from .data import rev

__all__ = ["cases"]


def _raw(dt: DType) -> bool:
    return dt.is_quantized


def _constructor_cases() -> list[Case]:
    out: list[Case] = []
    for dt, ne in (
        (F32, (4, 3)),
        (F16, (5, 2, 2)),
        (I32, (7,)),
        (BF16, (4, 4)),
        (F32, (2, 3, 2, 2)),
        (Q8_0, (64, 2)),
    ):
        zero = (
            (lambda ne=ne, dt=dt: np.zeros((*rev(ne)[:-1], row_size(dt, ne[0])), np.uint8))
            if dt.is_quantized
            else (lambda ne=ne: np.zeros(rev(ne)))
        )
        out.append(
            Case(
                f"Context.zeros-{lbl(dt)}-{sx(ne)}",
                "Context.zeros",
                (),
                lambda ctx, x, dt=dt, ne=ne: ctx.input().zeros(dt, *ne),
                zero,
                EXACT,
                dtype=lbl(dt),
                out_dtype=dt,
                raw_ref=_raw(dt),
            )
        )
    for dt, ne in (
        (F32, (6, 4)),
        (F16, (5, 3)),
        (BF16, (4, 2)),
        (I32, (9,)),
        (Q8_0, (64, 2)),
        (Q4_0, (32, 3)),
        (MXFP4, (64, 1)),
        (DType.Q4_K, (256, 2)),
        (DType.I64, (5,)),
    ):
        gen = "int" if dt in (I32, DType.I64) else "uniform"
        out.append(
            Case(
                f"Context.from_bytes-{lbl(dt)}-{sx(ne)}",
                "Context.from_bytes",
                (Arg(ne, dt, gen=gen, lo=-100, hi=100, tensor=False),),
                lambda ctx, x, dt=dt, ne=ne: ctx.input().from_bytes(
                    dt, np.ascontiguousarray(x.raw[0]).tobytes(), *ne
                ),
                lambda a: a,
                EXACT,
                dtype=lbl(dt),
                out_dtype=dt,
                raw_ref=_raw(dt),
            )
        )
    out += [
        Case(
            "Context.from_floats-f32-gold-3x2",
            "Context.from_floats",
            (Arg((3, 2), gen="fixed", values=(1, 2, 3, 4, 5, 6), tensor=False),),
            lambda ctx, x: ctx.input().from_floats(x.raw[0].reshape(-1), 3, 2),
            lambda a: a,
            EXACT,
            out_dtype=F32,
            check=shape_check((3, 2)),
        ),
        Case(
            "Context.from_floats-f32-array-4x3x2",
            "Context.from_floats",
            (Arg((4, 3, 2), tensor=False),),
            lambda ctx, x: ctx.input().from_floats(x.raw[0]),
            lambda a: a,
            EXACT,
            out_dtype=F32,
            check=shape_check((4, 3, 2)),
        ),
        Case(
            "Context.from_floats-f32-4d-2x3x2x2",
            "Context.from_floats",
            (Arg((2, 3, 2, 2), tensor=False),),
            lambda ctx, x: ctx.input().from_floats(list(x.raw[0].reshape(-1)), 2, 3, 2, 2),
            lambda a: a,
            EXACT,
            out_dtype=F32,
        ),
        Case(
            "Context.from_floats-f32-trailing1-3x1",
            "Context.from_floats",
            (Arg((3, 1), tensor=False),),
            lambda ctx, x: ctx.input().from_floats(x.raw[0].reshape(-1), 3, 1),
            lambda a: a,
            EXACT,
            out_dtype=F32,
            check=shape_check((3,)),
        ),
        Case(
            "Context.from_ints-i32-5x2",
            "Context.from_ints",
            (Arg((5, 2), I32, gen="int", lo=-1000, hi=1000, tensor=False),),
            lambda ctx, x: ctx.input().from_ints(x.raw[0].reshape(-1), 5, 2),
            lambda a: a,
            EXACT,
            dtype="i32",
            out_dtype=I32,
        ),
        Case(
            "Context.from_ints-i32-array-3x2x2",
            "Context.from_ints",
            (Arg((3, 2, 2), I32, gen="int", lo=-9, hi=9, tensor=False),),
            lambda ctx, x: ctx.input().from_ints(x.raw[0]),
            lambda a: a,
            EXACT,
            dtype="i32",
            out_dtype=I32,
            check=shape_check((3, 2, 2)),
        ),
        Case(
            "Context.empty-f32-0",
            "Context.empty",
            (),
            lambda ctx, x: ctx.input().empty(F32, 0),
            lambda: np.zeros(0),
            EXACT,
            out_dtype=F32,
            check=shape_check((0,)),
        ),
    ]

    # ollama's idiom: empty (or zeros), then the Tensor methods from_floats/from_ints/from_bytes
    def filled(ctor: str, dt: DType, ne: tuple[int, ...], method: str) -> Build:
        def build(ctx: Context, x: Inputs) -> Tensor:
            t = getattr(ctx.input(), ctor)(dt, *ne)
            data = x.raw[0]
            getattr(t, method)(
                np.ascontiguousarray(data).tobytes() if method == "from_bytes" else data.reshape(-1)
            )
            return t  # type: ignore[no-any-return]

        return build

    fills: list[tuple[str, DType, tuple[int, ...], str, str]] = [
        ("from_floats", F32, (4, 3), "empty", "uniform"),
        ("from_ints", I32, (6,), "empty", "int"),
        ("from_bytes", F16, (5, 2), "empty", "uniform"),
        ("from_bytes", Q8_0, (32, 2), "empty", "uniform"),
        ("from_bytes", DType.Q6_K, (256, 1), "zeros", "uniform"),
        ("Context.empty", F32, (3, 2, 2), "empty", "uniform"),
        ("Context.empty", MXFP4, (64, 1), "empty", "uniform"),
    ]
    for op, dt, shape, ctor, gen in fills:
        method = {F32: "from_floats", I32: "from_ints"}.get(dt, "from_bytes")
        out.append(
            Case(
                f"{op}-{lbl(dt)}-{sx(shape)}",
                op,
                (Arg(shape, dt, gen=gen, lo=-99, hi=99, tensor=False),),
                filled(ctor, dt, shape, method),
                lambda a: a,
                EXACT,
                dtype=lbl(dt),
                out_dtype=dt,
                raw_ref=_raw(dt),
            )
        )
    # no dtype check: FromInts on an F32 tensor stores int bit patterns, and the reverse
    out.append(
        Case(
            "from_ints-f32-bits-5",
            "from_ints",
            (Arg((5,), I32, gen="int", lo=0, hi=1000, tensor=False),),
            filled("zeros", F32, (5,), "from_ints"),
            lambda a: a.astype(np.int32).view(np.float32).astype(np.float64),
            EXACT,
            dtype="f32",
            out_dtype=F32,
        )
    )
    out.append(
        Case(
            "from_floats-i32-bits-5",
            "from_floats",
            (Arg((5,), tensor=False),),
            filled("zeros", I32, (5,), "from_floats"),
            lambda a: a.astype(np.float32).view(np.int32).astype(np.int64),
            EXACT,
            dtype="i32",
            out_dtype=I32,
        )
    )
    arange: list[tuple[str, tuple[float, float, float], DType, tuple[float, ...] | None]] = [
        ("gold-0.5-5-1.5", (0.5, 5, 1.5), F32, (0.5, 2.0, 3.5)),
        ("gold-0.5-5-1.5", (0.5, 5, 1.5), I32, (0, 2, 3)),
        ("gold-0-1-0.25", (0, 1, 0.25), I32, (0, 0, 0, 0)),
        ("gold-0-3-1", (0, 3, 1), F32, (0, 1, 2)),
        ("0-10.5-0.7", (0, 10.5, 0.7), F32, None),
        ("neg-3.5-4-0.75", (-3.5, 4, 0.75), I32, None),
        ("-2-2-0.1", (-2, 2, 0.1), F32, None),
        ("empty-5-2-1", (5, 2, 1), I32, None),
    ]
    for tag, (a, b, s), dt, gold in arange:
        ref: Callable[..., np.ndarray] = (
            (lambda a=a, b=b, s=s: R.arange_f32(a, b, s))
            if dt == F32
            else (lambda a=a, b=b, s=s: R.arange_i32(a, b, s))
        )
        out.append(
            Case(
                f"Context.arange-{lbl(dt)}-{tag}",
                "Context.arange",
                (),
                lambda ctx, x, a=a, b=b, s=s, dt=dt: ctx.arange(a, b, s, dt),
                ref,
                EXACT,  # docs/tensors.md defines f32(start + f32(step*i)) bit for bit
                dtype=lbl(dt),
                out_dtype=dt,
                gold=None if gold is None else (gold,),
            )
        )
    return out


def _accessor_cases() -> list[Case]:
    def floats(t: Tensor) -> np.ndarray | None:
        return t.floats()

    def as_bytes(t: Tensor) -> np.ndarray | None:
        raw = t.bytes()
        return None if raw is None else np.frombuffer(raw, np.uint8)

    def dup(ctx: Context, x: Inputs) -> Tensor:
        return x[0].duplicate(ctx)

    out = [
        Case(
            f"floats-{lbl(dt)}-{sx(ne)}",
            "floats",
            (Arg(ne, dt),),
            dup,
            lambda a: a,
            EXACT,
            dtype=lbl(dt),
            read=floats,
            check=shape_check(ne),
        )
        for dt, ne in ((F32, (5, 3)), (F16, (4, 2, 2)), (BF16, (6,)))
    ]
    out.append(
        Case(
            "floats-i32-bits-7",
            "floats",
            (Arg((7,), I32, gen="int", lo=0, hi=1000),),
            dup,
            lambda a: a.astype(np.int32).view(np.float32).astype(np.float64),
            EXACT,
            dtype="i32",
            read=floats,
        )
    )
    stores = {F32: "<f4", F16: "<f2", I32: "<i4"}
    for dt, ne in ((F32, (5, 3)), (F16, (7,)), (I32, (4, 2)), (Q8_0, (32, 2))):
        gen = "int" if dt == I32 else "uniform"

        def ref(a: np.ndarray, dt: DType = dt) -> np.ndarray:
            if dt.is_quantized:
                return np.asarray(a, np.uint8).reshape(-1)
            return np.frombuffer(np.asarray(a).astype(stores[dt]).tobytes(), np.uint8)

        out.append(
            Case(
                f"bytes-{lbl(dt)}-{sx(ne)}",
                "bytes",
                (Arg(ne, dt, gen=gen, lo=-9, hi=9),),
                dup,
                ref,
                EXACT,
                dtype=lbl(dt),
                read=as_bytes,
                raw_ref=_raw(dt),
                check=shape_check(ne),
            )
        )
    return out


def cases() -> list[Case]:
    """Return the constructor and accessor cases."""
    return [*_constructor_cases(), *_accessor_cases()]
