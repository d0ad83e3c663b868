"""Error cases: invalid shapes, dtypes, parameters, layouts and indices every backend rejects.

The core checks an op's operands before any backend sees the node, so every backend raises the
same typed error (:class:`~mlplug.errors.ShapeError`, :class:`~mlplug.errors.DTypeError`, ...)
for the same mistake; index values outside their table are checked when the graph runs
(:class:`~mlplug.errors.OutOfRangeError`, never a silent read of another row). Each case builds
one such mistake and names the error it expects (:attr:`Case.expect_error`); a backend passes
when building or computing raises that error, and fails when it raises another one, aborts, or
silently computes something. Ids read ``<op>-err-<what is wrong>``; the dtype label is ``err``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np

from ..context import Context
from ..dtypes import DType
from ..errors import DTypeError, GraphError, MlplugError, OutOfRangeError, ShapeError
from ..tensor import Tensor
from .case import Arg, Case, Inputs, Tolerance

__all__ = ["ERROR_DTYPE", "cases", "error_case"]

#: The dtype label of every error case in the report's op x dtype matrix.
ERROR_DTYPE = "err"

F32, F16, BF16, I32, Q8_0 = DType.F32, DType.F16, DType.BF16, DType.I32, DType.Q8_0

_Build = Callable[[Context, Inputs], "Tensor | list[Tensor]"]


def _no_reference(*_: np.ndarray) -> list[np.ndarray]:
    return []


def error_case(
    op: str,
    what: str,
    args: tuple[Arg, ...],
    build: _Build,
    error: type[MlplugError],
) -> Case:
    """Return the case ``<op>-err-<what>``: ``build`` on ``args`` must raise ``error``."""
    return Case(
        id=f"{op}-err-{what}",
        op=op,
        args=args,
        build=build,
        reference=_no_reference,
        tol=Tolerance(ulp=0),
        dtype=ERROR_DTYPE,
        expect_error=error,
    )


def f(*ne: int, dtype: DType = F32, layout: str = "") -> Arg:
    """A float input of ggml shape ``ne``."""
    return Arg(tuple(ne), dtype=dtype, layout=layout)


def i(*ne: int, hi: int = 2) -> Arg:
    """An I32 input of ggml shape ``ne`` holding integers in ``[0, hi)``."""
    return Arg(tuple(ne), dtype=I32, gen="int", lo=0, hi=hi)


def q(*ne: int) -> Arg:
    """A Q8_0 input (dim 0 a multiple of 32)."""
    return Arg(tuple(ne), dtype=Q8_0)


def _method(op: str, n_operands: int = 0) -> _Build:
    """A build calling ``inputs[0].<op>(ctx, inputs[1], ...)`` with ``n_operands`` operands."""

    def build(ctx: Context, x: Inputs) -> Tensor:
        method = getattr(x[0], op)
        return cast("Tensor", method(ctx, *(x[k] for k in range(1, 1 + n_operands))))

    return build


_UNARY_FLOAT = (
    "sin",
    "cos",
    "tanh",
    "sqr",
    "sqrt",
    "exp",
    "neg",
    "softplus",
    "sigmoid",
    "gelu_erf",
)
_GATED = ("gelu", "quick_gelu", "silu", "relu")
_BINARY = ("add", "sub", "mul", "div")


def _elementwise() -> list[Case]:
    out = []
    for op in _UNARY_FLOAT:
        out.append(error_case(op, "i32", (i(4, 3),), _method(op), DTypeError))
    for op in _GATED:
        out.append(error_case(op, "i32", (i(4, 3),), _method(op), DTypeError))
        out.append(
            error_case(
                op,
                "up-shape",
                (f(4, 3), f(4, 2)),
                _method(op, 1),
                ShapeError,
            )
        )
        out.append(
            error_case(
                op,
                "up-dtype",
                (f(4, 3), f(4, 3, dtype=F16)),
                _method(op, 1),
                DTypeError,
            )
        )
    for op in _BINARY:
        out.append(
            error_case(
                op,
                "not-repeatable",
                (f(4, 3), f(3, 3)),
                _method(op, 1),
                ShapeError,
            )
        )
        out.append(
            error_case(
                op,
                "larger-right",
                (f(4, 1), f(4, 3)),
                _method(op, 1),
                ShapeError,
            )
        )
        out.append(
            error_case(
                op,
                "i32",
                (i(4, 3), i(4, 3)),
                _method(op, 1),
                DTypeError,
            )
        )
    out += [
        error_case("scale", "i32", (i(4, 3),), lambda ctx, x: x[0].scale(ctx, 2.0), DTypeError),
        error_case(
            "scale", "f16", (f(4, 3, dtype=F16),), lambda ctx, x: x[0].scale(ctx, 2.0), DTypeError
        ),
        error_case("clamp", "i32", (i(4, 3),), lambda ctx, x: x[0].clamp(ctx, 0, 1), DTypeError),
        error_case("fill", "i32", (i(4, 3),), lambda ctx, x: x[0].fill(ctx, 1.0), DTypeError),
        error_case(
            "sigmoid_out", "i32", (i(4, 3),), lambda ctx, x: x[0].sigmoid_out(ctx), DTypeError
        ),
        error_case(
            "silu_alpha_limit",
            "up-shape",
            (f(4, 3), f(4, 2)),
            lambda ctx, x: x[0].silu_alpha_limit(ctx, x[1], 1.7, 7.0),
            ShapeError,
        ),
        error_case(
            "silu_alpha_limit",
            "up-f16",
            (f(4, 3), f(4, 3, dtype=F16)),
            lambda ctx, x: x[0].silu_alpha_limit(ctx, x[1], 1.7, 7.0),
            DTypeError,
        ),
    ]
    return out


def _linalg() -> list[Case]:
    return [
        error_case(
            "mulmat",
            "k-mismatch",
            (f(4, 3), f(5, 2)),
            lambda ctx, x: x[0].mulmat(ctx, x[1]),
            ShapeError,
        ),
        error_case(
            "mulmat",
            "not-broadcastable",
            (f(4, 3, 2), f(4, 2, 3)),
            lambda ctx, x: x[0].mulmat(ctx, x[1]),
            ShapeError,
        ),
        error_case(
            "mulmat",
            "i32-left",
            (i(4, 3), f(4, 2)),
            lambda ctx, x: x[0].mulmat(ctx, x[1]),
            DTypeError,
        ),
        error_case(
            "mulmat",
            "q8_0-right",
            (f(32, 2), q(32, 2)),
            lambda ctx, x: x[0].mulmat(ctx, x[1]),
            DTypeError,
        ),
        error_case(
            "mulmat_full_prec",
            "k-mismatch",
            (f(4, 3), f(5, 2)),
            lambda ctx, x: x[0].mulmat_full_prec(ctx, x[1]),
            ShapeError,
        ),
        error_case(
            "mulmat_id",
            "ids-f32",
            (f(4, 3, 2), f(4, 1, 2), f(1, 2)),
            lambda ctx, x: x[0].mulmat_id(ctx, x[1], x[2]),
            DTypeError,
        ),
        error_case(
            "mulmat_id",
            "ids-tokens",
            (f(4, 3, 2), f(4, 1, 2), i(1, 3)),
            lambda ctx, x: x[0].mulmat_id(ctx, x[1], x[2]),
            ShapeError,
        ),
        error_case(
            "mulmat_id",
            "k-mismatch",
            (f(4, 3, 2), f(5, 1, 2), i(1, 2)),
            lambda ctx, x: x[0].mulmat_id(ctx, x[1], x[2]),
            ShapeError,
        ),
        error_case(
            "add_id",
            "bias-dim0",
            (f(4, 2, 3), f(5, 2), i(2, 3)),
            lambda ctx, x: x[0].add_id(ctx, x[1], x[2]),
            ShapeError,
        ),
        error_case(
            "add_id",
            "ids-f32",
            (f(4, 2, 3), f(4, 2), f(2, 3)),
            lambda ctx, x: x[0].add_id(ctx, x[1], x[2]),
            DTypeError,
        ),
        error_case(
            "add_id",
            "ids-shape",
            (f(4, 2, 3), f(4, 2), i(3, 2)),
            lambda ctx, x: x[0].add_id(ctx, x[1], x[2]),
            ShapeError,
        ),
        error_case("diag", "dim1", (f(4, 2),), lambda ctx, x: x[0].diag(ctx), ShapeError),
        error_case("diag", "i32", (i(4, 1),), lambda ctx, x: x[0].diag(ctx), DTypeError),
        error_case("tri", "not-square", (f(4, 3),), lambda ctx, x: x[0].tri(ctx, 0), ShapeError),
        error_case("tri", "i32", (i(3, 3),), lambda ctx, x: x[0].tri(ctx, 0), DTypeError),
        error_case(
            "solve_tri",
            "b-rows",
            (f(3, 3), f(2, 4)),
            lambda ctx, x: x[0].solve_tri(ctx, x[1], True, True, False),
            ShapeError,
        ),
        error_case(
            "solve_tri",
            "batch",
            (f(3, 3, 2), f(2, 3, 3)),
            lambda ctx, x: x[0].solve_tri(ctx, x[1], True, True, False),
            ShapeError,
        ),
        error_case(
            "solve_tri",
            "f16",
            (f(3, 3, dtype=F16), f(2, 3)),
            lambda ctx, x: x[0].solve_tri(ctx, x[1], True, True, False),
            DTypeError,
        ),
    ]


def _reduce() -> list[Case]:
    out = [
        error_case(op, "i32", (i(4, 3),), _method(op), DTypeError)
        for op in ("softmax", "sum_rows", "mean", "variance", "stddev", "cum_sum")
    ]
    out += [
        error_case(
            "softmax", "f16", (f(4, 3, dtype=F16),), lambda ctx, x: x[0].softmax(ctx), DTypeError
        ),
        error_case(
            "l2_norm",
            "negative-eps",
            (f(4, 3),),
            lambda ctx, x: x[0].l2_norm(ctx, -1e-6),
            ShapeError,
        ),
        error_case(
            "l2_norm", "i32", (i(4, 3),), lambda ctx, x: x[0].l2_norm(ctx, 1e-6), DTypeError
        ),
        error_case(
            "rms_norm",
            "negative-eps",
            (f(4, 3),),
            lambda ctx, x: x[0].rms_norm(ctx, None, -1.0),
            ShapeError,
        ),
        error_case(
            "rms_norm",
            "weight-shape",
            (f(4, 3), f(5)),
            lambda ctx, x: x[0].rms_norm(ctx, x[1], 1e-6),
            ShapeError,
        ),
        error_case(
            "layer_norm",
            "negative-eps",
            (f(4, 3),),
            lambda ctx, x: x[0].layer_norm(ctx, None, None, -1.0),
            ShapeError,
        ),
        error_case(
            "layer_norm",
            "bias-shape",
            (f(4, 3), f(4), f(5)),
            lambda ctx, x: x[0].layer_norm(ctx, x[1], x[2], 1e-6),
            ShapeError,
        ),
        error_case("argsort", "f16", (f(4, 3, dtype=F16),), _method("argsort"), DTypeError),
        error_case(
            "top_k", "f16", (f(4, 3, dtype=F16),), lambda ctx, x: x[0].top_k(ctx, 2), DTypeError
        ),
        error_case("top_k", "k-zero", (f(4, 3),), lambda ctx, x: x[0].top_k(ctx, 0), ShapeError),
        error_case(
            "top_k", "k-too-large", (f(4, 3),), lambda ctx, x: x[0].top_k(ctx, 5), ShapeError
        ),
        error_case("top_k", "k-float", (f(4, 3),), lambda ctx, x: x[0].top_k(ctx, 1.5), ShapeError),  # type: ignore[arg-type]
    ]
    return out


def _layout() -> list[Case]:
    return [
        error_case(
            "reshape", "count", (f(4, 3),), lambda ctx, x: x[0].reshape(ctx, 5, 2), ShapeError
        ),
        error_case(
            "reshape", "negative", (f(4, 3),), lambda ctx, x: x[0].reshape(ctx, -4, -3), ShapeError
        ),
        error_case(
            "view", "out-of-bounds", (f(4, 3),), lambda ctx, x: x[0].view(ctx, 4, 12), ShapeError
        ),
        error_case(
            "view", "negative-offset", (f(4, 3),), lambda ctx, x: x[0].view(ctx, -4, 2), ShapeError
        ),
        error_case(
            "permute",
            "not-a-permutation",
            (f(4, 3),),
            lambda ctx, x: x[0].permute(ctx, 0, 0, 2, 3),
            ShapeError,
        ),
        error_case(
            "permute", "dim-4", (f(4, 3),), lambda ctx, x: x[0].permute(ctx, 1, 0, 2, 4), ShapeError
        ),
        error_case(
            "slice",
            "high-past-end",
            (f(4, 3),),
            lambda ctx, x: x[0].slice(ctx, 0, 0, 5, 1),
            ShapeError,
        ),
        error_case(
            "slice", "step-zero", (f(4, 3),), lambda ctx, x: x[0].slice(ctx, 0, 0, 4, 0), ShapeError
        ),
        error_case(
            "slice", "dim-4", (f(4, 3),), lambda ctx, x: x[0].slice(ctx, 4, 0, 1, 1), ShapeError
        ),
        error_case("chunk", "dim-4", (f(4, 3),), lambda ctx, x: x[0].chunk(ctx, 4, 1), ShapeError),
        error_case(
            "chunk", "size-zero", (f(4, 3),), lambda ctx, x: x[0].chunk(ctx, 0, 0), ShapeError
        ),
        error_case(
            "chunk_sections",
            "sum",
            (f(4, 3),),
            lambda ctx, x: x[0].chunk_sections(ctx, 0, 1, 2),
            ShapeError,
        ),
        error_case(
            "contiguous", "count", (f(4, 3),), lambda ctx, x: x[0].contiguous(ctx, 5), ShapeError
        ),
        error_case(
            "copy", "count", (f(4, 3), f(5, 3)), lambda ctx, x: x[0].copy(ctx, x[1]), ShapeError
        ),
        error_case(
            "copy",
            "quantised-non-contiguous",
            (f(32, 2), q(32, 4)),
            lambda ctx, x: x[0].copy(ctx, x[1].slice(ctx, 1, 0, 4, 2)),
            ShapeError,
        ),
        error_case(
            "cast", "q8_0-dim0", (f(33, 2),), lambda ctx, x: x[0].cast(ctx, Q8_0), ShapeError
        ),
        error_case("pad", "i32", (i(4, 3),), lambda ctx, x: x[0].pad(ctx, 1, 0, 0, 0), DTypeError),
        error_case(
            "pad", "crop-all", (f(4, 3),), lambda ctx, x: x[0].pad(ctx, -4, 0, 0, 0), ShapeError
        ),
        error_case(
            "concat",
            "extents",
            (f(4, 3), f(4, 2)),
            lambda ctx, x: x[0].concat(ctx, x[1], 0),
            ShapeError,
        ),
        error_case(
            "concat",
            "dtypes",
            (f(4, 3), f(4, 3, dtype=F16)),
            lambda ctx, x: x[0].concat(ctx, x[1], 0),
            DTypeError,
        ),
        error_case(
            "concat",
            "dim-4",
            (f(4, 3), f(4, 3)),
            lambda ctx, x: x[0].concat(ctx, x[1], 4),
            ShapeError,
        ),
        error_case(
            "stack",
            "shapes",
            (f(4, 3), f(4, 2)),
            lambda ctx, x: x[0].stack(ctx, 2, x[1]),
            ShapeError,
        ),
        error_case(
            "repeat", "count-zero", (f(4, 3),), lambda ctx, x: x[0].repeat(ctx, 1, 0), ShapeError
        ),
        error_case(
            "repeat", "dim-4", (f(4, 3),), lambda ctx, x: x[0].repeat(ctx, 4, 2), ShapeError
        ),
        error_case(
            "repeat_4d",
            "not-multiple",
            (f(4, 3),),
            lambda ctx, x: x[0].repeat_4d(ctx, 6, 3, 1, 1),
            ShapeError,
        ),
        error_case(
            "rows", "ids-f32", (f(4, 3), f(2)), lambda ctx, x: x[0].rows(ctx, x[1]), DTypeError
        ),
        error_case(
            "rows",
            "ids-4d",
            (f(4, 3), i(1, 1, 1, 2)),
            lambda ctx, x: x[0].rows(ctx, x[1]),
            ShapeError,
        ),
        error_case(
            "set_rows",
            "src-width",
            (f(4, 5), f(3, 2), i(2, hi=5)),
            lambda ctx, x: x[0].set_rows(ctx, x[1], x[2]),
            ShapeError,
        ),
        error_case(
            "set_rows",
            "idxs-count",
            (f(4, 5), f(4, 2), i(3, hi=5)),
            lambda ctx, x: x[0].set_rows(ctx, x[1], x[2]),
            ShapeError,
        ),
        error_case(
            "set_rows",
            "idxs-f32",
            (f(4, 5), f(4, 2), f(2)),
            lambda ctx, x: x[0].set_rows(ctx, x[1], x[2]),
            DTypeError,
        ),
        error_case(
            "set_rows",
            "gapped-destination",
            (f(4, 5, layout="permuted"), f(4, 2), i(2, hi=4)),
            lambda ctx, x: x[0].set_rows(ctx, x[1], x[2]),
            ShapeError,
        ),
        error_case(
            "set_inplace",
            "non-contiguous-destination",
            (f(4, 3, layout="permuted"), f(2)),
            lambda ctx, x: x[0].set_inplace(ctx, x[1], 16, 48, 48, 0),
            ShapeError,
        ),
        error_case(
            "set_inplace",
            "out-of-bounds",
            (f(4, 3), f(4, 2)),
            lambda ctx, x: x[0].set_inplace(ctx, x[1], 16, 48, 48, 32),
            ShapeError,
        ),
        error_case(
            "set_inplace",
            "dtypes",
            (f(4, 3), i(2)),
            lambda ctx, x: x[0].set_inplace(ctx, x[1], 16, 48, 48, 0),
            DTypeError,
        ),
    ]


def _nn() -> list[Case]:
    return [
        error_case(
            "avg_pool_2d",
            "window",
            (f(2, 2, 3),),
            lambda ctx, x: x[0].avg_pool_2d(ctx, 3, 1, 0),
            ShapeError,
        ),
        error_case(
            "avg_pool_2d",
            "negative-pad",
            (f(4, 4, 3),),
            lambda ctx, x: x[0].avg_pool_2d(ctx, 2, 1, -1),
            ShapeError,
        ),
        error_case(
            "avg_pool_2d",
            "i32",
            (i(4, 4, 3),),
            lambda ctx, x: x[0].avg_pool_2d(ctx, 2, 1, 0),
            DTypeError,
        ),
        error_case(
            "im2col",
            "channels",
            (f(2, 2, 3), f(5, 5, 2)),
            lambda ctx, x: x[0].im2col(ctx, x[1], 1, 1, 0, 0, 1, 1),
            ShapeError,
        ),
        error_case(
            "im2col",
            "stride-zero",
            (f(2, 2, 3), f(5, 5, 3)),
            lambda ctx, x: x[0].im2col(ctx, x[1], 0, 1, 0, 0, 1, 1),
            ShapeError,
        ),
        error_case(
            "im2col",
            "negative-pad",
            (f(2, 2, 3), f(5, 5, 3)),
            lambda ctx, x: x[0].im2col(ctx, x[1], 1, 1, -1, 0, 1, 1),
            ShapeError,
        ),
        error_case(
            "conv_2d",
            "channels",
            (f(2, 2, 3, 4), f(5, 5, 2)),
            lambda ctx, x: x[0].conv_2d(ctx, x[1], 1, 1, 0, 0, 1, 1),
            ShapeError,
        ),
        error_case(
            "conv_2d",
            "empty-output",
            (f(6, 6, 3, 4), f(5, 5, 3)),
            lambda ctx, x: x[0].conv_2d(ctx, x[1], 1, 1, 0, 0, 1, 1),
            ShapeError,
        ),
        error_case(
            "conv_3d",
            "negative-pad",
            (f(2, 2, 2, 4), f(4, 4, 4, 2)),
            lambda ctx, x: x[0].conv_3d(ctx, x[1], 1, 1, 1, 1, -1, 0, 0, 1, 1, 1),
            ShapeError,
        ),
        error_case(
            "conv_3d",
            "dilation-zero",
            (f(2, 2, 2, 2), f(4, 4, 4, 2)),
            lambda ctx, x: x[0].conv_3d(ctx, x[1], 1, 1, 1, 1, 0, 0, 0, 0, 1, 1),
            ShapeError,
        ),
        error_case(
            "ssm_conv",
            "channels",
            (f(6, 3, 1), f(4, 2)),
            lambda ctx, x: x[0].ssm_conv(ctx, x[1]),
            ShapeError,
        ),
        error_case(
            "ssm_conv",
            "kernel-longer",
            (f(3, 2, 1), f(4, 2)),
            lambda ctx, x: x[0].ssm_conv(ctx, x[1]),
            ShapeError,
        ),
        error_case(
            "interpolate",
            "dims-count",
            (f(4, 3),),
            lambda ctx, x: x[0].interpolate(ctx, (8, 6, 1), 0),
            ShapeError,
        ),
        error_case(
            "rope",
            "positions-f32",
            (f(4, 2, 3), f(3)),
            lambda ctx, x: x[0].rope(ctx, x[1], 4, 10000.0, 1.0),
            DTypeError,
        ),
        error_case(
            "rope",
            "positions-count",
            (f(4, 2, 3), i(2, hi=8)),
            lambda ctx, x: x[0].rope(ctx, x[1], 4, 10000.0, 1.0),
            ShapeError,
        ),
        error_case(
            "rope",
            "dim-too-large",
            (f(4, 2, 3), i(3, hi=8)),
            lambda ctx, x: x[0].rope(ctx, x[1], 6, 10000.0, 1.0),
            ShapeError,
        ),
        error_case(
            "rope",
            "i32",
            (i(4, 2, 3), i(3, hi=8)),
            lambda ctx, x: x[0].rope(ctx, x[1], 4, 10000.0, 1.0),
            DTypeError,
        ),
        error_case(
            "scaled_dot_product_attention",
            "d_k",
            (f(8, 2, 2), f(4, 3, 2), f(8, 3, 2)),
            lambda ctx, x: x[0].scaled_dot_product_attention(
                ctx, x[1], x[2], None, None, None, 0.5, False
            ),
            ShapeError,
        ),
        error_case(
            "scaled_dot_product_attention",
            "kv-length",
            (f(8, 2, 2), f(8, 3, 2), f(8, 4, 2)),
            lambda ctx, x: x[0].scaled_dot_product_attention(
                ctx, x[1], x[2], None, None, None, 0.5, False
            ),
            ShapeError,
        ),
        error_case(
            "scaled_dot_product_attention",
            "query-f16",
            (f(8, 2, 2, dtype=F16), f(8, 3, 2), f(8, 3, 2)),
            lambda ctx, x: x[0].scaled_dot_product_attention(
                ctx, x[1], x[2], None, None, None, 0.5, False
            ),
            DTypeError,
        ),
        error_case(
            "scaled_dot_product_attention",
            "mask-shape",
            (f(8, 2, 2), f(8, 3, 2), f(8, 3, 2), f(2, 2)),
            lambda ctx, x: x[0].scaled_dot_product_attention(
                ctx, x[1], x[2], x[3], None, None, 0.5, False
            ),
            ShapeError,
        ),
    ]


def _ssm_scan(what: str, b_ne: tuple[int, ...], ids: Arg, error: type[MlplugError]) -> Case:
    """An ssm_scan on a one-state, one-head pool of two tokens with a broken B or ids."""
    args = (
        f(1, 1, 1, 1),
        f(1, 1, 2, 1),
        f(1, 2, 1),
        f(1, 1),
        Arg(b_ne),
        f(1, 1, 2, 1),
        ids,
    )
    return error_case(
        "ssm_scan",
        what,
        args,
        lambda ctx, x: x[0].ssm_scan(ctx, x[1], x[2], x[3], x[4], x[5], x[6]),
        error,
    )


def ids(*values: int, ne: tuple[int, ...] | None = None) -> Arg:
    """An I32 input holding exactly ``values`` (flat, ggml order), of shape ``ne``."""
    return Arg(ne or (len(values),), dtype=I32, gen="fixed", values=tuple(float(v) for v in values))


def _indices() -> list[Case]:
    """Index values outside their table: checked when the graph runs, on every backend."""
    out = []
    for what, bad in (("id-past-end", 5), ("negative-id", -1)):
        out += [
            error_case(
                "rows",
                what,
                (f(4, 5), ids(0, bad)),
                lambda ctx, x: x[0].rows(ctx, x[1]),
                OutOfRangeError,
            ),
            error_case(
                "set_rows",
                what,
                (f(4, 3), f(4, 1), ids(min(bad, 3))),
                lambda ctx, x: x[0].set_rows(ctx, x[1], x[2]),
                OutOfRangeError,
            ),
            error_case(
                "mulmat_id",
                what,
                (f(32, 4, 3), f(32, 1, 2), ids(0, min(bad, 3), ne=(1, 2))),
                lambda ctx, x: x[0].mulmat_id(ctx, x[1], x[2]),
                OutOfRangeError,
            ),
            error_case(
                "add_id",
                what,
                (f(4, 2, 3), f(4, 2), ids(0, 1, 0, 1, 0, min(bad, 2), ne=(2, 3))),
                lambda ctx, x: x[0].add_id(ctx, x[1], x[2]),
                OutOfRangeError,
            ),
        ]
    out += [
        _ssm_scan("id-past-end", (1, 1, 2, 1), ids(1), OutOfRangeError),
        _ssm_scan("negative-id", (1, 1, 2, 1), ids(-1), OutOfRangeError),
    ]
    return out


def _setters() -> list[Case]:
    """Writing data of the wrong size into a tensor, or into a graph node."""
    return [
        error_case(
            "from_floats",
            "count",
            (),
            lambda ctx, x: _written(ctx.empty(F32, 3), lambda t: t.from_floats([1.0, 2.0])),
            ShapeError,
        ),
        error_case(
            "from_ints",
            "count",
            (),
            lambda ctx, x: _written(ctx.empty(I32, 2), lambda t: t.from_ints([1, 2, 3])),
            ShapeError,
        ),
        error_case(
            "from_bytes",
            "size",
            (),
            lambda ctx, x: _written(ctx.empty(F16, 2), lambda t: t.from_bytes(bytes(6))),
            ShapeError,
        ),
        error_case(
            "from_floats",
            "graph-node",
            (f(3),),
            lambda ctx, x: _written(x[0].neg(ctx), lambda t: t.from_floats([1.0, 2.0, 3.0])),
            GraphError,
        ),
    ]


def _written(t: Tensor, write: Callable[[Tensor], None]) -> Tensor:
    write(t)
    return t


def _constructors() -> list[Case]:
    return [
        error_case(
            "Context.arange",
            "step-zero",
            (),
            lambda ctx, x: ctx.arange(0, 4, 0, F32),
            ShapeError,
        ),
        error_case(
            "Context.arange",
            "wrong-direction",
            (),
            lambda ctx, x: ctx.arange(4, 0, 1, F32),
            ShapeError,
        ),
        error_case(
            "Context.from_floats",
            "count",
            (),
            lambda ctx, x: ctx.from_floats(np.zeros(5, np.float32), 2, 3),
            ShapeError,
        ),
        error_case(
            "Context.from_ints",
            "count",
            (),
            lambda ctx, x: ctx.from_ints(np.zeros(5, np.int32), 2, 3),
            ShapeError,
        ),
        error_case(
            "Context.zeros",
            "negative",
            (),
            lambda ctx, x: ctx.zeros(F32, -2, 3),
            ShapeError,
        ),
        error_case(
            "Context.empty",
            "five-dims",
            (),
            lambda ctx, x: ctx.empty(F32, 1, 1, 1, 1, 2),
            ShapeError,
        ),
        error_case(
            "Context.from_bytes",
            "size",
            (),
            lambda ctx, x: ctx.from_bytes(F32, bytes(10), 2, 2),
            ShapeError,
        ),
        error_case(
            "Context.from_bytes",
            "q8_0-dim0",
            (),
            lambda ctx, x: ctx.from_bytes(Q8_0, bytes(34), 16, 2),
            ShapeError,
        ),
    ]


def cases() -> list[Case]:
    """Return the error cases of every op family."""
    return [
        *_elementwise(),
        *_linalg(),
        *_reduce(),
        *_layout(),
        *_nn(),
        _ssm_scan("b-c-shapes", (1, 1, 1, 1), i(1, hi=1), ShapeError),
        _ssm_scan("ids-f32", (1, 1, 2, 1), f(1), DTypeError),
        _ssm_scan("ids-count", (1, 1, 2, 1), i(2, hi=1), ShapeError),
        *_indices(),
        *_setters(),
        *_constructors(),
    ]
