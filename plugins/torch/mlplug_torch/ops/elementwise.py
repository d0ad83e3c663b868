"""Element-wise kernels: arithmetic, unary functions, GLUs, scale, clamp, fill.

Everything is computed in float32 and stored in the node's dtype (F16 rounded to nearest
even), as ggml's CPU does. GELU and QuickGELU emulate ggml's f16 lookup tables for F32
inputs (input rounded to f16, result rounded to f16), on every device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from mlplug.plugin_api import (
    ClampParams,
    DType,
    FillParams,
    GluParams,
    ScaleParams,
    Step,
    SwigluOaiParams,
    every_half,
)

from ._registry import implements, prepares

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import TorchContext

_SQRT_2_OVER_PI = 0.7978845608028654
_INV_SQRT_2 = 0.70710678


def f32(v: float) -> float:
    """Round a Python float to float32 (the value ggml passes for a double parameter)."""
    return float(np.float32(v))


def tile_to(b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Tile ``b`` to ``shape`` (np.tile); plain broadcasting where extents are 1 or equal."""
    if b.shape == shape:
        return b
    reps = tuple(s // m for s, m in zip(shape, b.shape, strict=True))
    if all(r == 1 or m == 1 for r, m in zip(reps, b.shape, strict=True)):
        return b
    return b.repeat(reps)


def _binary(fn: Callable[..., torch.Tensor]) -> Callable[[TorchContext, Tensor], None]:
    def kernel(ctx: TorchContext, t: Tensor) -> None:
        a, b = t.src
        av = ctx.values(a)
        ctx.put(t, fn(av, tile_to(ctx.values(b), av.shape)))

    @prepares(kernel)
    def prepare(ctx: TorchContext, t: Tensor) -> Step | None:
        # F32 with b broadcastable as is: bind the three views once, write the result in place
        a, b = t.src
        if not fresh_f32(t, a, b):
            return None
        av, bv = ctx.arr(a), ctx.arr(b)
        if any(m not in (1, n) for n, m in zip(av.shape, bv.shape, strict=True)):
            return None
        return functools.partial(fn, av, bv, out=ctx.arr(t))

    return kernel


def fresh_f32(t: Tensor, *srcs: Tensor) -> bool:
    """Whether ``t`` and ``srcs`` are F32 and ``t`` owns its storage (no source aliases it): a
    preparer may then write ``t`` with ``out=``."""
    return t.view_src is None and t.dtype == DType.F32 and all(s.dtype == DType.F32 for s in srcs)


implements("add")(_binary(torch.add))
implements("sub")(_binary(torch.sub))
implements("mul")(_binary(torch.mul))
implements("div")(_binary(torch.div))


def f16_round(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values to float16 precision (nearest even), keeping float32."""
    return x.half().float()


def gelu_f32(x: torch.Tensor) -> torch.Tensor:
    """The tanh-form GELU evaluated in float32."""
    inner = _SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)
    return 0.5 * x * (1.0 + torch.tanh(inner))


@functools.cache
def _half_table(fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> torch.Tensor:
    """``fn`` at every half value, rounded to a half, indexed by the half's bits: ggml's CPU
    tables for its f16-table activations (65,536 float32 values per function and device)."""
    return f16_round(fn(torch.tensor(every_half(), device=device)))


def _through_table(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``f16_round(fn(f16_round(x)))`` by one lookup per value: ``x``'s nearest half indexes
    :func:`_half_table` through its bits read as int16 (a negative index counts from the end,
    which is where the halves with the sign bit set are)."""
    return _half_table(fn, x.device)[x.half().view(torch.int16).int()]


def gelu_ggml(x: torch.Tensor, dtype: DType, lookup: bool = True) -> torch.Tensor:
    """GELU as ggml's CPU computes it: through an f16 table for F32 inputs (cut at ±10).

    ``lookup=False`` (while tracing for torch.compile, where the table would be a constant of
    real data) evaluates the rounded formula instead: the same values.
    """
    if dtype == DType.F16:
        return gelu_f32(x)
    if lookup:
        y = _through_table(gelu_f32, x)
    else:
        y = f16_round(gelu_f32(f16_round(x)))
    return torch.where(x >= 10, x, y).masked_fill_(x <= -10, 0.0)


def quick_f32(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(1.702 x)`` in float32."""
    return x * (1.0 / (1.0 + torch.exp(-1.702 * x)))


def quick_ggml(x: torch.Tensor, dtype: DType, lookup: bool = True) -> torch.Tensor:
    """QuickGELU as ggml's CPU computes it (f16 table for F32 inputs; ``lookup`` as in
    :func:`gelu_ggml`)."""
    if dtype == DType.F16:
        return quick_f32(x)
    if lookup:
        return _through_table(quick_f32, x)
    return f16_round(quick_f32(f16_round(x)))


def relu(x: torch.Tensor) -> torch.Tensor:
    """``x if x > 0 else 0`` (NaN and -0 give +0)."""
    return torch.where(x > 0, x, 0.0)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    # log(1 + exp(x)), not log1p: below about -17 the result is exactly 0, as in ggml.
    return torch.where(x > 20, x, torch.log(1.0 + torch.exp(x)))


def _gelu_erf(x: torch.Tensor) -> torch.Tensor:
    # 1 + erf(z) == erfc(-z), without the cancellation for large negative x.
    return 0.5 * x * torch.erfc(-x * _INV_SQRT_2)


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sqr": torch.square,
    "sqrt": torch.sqrt,
    "exp": torch.exp,
    "neg": torch.neg,
    "softplus": _softplus,
    "sigmoid": torch.sigmoid,
    "relu": relu,
    "silu": F.silu,
    "gelu_erf": _gelu_erf,
}


@implements(*_UNARY)
def unary(ctx: TorchContext, t: Tensor) -> None:
    """Apply a unary function in float32 and store in the node's dtype."""
    ctx.put(t, _UNARY[t.op](ctx.values(t.src[0])))


@implements("gelu")
def gelu(ctx: TorchContext, t: Tensor) -> None:
    """Tanh GELU (ggml's f16-table numerics)."""
    a = t.src[0]
    ctx.put(t, gelu_ggml(ctx.values(a), a.dtype, not ctx.tracing))


@implements("gelu_quick")
def gelu_quick(ctx: TorchContext, t: Tensor) -> None:
    """QuickGELU (ggml's f16-table numerics)."""
    a = t.src[0]
    ctx.put(t, quick_ggml(ctx.values(a), a.dtype, not ctx.tracing))


#: ``act(x, dtype, lookup)`` of each gated activation (``lookup``: see :func:`gelu_ggml`).
_ACT: dict[str, Callable[[torch.Tensor, DType, bool], torch.Tensor]] = {
    "gelu": gelu_ggml,
    "gelu_quick": quick_ggml,
    "silu": lambda x, _d, _l: F.silu(x),
    "relu": lambda x, _d, _l: relu(x),
}


@implements("glu")
def glu(ctx: TorchContext, t: Tensor) -> None:
    """Gated activation: ``act(gate) * up``."""
    gate, up = t.src
    act = _ACT[GluParams.of(t).kind]
    ctx.put(t, act(ctx.values(gate), gate.dtype, not ctx.tracing) * ctx.values(up))


@prepares(glu)
def _prepare_glu(ctx: TorchContext, t: Tensor) -> Step | None:
    gate, up = t.src
    if not fresh_f32(t, gate, up):
        return None
    act = _ACT[GluParams.of(t).kind]
    g, u, out = ctx.arr(gate), ctx.arr(up), ctx.arr(t)
    if g.shape != out.shape or u.shape != out.shape:
        return None
    return lambda: torch.mul(act(g, DType.F32, True), u, out=out)


@implements("swiglu_oai")
def swiglu_oai(ctx: TorchContext, t: Tensor) -> None:
    """gpt-oss clamped SwiGLU: ``x' sigmoid(alpha x') (clamp(up) + 1)``."""
    p = SwigluOaiParams.of(t)
    alpha, limit = f32(p.alpha), f32(p.limit)
    x = torch.clamp(ctx.values(t.src[0]), max=limit)
    y = torch.clamp(ctx.values(t.src[1]), -limit, limit)
    ctx.put(t, x / (1.0 + torch.exp(-alpha * x)) * (y + 1.0))


@implements("scale")
def scale(ctx: TorchContext, t: Tensor) -> None:
    """Multiply by ``f32(s)``."""
    ctx.put(t, ctx.values(t.src[0]) * f32(ScaleParams.of(t).s))


@implements("clamp")
def clamp(ctx: TorchContext, t: Tensor) -> None:
    """``max(min(x, hi), lo)`` with NaN -> hi (in place)."""
    p = ClampParams.of(t)
    lo, hi = f32(p.lo), f32(p.hi)
    x = ctx.values(t.src[0])
    ctx.put(t, torch.clamp(torch.where(x < hi, x, hi), min=lo))


@implements("fill")
def fill(ctx: TorchContext, t: Tensor) -> None:
    """Set every element (in place)."""
    ctx.put(t, ctx.scalar(f32(FillParams.of(t).value)))
