"""Cases of the element-wise ops: arithmetic, scale/clamp/fill, unary functions, gated forms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np

from ..context import Context
from ..dtypes import DType
from ..tensor import Tensor
from . import reference as R
from ._common import (
    EXACT,
    F16,
    F32,
    GELU,
    MXFP4,
    Q4_0,
    Q8_0,
    TRANSCENDENTAL,
    exact,
    lbl,
    sx,
)
from .case import Arg, Build, Case, Inputs, Reference, Tolerance

__all__ = ["cases"]

NAN = float("nan")


def _binary_cases(op: str) -> list[Case]:
    ref = partial(R.binary, op)

    def rhs(ne: tuple[int, ...], dt: DType = F32) -> Arg:
        if op == "div":  # keep denominators away from 0
            return Arg(ne, dt, gen="magnitude", lo=0.5, hi=2.0)
        return Arg(ne, dt)

    def call(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        return getattr(a, op)(ctx, b)  # type: ignore[no-any-return]

    def mk(
        tag: str, a: Arg, b: Arg, build: Build | None = None, reference: Reference | None = None
    ) -> Case:
        label = lbl(a.dtype) if a.dtype == b.dtype else f"{lbl(a.dtype)}+{lbl(b.dtype)}"
        return Case(
            f"{op}-{tag}",
            op,
            (a, b),
            build or (lambda ctx, x: call(ctx, x[0], x[1])),
            reference or ref,
            exact(a.dtype),
            dtype=label,
            out_dtype=a.dtype,
        )

    out = [mk(f"f32-{sx(ne)}", Arg(ne), rhs(ne)) for ne in ((4, 3), (5, 3, 2), (3, 2, 2, 2))]
    out += [
        mk("f32-bias-8x6x2", Arg((8, 6, 2)), rhs((8,))),
        mk("f32-tile-8x6x4x2", Arg((8, 6, 4, 2)), rhs((4, 3, 2, 1))),
        mk("f32-col-3x2", Arg((3, 2)), rhs((1, 2))),
        mk(
            "f32-perm-4x6",
            Arg((6, 4)),
            rhs((4, 6)),
            lambda ctx, x: call(ctx, x[0].permute(ctx, 1, 0), x[1]),
            lambda a, b: R.binary(op, R.permute(a, (1, 0)), b),
        ),
        mk(
            "f32-slice-6x5",
            Arg((6, 5)),
            rhs((8, 5)),
            lambda ctx, x: call(ctx, x[0], x[1].slice(ctx, 0, 2, 8, 1)),
            lambda a, b: R.binary(op, a, R.slice_(b, 0, 2, 8, 1)),
        ),
        mk("f16-5x3", Arg((5, 3), F16), rhs((5, 3), F16)),
        mk("f16-tile-8x6x2", Arg((8, 6, 2), F16), rhs((8, 1, 2), F16)),
        mk("f16+f32-5x3", Arg((5, 3), F16), rhs((5, 3))),
        mk("f16+f32-bias-8x4", Arg((8, 4), F16), rhs((8,))),
        # the right operand repeats along dim 0 with an extent above 1
        mk("f32-tile-dim0-6x2", Arg((6, 2)), rhs((2, 1))),
        mk("f32-tile-dim0-6x4x3", Arg((6, 4, 3)), rhs((2, 1, 3))),
    ]
    if op != "add":
        return out
    for q in (Q8_0, Q4_0, MXFP4):  # quantised + F32: dequantise, add, quantise again
        out.append(
            Case(
                f"add-{lbl(q)}+f32-64x3",
                "add",
                (Arg((64, 3), q), Arg((64,))),
                lambda ctx, x: x[0].add(ctx, x[1]).cast(ctx, F32),
                ref,
                Tolerance(),
                dtype=f"{lbl(q)}+f32",
                out_dtype=F32,
                bound=lambda a, b, q=q: R.quant_step(R.binary("add", a, b), q),
            )
        )
    gold = [
        ((1, 2, 3, 4, 5, 6), (6,), (10, 20), (2,), (11, 22, 13, 24, 15, 26)),
        ((1, 2, 3, 4, 5, 6), (3, 2), (10, 20, 30), (3,), (11, 22, 33, 14, 25, 36)),
        ((1, 2, 3, 4, 5, 6), (3, 2), (100, 200), (1, 2), (101, 102, 103, 204, 205, 206)),
    ]
    for i, (av, ane, bv, bne, want) in enumerate(gold):
        c = mk(
            f"f32-gold{i + 1}-{sx(ane)}+{sx(bne)}",
            Arg(ane, gen="fixed", values=av),
            Arg(bne, gen="fixed", values=bv),
        )
        out.append(replace(c, gold=(want,)))
    return out


def _scalar_cases() -> list[Case]:
    out: list[Case] = []
    for ne, s in (((7, 5), 0.37), ((4, 3, 2), -2.0), ((3, 2, 2, 2), 1e-3)):
        out.append(
            Case(
                f"scale-f32-{sx(ne)}",
                "scale",
                (Arg(ne),),
                lambda ctx, x, s=s: x[0].scale(ctx, s),
                lambda a, s=s: a * float(np.float32(s)),
                EXACT,
                out_dtype=F32,
            )
        )
    out.append(
        Case(
            "scale-f32-perm-6x4",
            "scale",
            (Arg((4, 6)),),
            lambda ctx, x: x[0].permute(ctx, 1, 0).scale(ctx, 0.5),
            lambda a: R.permute(a, (1, 0)) * 0.5,
            EXACT,
            out_dtype=F32,
        )
    )

    def clamp_ref(lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda a: R.clamp(a, lo, hi)

    for dt, ne, lo, hi in (
        (F32, (9, 4), -0.5, 0.3),
        (F16, (9, 4), -0.5, 0.3),
        (F32, (5, 2), 0.5, -0.5),
        (F32, (4, 3, 2, 2), -0.2, 0.9),
    ):
        tag = "inverted" if lo > hi else sx(ne)
        out.append(
            Case(
                f"clamp-{lbl(dt)}-{tag}",
                "clamp",
                (Arg(ne, dt),),
                lambda ctx, x, lo=lo, hi=hi: x[0].clamp(ctx, lo, hi),
                clamp_ref(lo, hi),
                exact(dt),
                dtype=lbl(dt),
                out_dtype=dt,
            )
        )
    out.append(
        Case(
            "clamp-f32-slice-8x4",
            "clamp",
            (Arg((10, 4)),),
            lambda ctx, x: x[0].slice(ctx, 0, 1, 9, 1).clamp(ctx, -0.4, 0.4),
            lambda a: R.clamp(R.slice_(a, 0, 1, 9, 1), -0.4, 0.4),
            EXACT,
            out_dtype=F32,
        )
    )
    out.append(
        Case(
            "clamp-f32-gold-nan",
            "clamp",
            (Arg((5,), gen="fixed", values=(-2, -0.1, 0.2, 5, NAN)),),
            lambda ctx, x: x[0].clamp(ctx, -1, 1),
            clamp_ref(-1, 1),
            EXACT,
            out_dtype=F32,
            gold=((-1, -0.1, 0.2, 1, 1),),
            gold_atol=1e-7,
        )
    )
    for ne, gen, v in (((4, 3), "zeros", 1.0), ((5, 2, 3), "uniform", -2.5)):
        out.append(
            Case(
                f"fill-f32-{sx(ne)}",
                "fill",
                (Arg(ne, gen=gen),),
                lambda ctx, x, v=v: x[0].fill(ctx, v),
                lambda a, v=v: np.full(a.shape, v),
                EXACT,
                out_dtype=F32,
            )
        )
    out.append(
        Case(
            "fill-f32-node-4x3",
            "fill",
            (Arg((4, 3)),),
            lambda ctx, x: x[0].scale(ctx, 2.0).fill(ctx, -1.5),
            lambda a: np.full(a.shape, -1.5),
            EXACT,
            out_dtype=F32,
        )
    )
    return out


#: Unary methods, their tolerance family and input range.
_UNARY: dict[str, tuple[str, float, float]] = {
    "sin": ("trans", -4, 4),
    "cos": ("trans", -4, 4),
    "tanh": ("trans", -4, 4),
    "sqr": ("exact", -4, 4),
    "sqrt": ("trans", 0.01, 4),
    "exp": ("trans", -4, 4),
    "neg": ("exact", -4, 4),
    "softplus": ("trans", -4, 4),
    "sigmoid": ("trans", -4, 4),
    "sigmoid_out": ("trans", -4, 4),
    "gelu": ("gelu", -4, 4),
    "gelu_erf": ("trans", -4, 4),
    "quick_gelu": ("gelu", -4, 4),
    "silu": ("trans", -4, 4),
    "relu": ("exact", -4, 4),
}
_WIDE = {
    "sin": (-100.0, 100.0),
    "cos": (-100.0, 100.0),
    "softplus": (-30.0, 30.0),
    "gelu": (-12.0, 12.0),
    "quick_gelu": (-12.0, 12.0),
}
_GOLD = {
    "gelu": ((1, -0.5, 2), (0.8411920, -0.1542860, 1.9545977)),
    "gelu_erf": ((1,), (0.8413447,)),
    "quick_gelu": ((1, 2), (0.8457958, 1.9356586)),
    "relu": ((-1, 0, 2.5), (0, 0, 2.5)),
    "softplus": ((-25, 0, 25), (0, 0.6931472, 25)),
}


def _unary_tol(family: str, dt: type | object) -> Tolerance:
    if family == "exact":
        return exact(dt)  # type: ignore[arg-type]
    if family == "gelu":
        return GELU
    return TRANSCENDENTAL[dt]  # type: ignore[index]


def _unary_cases(op: str) -> list[Case]:
    family, lo, hi = _UNARY[op]
    fn = R.ACTIVATIONS[op]

    def call(ctx: Context, t: Tensor) -> Tensor:
        return getattr(t, op)(ctx)  # type: ignore[no-any-return]

    out: list[Case] = []
    for dt, ne in ((F32, (16, 5)), (F32, (5, 3, 2, 2)), (F16, (16, 5))):
        out.append(
            Case(
                f"{op}-{lbl(dt)}-{sx(ne)}",
                op,
                (Arg(ne, dt, lo=lo, hi=hi),),
                lambda ctx, x: call(ctx, x[0]),
                fn,
                _unary_tol(family, dt),
                dtype=lbl(dt),
                out_dtype=dt,
            )
        )
    out.append(
        Case(
            f"{op}-f32-perm-8x6",
            op,
            (Arg((6, 8), lo=lo, hi=hi),),
            lambda ctx, x: call(ctx, x[0].permute(ctx, 1, 0)),
            lambda a: fn(R.permute(a, (1, 0))),
            _unary_tol(family, F32),
            out_dtype=F32,
        )
    )
    out.append(
        Case(
            f"{op}-f32-slice-8x4",
            op,
            (Arg((12, 4), lo=lo, hi=hi),),
            lambda ctx, x: call(ctx, x[0].slice(ctx, 0, 2, 10, 1)),
            lambda a: fn(R.slice_(a, 0, 2, 10, 1)),
            _unary_tol(family, F32),
            out_dtype=F32,
        )
    )
    if op in _WIDE:
        wlo, whi = _WIDE[op]
        out.append(
            Case(
                f"{op}-f32-wide-32x4",
                op,
                (Arg((32, 4), lo=wlo, hi=whi),),
                lambda ctx, x: call(ctx, x[0]),
                fn,
                _unary_tol(family, F32),
                out_dtype=F32,
            )
        )
    if op in _GOLD:
        xs, want = _GOLD[op]
        out.append(
            Case(
                f"{op}-f32-gold",
                op,
                (Arg((len(xs),), gen="fixed", values=xs),),
                lambda ctx, x: call(ctx, x[0]),
                fn,
                _unary_tol(family, F32),
                out_dtype=F32,
                gold=(want,),
            )
        )
    return out


def _gated_cases(op: str) -> list[Case]:
    act = R.ACTIVATIONS[op]
    family = {"gelu": "gelu", "quick_gelu": "gelu", "silu": "trans", "relu": "exact"}[op]

    def ref(g: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.asarray(act(g) * u)

    def build(ctx: Context, x: Inputs) -> Tensor:
        return getattr(x[0], op)(ctx, x[1])  # type: ignore[no-any-return]

    out: list[Case] = []
    for dt, ne in ((F32, (16, 5)), (F32, (8, 3, 2)), (F16, (16, 5))):
        out.append(
            Case(
                f"{op}-{lbl(dt)}-gated-{sx(ne)}",
                op,
                (Arg(ne, dt, lo=-4, hi=4), Arg(ne, dt, lo=-2, hi=2)),
                build,
                ref,
                _unary_tol(family, dt),
                dtype=lbl(dt),
                out_dtype=dt,
            )
        )
    out.append(
        Case(
            f"{op}-f32-gated-slice-8x4",
            op,
            (Arg((12, 4), lo=-4, hi=4), Arg((10, 4), lo=-2, hi=2)),
            lambda ctx, x: getattr(x[0].slice(ctx, 0, 2, 10, 1), op)(
                ctx, x[1].slice(ctx, 0, 1, 9, 1)
            ),
            lambda g, u: ref(R.slice_(g, 0, 2, 10, 1), R.slice_(u, 0, 1, 9, 1)),
            _unary_tol(family, F32),
            out_dtype=F32,
        )
    )
    gold = {"silu": (1.4621172, -0.8068243), "relu": (2.0, 0.0)}
    if op in gold:
        out.append(
            Case(
                f"{op}-f32-gated-gold",
                op,
                (Arg((2,), gen="fixed", values=(1, -1)), Arg((2,), gen="fixed", values=(2, 3))),
                build,
                ref,
                _unary_tol(family, F32),
                out_dtype=F32,
                gold=(gold[op],),
            )
        )
    return out


def _swiglu_oai_cases() -> list[Case]:
    op = "silu_alpha_limit"
    tol = TRANSCENDENTAL[F32]

    def build(alpha: float, limit: float) -> Callable[[Context, Inputs], Tensor]:
        return lambda ctx, x: x[0].silu_alpha_limit(ctx, x[1], alpha, limit)

    def ref(alpha: float, limit: float) -> Callable[..., np.ndarray]:
        return lambda g, u: R.silu_alpha_limit(g, u, alpha, limit)

    out = [
        Case(
            f"{op}-f32-{sx(ne)}",
            op,
            (Arg(ne, lo=-10, hi=10), Arg(ne, lo=-10, hi=10)),
            build(1.702, 7.0),
            ref(1.702, 7.0),
            tol,
            out_dtype=F32,
        )
        for ne in ((16, 5), (8, 3, 2))
    ]
    out.append(
        Case(
            f"{op}-f32-slice-8x4",
            op,
            (Arg((12, 4), lo=-10, hi=10), Arg((8, 4), lo=-10, hi=10)),
            lambda ctx, x: x[0].slice(ctx, 0, 3, 11, 1).silu_alpha_limit(ctx, x[1], 1.0, 5.0),
            lambda g, u: R.silu_alpha_limit(R.slice_(g, 0, 3, 11, 1), u, 1.0, 5.0),
            tol,
            out_dtype=F32,
        )
    )
    out.append(
        Case(
            f"{op}-f32-gold",
            op,
            (Arg((2,), gen="fixed", values=(10, -3)), Arg((2,), gen="fixed", values=(8, -0.5))),
            build(1.702, 7.0),
            ref(1.702, 7.0),
            tol,
            out_dtype=F32,
            gold=((55.999626, -0.009035655),),
            gold_atol=2e-6,
        )
    )
    return out


def cases() -> list[Case]:
    """Return the element-wise cases."""
    out: list[Case] = []
    for op in ("add", "sub", "mul", "div"):
        out += _binary_cases(op)
    out += _scalar_cases()
    for op in _UNARY:
        out += _unary_cases(op)
    for op in ("gelu", "quick_gelu", "silu", "relu"):
        out += _gated_cases(op)
    out += _swiglu_oai_cases()
    return out
