"""Row reductions, normalisations, cumulative sum and sorting (all along dim 0).

Row sums and means accumulate in float64 (as ggml's ``ggml_float``) and round once to
float32; the normalisations use torch's fused float32 kernels, well inside the conformance
suite's tolerances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from mlplug.plugin_api import ArgsortParams, NormParams, Step

from ._registry import implements, prepares
from .elementwise import fresh_f32

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import TorchContext

_RMS_NORM = getattr(F, "rms_norm", None)


@implements("softmax")
def softmax(ctx: TorchContext, t: Tensor) -> None:
    """Stable softmax of each row."""
    ctx.put(t, torch.softmax(ctx.values(t.src[0]), dim=-1))


@implements("norm")
def norm(ctx: TorchContext, t: Tensor) -> None:
    """``(x - mean) / sqrt(var + eps)`` per row (population variance)."""
    x = ctx.values(t.src[0])
    ctx.put(t, F.layer_norm(x, (x.shape[-1],), eps=NormParams.of(t).eps))


@implements("rms_norm")
def rms_norm(ctx: TorchContext, t: Tensor) -> None:
    """``x / sqrt(mean(x^2) + eps)`` per row."""
    x = ctx.values(t.src[0])
    eps = NormParams.of(t).eps
    if _RMS_NORM is not None:
        ctx.put(t, _RMS_NORM(x, (x.shape[-1],), eps=eps))
    else:  # torch < 2.4
        ctx.put(t, x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps))


@prepares(rms_norm)
def _prepare_rms_norm(ctx: TorchContext, t: Tensor) -> Step | None:
    x_t = t.src[0]
    if _RMS_NORM is None or not fresh_f32(t, x_t):
        return None
    x, out, eps = ctx.arr(x_t), ctx.arr(t), NormParams.of(t).eps
    shape = (x.shape[-1],)
    return lambda: out.copy_(_RMS_NORM(x, shape, eps=eps))


@implements("l2_norm")
def l2_norm(ctx: TorchContext, t: Tensor) -> None:
    """``x / max(||x||, eps)`` per row."""
    x = ctx.values(t.src[0])
    ss = x.square().sum(dim=-1, keepdim=True, dtype=ctx.acc_dtype)
    scale = (1.0 / torch.clamp(torch.sqrt(ss), min=NormParams.of(t).eps)).float()
    ctx.put(t, x * scale)


@implements("sum_rows")
def sum_rows(ctx: TorchContext, t: Tensor) -> None:
    """Row sums (accumulated in float64)."""
    ctx.put(t, ctx.values(t.src[0]).sum(dim=-1, keepdim=True, dtype=ctx.acc_dtype).float())


@implements("mean")
def mean(ctx: TorchContext, t: Tensor) -> None:
    """Row means: ``f32(sum) / f32(n)``."""
    x = ctx.values(t.src[0])
    s = x.sum(dim=-1, keepdim=True, dtype=ctx.acc_dtype).float()
    ctx.put(t, s / float(x.shape[-1]))


@implements("cum_sum")
def cum_sum(ctx: TorchContext, t: Tensor) -> None:
    """Inclusive prefix sums along dim 0."""
    ctx.put(t, torch.cumsum(ctx.values(t.src[0]), dim=-1))


@implements("argsort")
def argsort(ctx: TorchContext, t: Tensor) -> None:
    """Indices sorting each row ascending (or descending for top_k); ties keep index order."""
    x = ctx.arr(t.src[0])
    idx = torch.argsort(x, dim=-1, stable=True, descending=ArgsortParams.of(t).order == "desc")
    ctx.put_raw(t, idx.to(torch.int32))
