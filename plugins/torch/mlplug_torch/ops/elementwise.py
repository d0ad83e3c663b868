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


def _table_gelu(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """:func:`gelu_ggml` of F32 values through ``table`` (:func:`_half_table` of
    :func:`gelu_f32`), as one expression (compiled by :func:`compiled_table_act`)."""
    y = table[x.half().view(torch.int16).to(torch.int32) & 0xFFFF]
    return torch.where(x >= 10, x, torch.where(x <= -10, 0.0, y))


def _table_quick(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """:func:`quick_ggml` of F32 values through ``table``, as one expression."""
    return table[x.half().view(torch.int16).to(torch.int32) & 0xFFFF]


def _gated_gelu(x: torch.Tensor, up: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return _table_gelu(x, table) * up


def _gated_quick(x: torch.Tensor, up: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return _table_quick(x, table) * up


def table_act_operands(
    ctx: TorchContext, kind: str, x: torch.Tensor, up: torch.Tensor | None = None
) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]] | None:
    """The compiled kernel of an f16-table activation (gelu, gelu_quick) of F32 ``x``, times
    ``up`` (``x``'s shape) when given, and its flat operands (views of ``x`` and ``up`` where
    they are contiguous); None where none applies: another activation, tracing, compiled
    kernels off, or operands below their threshold while no kernel is compiled yet.

    Eagerly the lookup costs about seven passes with temporaries (Gemma 3's prompt, 2048 x 512
    values: 5.8 ms; compiled 1.0 ms). The values are the table's, so equal to the eager
    path's bit for bit. One kernel per activation serves every size (compiled with symbolic
    sizes once operands reach the compiled kernels' threshold, then used for any size).
    """
    kernels = ctx.backend.compiled
    n = x.numel()
    if kind not in _ACT_EXPRESSIONS or ctx.tracing or not kernels.on or n < 2:
        return None
    key = ("table-act", kind, up is not None)
    kernel = kernels.ready(key)
    if kernel is None and not kernels.wants(4 * n * (1 if up is None else 2)):
        return None
    formula, ungated, gated = _ACT_EXPRESSIONS[kind]
    table = _half_table(formula, x.device)
    args = (x.reshape(-1), table) if up is None else (x.reshape(-1), up.reshape(-1), table)
    if kernel is None:
        expression = ungated if up is None else gated
        kernel = kernels.kernel(key, expression, lambda: args, dynamic=True)
    return None if kernel is None else (kernel, args)


def compiled_table_act(
    ctx: TorchContext, kind: str, x: torch.Tensor, up: torch.Tensor | None = None
) -> torch.Tensor | None:
    """``act(x)`` (times ``up``) through :func:`table_act_operands`'s kernel, or None."""
    found = table_act_operands(ctx, kind, x, up)
    if found is None:
        return None
    kernel, args = found
    return kernel(*args).view(x.shape)


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


#: Per f16-table activation: its float32 formula and its expressions, ungated and gated.
_ACT_EXPRESSIONS: dict[
    str,
    tuple[
        Callable[[torch.Tensor], torch.Tensor],
        Callable[..., torch.Tensor],
        Callable[..., torch.Tensor],
    ],
] = {
    "gelu": (gelu_f32, _table_gelu, _gated_gelu),
    "gelu_quick": (quick_f32, _table_quick, _gated_quick),
}


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
    x = ctx.values(a)
    y = compiled_table_act(ctx, "gelu", x) if a.dtype == DType.F32 else None
    ctx.put(t, gelu_ggml(x, a.dtype, not ctx.tracing) if y is None else y)


@implements("gelu_quick")
def gelu_quick(ctx: TorchContext, t: Tensor) -> None:
    """QuickGELU (ggml's f16-table numerics)."""
    a = t.src[0]
    x = ctx.values(a)
    y = compiled_table_act(ctx, "gelu_quick", x) if a.dtype == DType.F32 else None
    ctx.put(t, quick_ggml(x, a.dtype, not ctx.tracing) if y is None else y)


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
    kind = GluParams.of(t).kind
    g, u = ctx.values(gate), ctx.values(up)
    y = compiled_table_act(ctx, kind, g, u) if gate.dtype == DType.F32 else None
    ctx.put(t, _ACT[kind](g, gate.dtype, not ctx.tracing) * u if y is None else y)


@prepares(glu)
def _prepare_glu(ctx: TorchContext, t: Tensor) -> Step | None:
    gate, up = t.src
    if not fresh_f32(t, gate, up):
        return None
    kind = GluParams.of(t).kind
    act = _ACT[kind]
    g, u, out = ctx.arr(gate), ctx.arr(up), ctx.arr(t)
    if g.shape != out.shape or u.shape != out.shape:
        return None
    found = table_act_operands(ctx, kind, g, u) if g.is_contiguous() and u.is_contiguous() else None
    if found is not None:  # the flat operands are views of g and u: bound once
        kernel, args = found
        return lambda: out.copy_(kernel(*args).view(out.shape))
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
