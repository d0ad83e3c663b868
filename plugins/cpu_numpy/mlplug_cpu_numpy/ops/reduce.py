"""Row reductions, normalisations, cumulative sum and sorting (all along dim 0)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mlplug.plugin_api import ArgsortParams, NormParams

from ._registry import implements

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import NumpyContext

F32 = np.float32


@implements("softmax")
def softmax(ctx: NumpyContext, t: Tensor) -> None:
    """Stable softmax of each row."""
    x = ctx.values(t.src[0])
    out = ctx.arr(t)
    with np.errstate(invalid="ignore", over="ignore"):
        np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
        np.exp(out, out=out)
        out *= F32(1) / out.sum(axis=-1, keepdims=True, dtype=F32)


@implements("norm")
def norm(ctx: NumpyContext, t: Tensor) -> None:
    """``(x - mean) / sqrt(var + eps)`` per row (population variance)."""
    x = ctx.values(t.src[0])
    n = x.shape[-1]
    mean = F32(1) * x.sum(axis=-1, keepdims=True, dtype=np.float64).astype(F32) / F32(n)
    d = x - mean
    var = (np.square(d).sum(axis=-1, keepdims=True, dtype=np.float64) / n).astype(F32)
    ctx.put(t, d * (F32(1) / np.sqrt(var + F32(NormParams.of(t).eps))))


@implements("rms_norm")
def rms_norm(ctx: NumpyContext, t: Tensor) -> None:
    """``x / sqrt(mean(x^2) + eps)`` per row."""
    x = ctx.values(t.src[0])
    ms = (np.square(x).sum(axis=-1, keepdims=True, dtype=np.float64) / x.shape[-1]).astype(F32)
    np.multiply(x, F32(1) / np.sqrt(ms + F32(NormParams.of(t).eps)), out=ctx.arr(t))


@implements("l2_norm")
def l2_norm(ctx: NumpyContext, t: Tensor) -> None:
    """``x / max(||x||, eps)`` per row."""
    x = ctx.values(t.src[0])
    ss = np.square(x).sum(axis=-1, keepdims=True, dtype=np.float64)
    scale = (1.0 / np.maximum(np.sqrt(ss), NormParams.of(t).eps)).astype(F32)
    np.multiply(x, scale, out=ctx.arr(t))


@implements("sum_rows")
def sum_rows(ctx: NumpyContext, t: Tensor) -> None:
    """Row sums (accumulated in float64)."""
    ctx.put(t, ctx.values(t.src[0]).sum(axis=-1, keepdims=True, dtype=np.float64).astype(F32))


@implements("mean")
def mean(ctx: NumpyContext, t: Tensor) -> None:
    """Row means: ``f32(sum) / f32(n)``."""
    x = ctx.values(t.src[0])
    s = x.sum(axis=-1, keepdims=True, dtype=np.float64).astype(F32)
    ctx.put(t, s / F32(x.shape[-1]))


@implements("cum_sum")
def cum_sum(ctx: NumpyContext, t: Tensor) -> None:
    """Inclusive prefix sums, accumulated sequentially in float32."""
    np.cumsum(ctx.values(t.src[0]), axis=-1, dtype=F32, out=ctx.arr(t))


@implements("argsort")
def argsort(ctx: NumpyContext, t: Tensor) -> None:
    """Indices sorting each row ascending (or descending)."""
    x = ctx.arr(t.src[0])
    if ArgsortParams.of(t).order == "desc":
        idx = np.argsort(-x.astype(np.float64), axis=-1, kind="stable")
    else:
        idx = np.argsort(x, axis=-1, kind="stable")
    ctx.arr(t)[...] = idx
