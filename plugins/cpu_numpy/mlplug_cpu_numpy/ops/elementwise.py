"""Element-wise kernels: arithmetic, unary functions, GLUs, scale, clamp, fill."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mlplug.plugin_api import (
    ClampParams,
    DType,
    FillParams,
    GluParams,
    ScaleParams,
    SwigluOaiParams,
    every_half,
    f16_round,
)

from ._registry import implements

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import NumpyContext

F32 = np.float32
_SQRT_2_OVER_PI = F32(0.7978845608028654)
_erf = np.vectorize(math.erf, otypes=[np.float64])


def tile_to(b: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Tile ``b`` to ``shape`` (np.tile); plain broadcasting where extents are 1 or equal."""
    reps = tuple(s // m for s, m in zip(shape, b.shape))
    if all(r == 1 or m == 1 for r, m in zip(reps, b.shape)):
        return b
    return np.tile(b, reps)


#: Kernel -> preparer binding its F32 arrays once per plan (``NumpyContext.preparers``).
PREPARERS: dict[
    Callable[..., object], Callable[[NumpyContext, Tensor], Callable[[], object] | None]
] = {}


def _binary(ufunc: np.ufunc) -> Callable[[NumpyContext, Tensor], None]:
    def kernel(ctx: NumpyContext, t: Tensor) -> None:
        a, b = t.src
        if a.dtype == DType.F32 and b.dtype == DType.F32:
            av = ctx.arr(a)
            bv = ctx.arr(b)
            ufunc(av, bv if av.shape == bv.shape else tile_to(bv, av.shape), out=ctx.arr(t))
            return
        av = ctx.values(a)
        ctx.put(t, ufunc(av, tile_to(ctx.values(b), av.shape)))

    def prepare(ctx: NumpyContext, t: Tensor) -> Callable[[], object] | None:
        # F32 with b broadcastable as is: bind the three views once (np.tile would copy b).
        a, b = t.src
        if a.dtype != DType.F32 or b.dtype != DType.F32:
            return None
        av, bv = ctx.arr(a), ctx.arr(b)
        if any(m not in (1, n) for n, m in zip(av.shape, bv.shape)):
            return None
        return functools.partial(ufunc, av, bv, out=ctx.arr(t))

    PREPARERS[kernel] = prepare
    return kernel


implements("add")(_binary(np.add))
implements("sub")(_binary(np.subtract))
implements("mul")(_binary(np.multiply))
implements("div")(_binary(np.divide))


def gelu_f32(x: np.ndarray) -> np.ndarray:
    """The tanh-form GELU evaluated in float32."""
    x = x.astype(F32, copy=False)
    inner = _SQRT_2_OVER_PI * x * (F32(1) + F32(0.044715) * x * x)
    y: np.ndarray = F32(0.5) * x * (F32(1) + np.tanh(inner))
    return y


@functools.cache
def _half_table(fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` at every half value, rounded to a half, indexed by the half's bits: ggml's CPU
    tables for its f16-table activations (65,536 float32 values, made once per function)."""
    with np.errstate(all="ignore"):
        return f16_round(fn(every_half()))


def _through_table(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """``f16_round(fn(f16_round(x)))`` by one lookup per value: ``x``'s nearest half (its
    bits from numpy's cast, ties to even) indexes :func:`_half_table`."""
    with np.errstate(over="ignore"):
        bits = np.asarray(x, F32).astype(np.float16).view(np.uint16)
    y: np.ndarray = np.take(_half_table(fn), bits)
    return y


def gelu_ggml(x: np.ndarray, dtype: DType) -> np.ndarray:
    """GELU as ggml's CPU computes it: through an f16 table for F32 inputs (±10 cut)."""
    if dtype == DType.F16:
        return gelu_f32(x)
    y = _through_table(gelu_f32, x)
    np.copyto(y, x, where=x >= 10)
    y[x <= -10] = 0
    return y


def quick_f32(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(1.702 x)`` in float32."""
    x = x.astype(F32, copy=False)
    with np.errstate(over="ignore"):
        y: np.ndarray = x * (F32(1) / (F32(1) + np.exp(F32(-1.702) * x)))
    return y


def quick_ggml(x: np.ndarray, dtype: DType) -> np.ndarray:
    """QuickGELU as ggml's CPU computes it (f16 table for F32 inputs)."""
    if dtype == DType.F16:
        return quick_f32(x)
    return _through_table(quick_f32, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in float32."""
    with np.errstate(over="ignore"):
        y: np.ndarray = F32(1) / (F32(1) + np.exp(-x))
    return y


def silu(x: np.ndarray) -> np.ndarray:
    """``x / (1 + exp(-x))`` in float32."""
    with np.errstate(over="ignore"):
        y: np.ndarray = x / (F32(1) + np.exp(-x))
    return y


def relu(x: np.ndarray) -> np.ndarray:
    """``x if x > 0 else 0`` (NaN and -0 give 0)."""
    return np.where(x > 0, x, F32(0)).astype(F32)


def _softplus(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(x > 20, x, np.log(F32(1) + np.exp(x))).astype(F32)


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    y: np.ndarray = (0.5 * x * (1.0 + _erf(x.astype(np.float64) * 0.70710678))).astype(F32)
    return y


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "sqr": np.square,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "neg": np.negative,
    "softplus": _softplus,
    "sigmoid": sigmoid,
    "relu": relu,
    "silu": silu,
    "gelu_erf": _gelu_erf,
}


@implements(*_UNARY)
def unary(ctx: NumpyContext, t: Tensor) -> None:
    """Apply a unary function in float32 and store in the node's dtype."""
    x = ctx.values(t.src[0])
    with np.errstate(all="ignore"):
        ctx.put(t, _UNARY[t.op](x))


@implements("gelu")
def gelu(ctx: NumpyContext, t: Tensor) -> None:
    """Tanh GELU (ggml's f16-table numerics)."""
    a = t.src[0]
    ctx.put(t, gelu_ggml(ctx.values(a), a.dtype))


@implements("gelu_quick")
def gelu_quick(ctx: NumpyContext, t: Tensor) -> None:
    """QuickGELU (ggml's f16-table numerics)."""
    a = t.src[0]
    ctx.put(t, quick_ggml(ctx.values(a), a.dtype))


_ACT: dict[str, Callable[[np.ndarray, DType], np.ndarray]] = {
    "gelu": gelu_ggml,
    "gelu_quick": quick_ggml,
    "silu": lambda x, _d: silu(x),
    "relu": lambda x, _d: relu(x),
}


@implements("glu")
def glu(ctx: NumpyContext, t: Tensor) -> None:
    """Gated activation: ``act(gate) * up``."""
    gate, up = t.src
    ctx.put(t, _ACT[GluParams.of(t).kind](ctx.values(gate), gate.dtype) * ctx.values(up))


@implements("swiglu_oai")
def swiglu_oai(ctx: NumpyContext, t: Tensor) -> None:
    """gpt-oss clamped SwiGLU."""
    p = SwigluOaiParams.of(t)
    alpha, limit = F32(p.alpha), F32(p.limit)
    x = np.minimum(ctx.values(t.src[0]), limit)
    y = np.clip(ctx.values(t.src[1]), -limit, limit)
    with np.errstate(over="ignore"):
        ctx.put(t, x / (F32(1) + np.exp(-alpha * x)) * (y + F32(1)))


@implements("scale")
def scale(ctx: NumpyContext, t: Tensor) -> None:
    """Multiply by ``f32(s)``."""
    np.multiply(ctx.arr(t.src[0]), F32(ScaleParams.of(t).s), out=ctx.arr(t))


def _prepare_scale(ctx: NumpyContext, t: Tensor) -> Callable[[], object]:
    s = F32(ScaleParams.of(t).s)
    return functools.partial(np.multiply, ctx.arr(t.src[0]), s, out=ctx.arr(t))


PREPARERS[scale] = _prepare_scale


@implements("clamp")
def clamp(ctx: NumpyContext, t: Tensor) -> None:
    """``max(min(x, hi), lo)`` with NaN -> hi."""
    p = ClampParams.of(t)
    lo, hi = F32(p.lo), F32(p.hi)
    x = ctx.values(t.src[0])
    ctx.put(t, np.maximum(np.where(x < hi, x, hi), lo))


@implements("fill")
def fill(ctx: NumpyContext, t: Tensor) -> None:
    """Set every element."""
    ctx.arr(t)[...] = F32(FillParams.of(t).value)
