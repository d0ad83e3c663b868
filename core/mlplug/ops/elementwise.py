"""Element-wise ops: binary arithmetic, unary functions, gated (GLU) forms, scale, clamp, fill."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._tensorbase import TensorBase, as_tensor
from ..dtypes import DType
from ..errors import DTypeError
from ._build import (
    F32,
    F32_ONLY,
    FLOATS,
    contiguous,
    inplace,
    node,
    packed_dim0,
    require_dtype,
    require_repeatable,
    require_same_shape,
    rows_contiguous,
)
from .records import ClampParams, FillParams, GluParams, ScaleParams, SwigluOaiParams

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

#: Unary ops whose result overwrites (aliases) the input when computed (ggml's in-place builders;
#: docs/tensors.md, section 'New storage, in-place results and views').
INPLACE_UNARY = frozenset({"tanh", "sigmoid", "gelu", "gelu_erf", "gelu_quick", "silu", "relu"})
_BINARY_DTYPES = frozenset({(DType.F32, DType.F32), (DType.F16, DType.F16), (DType.F16, DType.F32)})


def _binary(op: str, ctx: Context, t: Tensor, t2: Tensor) -> Tensor:
    ok = (t.dtype, t2.dtype) in _BINARY_DTYPES or (
        op == "add" and t.dtype.is_quantized and t2.dtype == F32
    )
    if not ok:
        msg = (
            f"{op}: no kernel for dtypes ({t.dtype.name}, {t2.dtype.name}); accepted: "
            "(F32, F32), (F16, F16), (F16, F32)" + (", (quantised, F32)" if op == "add" else "")
        )
        raise DTypeError(msg, op=op, dtypes=(t.dtype, t2.dtype))
    require_repeatable(op, t, t2)
    t, t2 = packed_dim0(ctx, t), packed_dim0(ctx, t2)
    return node(ctx, op, (t, t2), t.dtype, t.ne)


def _unary(op: str, ctx: Context, t: Tensor) -> Tensor:
    require_dtype(op, t, FLOATS)
    t = rows_contiguous(ctx, t)
    if op in INPLACE_UNARY:
        return inplace(ctx, op, (t,))
    return node(ctx, op, (t,), t.dtype, t.ne)


def _glu(kind: str, ctx: Context, t: Tensor, up: tuple[Tensor, ...]) -> Tensor:
    if not up:
        return _unary(kind, ctx, t)
    u = up[0]
    op = f"{kind} (gated)"
    require_dtype(op, t, FLOATS, "gate")
    if u.dtype != t.dtype:
        msg = f"{op}: gate is {t.dtype.name} but up is {u.dtype.name}; they must match"
        raise DTypeError(msg, op=op, dtypes=(t.dtype, u.dtype))
    require_same_shape(op, t, u)
    t, u = rows_contiguous(ctx, t), rows_contiguous(ctx, u)
    return node(ctx, "glu", (t, u), t.dtype, t.ne, GluParams(kind))


class ElementwiseOps(TensorBase):
    """Element-wise Tensor methods (ggml's binary, unary and GLU ops)."""

    __slots__ = ()

    # -- binary: the second operand is tiled onto the first (ggml's repeat rule) ------------
    def add(self, ctx: Context, t2: Tensor) -> Tensor:
        """Return ``self + t2``, with ``t2`` tiled onto ``self``'s shape.

        >>> t = ctx.from_floats([1, 2, 3, 4, 5, 6], 6)
        >>> y = t.add(ctx, ctx.from_floats([10, 20], 2))
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [11.0, 22.0, 13.0, 24.0, 15.0, 26.0]
        >>> ctx.from_floats([10, 20], 2).add(ctx, t)
        Traceback (most recent call last):
            ...
        mlplug.errors.ShapeError: add: shape [6] cannot be tiled onto shape [2] ...
        """
        return _binary("add", ctx, as_tensor(self), t2)

    def sub(self, ctx: Context, t2: Tensor) -> Tensor:
        """Return ``self - t2`` (``t2`` tiled).

        >>> t = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2)
        >>> y = t.sub(ctx, ctx.from_floats([1, 2, 3], 3))
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [0.0, 0.0, 0.0, 3.0, 3.0, 3.0]
        """
        return _binary("sub", ctx, as_tensor(self), t2)

    def mul(self, ctx: Context, t2: Tensor) -> Tensor:
        """Return ``self * t2`` (``t2`` tiled).

        >>> t = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2)
        >>> y = t.mul(ctx, ctx.from_floats([10, 100], 1, 2))
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [10.0, 20.0, 30.0, 400.0, 500.0, 600.0]
        """
        return _binary("mul", ctx, as_tensor(self), t2)

    def div(self, ctx: Context, t2: Tensor) -> Tensor:
        """Return ``self / t2`` (``t2`` tiled; IEEE division).

        >>> t = ctx.from_floats([1, -1, 0, 3], 4)
        >>> y = t.div(ctx, ctx.from_floats([0, 0, 0, 2], 4))
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [inf, -inf, nan, 1.5]
        """
        return _binary("div", ctx, as_tensor(self), t2)

    # -- scalar -------------------------------------------------------------------------------
    def scale(self, ctx: Context, s: float) -> Tensor:
        """Return ``self * f32(s)``.

        >>> y = ctx.from_floats([1, 2, 3], 3).scale(ctx, 0.5)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [0.5, 1.0, 1.5]
        """
        require_dtype("scale", self, F32_ONLY)
        t = contiguous(ctx, as_tensor(self))
        return node(ctx, "scale", (t,), t.dtype, t.ne, ScaleParams(float(s)))

    def clamp(self, ctx: Context, min: float, max: float) -> Tensor:
        """Clamp to ``[min, max]`` in place (NaN becomes ``max``); the result aliases self.

        >>> t = ctx.from_floats([-2, 0.5, 3, float("nan")], 4)
        >>> y = t.clamp(ctx, -1, 1)
        >>> ctx.compute(y)
        >>> y.floats().tolist(), y.root is t
        ([-1.0, 0.5, 1.0, 1.0], True)
        """
        require_dtype("clamp", self, FLOATS)
        t = packed_dim0(ctx, as_tensor(self))
        return inplace(ctx, "clamp", (t,), ClampParams(float(min), float(max)))

    def fill(self, ctx: Context, value: float) -> Tensor:
        """Set every element to ``value`` in place; the result aliases self.

        >>> y = ctx.zeros(DType.F32, 3, 2).fill(ctx, 1.0)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((3, 2), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
        """
        require_dtype("fill", self, F32_ONLY)
        t = contiguous(ctx, as_tensor(self))
        return inplace(ctx, "fill", (t,), FillParams(float(value)))

    # -- unary --------------------------------------------------------------------------------
    def sin(self, ctx: Context) -> Tensor:
        """Return ``sin(self)``.

        >>> y = ctx.from_floats([0, np.pi / 6, np.pi / 2], 3).sin(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [0.0, 0.5, 1.0]
        """
        return _unary("sin", ctx, as_tensor(self))

    def cos(self, ctx: Context) -> Tensor:
        """Return ``cos(self)``.

        >>> y = ctx.from_floats([0, np.pi / 3, np.pi], 3).cos(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [1.0, 0.5, -1.0]
        """
        return _unary("cos", ctx, as_tensor(self))

    def tanh(self, ctx: Context) -> Tensor:
        """Return ``tanh(self)``, computed in place.

        >>> t = ctx.from_floats([-1, 0, 1], 3)
        >>> y = t.tanh(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()], y.root is t
        ([-0.7616, 0.0, 0.7616], True)
        """
        return _unary("tanh", ctx, as_tensor(self))

    def sqr(self, ctx: Context) -> Tensor:
        """Return ``self * self``.

        >>> y = ctx.from_floats([-3, 0.5, 2], 3).sqr(ctx)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [9.0, 0.25, 4.0]
        """
        return _unary("sqr", ctx, as_tensor(self))

    def sqrt(self, ctx: Context) -> Tensor:
        """Return ``sqrt(self)`` (NaN for negative values).

        >>> y = ctx.from_floats([4, 2, -1], 3).sqrt(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [2.0, 1.4142, nan]
        """
        return _unary("sqrt", ctx, as_tensor(self))

    def exp(self, ctx: Context) -> Tensor:
        """Return ``exp(self)``.

        >>> y = ctx.from_floats([0, 1, -1], 3).exp(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [1.0, 2.7183, 0.3679]
        """
        return _unary("exp", ctx, as_tensor(self))

    def neg(self, ctx: Context) -> Tensor:
        """Return ``-self``.

        >>> y = ctx.from_floats([1, -2, 0], 3).neg(ctx)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [-1.0, 2.0, -0.0]
        """
        return _unary("neg", ctx, as_tensor(self))

    def softplus(self, ctx: Context) -> Tensor:
        """Return ``log(1 + exp(x))`` (``x`` itself above 20).

        >>> y = ctx.from_floats([-20, 0, 1, 25], 4).softplus(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [0.0, 0.6931, 1.3133, 25.0]
        """
        return _unary("softplus", ctx, as_tensor(self))

    def sigmoid(self, ctx: Context) -> Tensor:
        """Return ``1 / (1 + exp(-x))``, computed in place.

        >>> t = ctx.from_floats([0, 2, -2], 3)
        >>> y = t.sigmoid(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()], y.root is t
        ([0.5, 0.8808, 0.1192], True)
        """
        return _unary("sigmoid", ctx, as_tensor(self))

    def sigmoid_out(self, ctx: Context) -> Tensor:
        """Return ``1 / (1 + exp(-x))`` in new storage (the non-aliasing sigmoid).

        >>> t = ctx.from_floats([0, 2, -2], 3)
        >>> y = t.sigmoid_out(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()], y.root is t
        ([0.5, 0.8808, 0.1192], False)
        """
        require_dtype("sigmoid_out", self, FLOATS)
        t = rows_contiguous(ctx, as_tensor(self))
        return node(ctx, "sigmoid", (t,), t.dtype, t.ne)

    def gelu_erf(self, ctx: Context) -> Tensor:
        """Return the exact erf GELU ``0.5 x (1 + erf(x / sqrt 2))``, in place.

        >>> y = ctx.from_floats([1, -0.5, 2], 3).gelu_erf(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [0.8413, -0.1543, 1.9545]
        """
        return _unary("gelu_erf", ctx, as_tensor(self))

    # -- activations with an optional gate partner ---------------------------------------------
    def gelu(self, ctx: Context, *up: Tensor) -> Tensor:
        """Return tanh-GELU of self (in place), or ``gelu(self) * up[0]`` (new) when gated.

        >>> y = ctx.from_floats([1, -0.5, 2], 3).gelu(ctx)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [0.84130859375, -0.154296875, 1.955078125]
        >>> gate, up = ctx.from_floats([1, -1], 2), ctx.from_floats([2, 3], 2)
        >>> y = gate.gelu(ctx, up)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [1.6826, -0.4764]
        """
        return _glu("gelu", ctx, as_tensor(self), up)

    def quick_gelu(self, ctx: Context, *up: Tensor) -> Tensor:
        """Return ``x * sigmoid(1.702 x)`` (in place), or times ``up[0]`` when gated.

        >>> y = ctx.from_floats([1, 2], 2).quick_gelu(ctx)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [0.845703125, 1.935546875]
        """
        return _glu("gelu_quick", ctx, as_tensor(self), up)

    def silu(self, ctx: Context, *up: Tensor) -> Tensor:
        """Return ``x * sigmoid(x)`` (in place), or ``silu(self) * up[0]`` (SwiGLU) when gated.

        >>> y = ctx.from_floats([1, -1], 2).silu(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [0.7311, -0.2689]
        >>> gate, up = ctx.from_floats([1, -1], 2), ctx.from_floats([2, 3], 2)
        >>> y = gate.silu(ctx, up)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [1.4621, -0.8068]
        """
        return _glu("silu", ctx, as_tensor(self), up)

    def relu(self, ctx: Context, *up: Tensor) -> Tensor:
        """Return ``max(x, 0)`` (in place), or ``relu(self) * up[0]`` when gated.

        >>> y = ctx.from_floats([-1, 0, 2], 3).relu(ctx)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [0.0, 0.0, 2.0]
        >>> gate, up = ctx.from_floats([1, -1], 2), ctx.from_floats([2, 3], 2)
        >>> y = gate.relu(ctx, up)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [2.0, 0.0]
        """
        return _glu("relu", ctx, as_tensor(self), up)

    def silu_alpha_limit(self, ctx: Context, up: Tensor, alpha: float, limit: float) -> Tensor:
        """Return gpt-oss's clamped SwiGLU: ``x' sigmoid(alpha x') (clamp(up) + 1)``.

        ``x' = min(self, limit)``; ``up`` is clamped to ``[-limit, limit]``.

        >>> gate, up = ctx.from_floats([10, -3], 2), ctx.from_floats([8, -0.5], 2)
        >>> y = gate.silu_alpha_limit(ctx, up, 1.702, 7)
        >>> ctx.compute(y)
        >>> [round(v, 6) for v in y.floats().tolist()]
        [55.999626, -0.009036]
        """
        op = "silu_alpha_limit"
        require_dtype(op, self, F32_ONLY, "gate")
        require_dtype(op, up, F32_ONLY, "up")
        require_same_shape(op, self, up)
        t, u = rows_contiguous(ctx, as_tensor(self)), rows_contiguous(ctx, up)
        return node(
            ctx, "swiglu_oai", (t, u), t.dtype, t.ne, SwigluOaiParams(float(alpha), float(limit))
        )
