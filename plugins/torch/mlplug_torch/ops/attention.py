"""Scaled dot-product attention: torch's fused SDPA where it applies, else an explicit softmax.

ggml's ``[d, H, L, B]`` tensors are ``(B, L, H, d)`` in memory, so the torch layout
``(B, H, L, d)`` is a transposed view. Query head ``h`` uses KV head ``h // (H / H_kv)``
(``repeat_interleave``, which is SDPA's ``enable_gqa``); the mask's head and batch indices
tile (``h mod M2``, ``b mod M3``). Sinks (an extra logit column with no value) and F16 K/V
(ggml rounds the query and the probabilities to f16) take the explicit path.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from mlplug.plugin_api import AttentionParams, DType, last_seen, query_blocks

from ._registry import implements
from .elementwise import f16_round, f32
from .linalg import gemm

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import TorchContext

_GQA: list[bool] = []  # whether F.scaled_dot_product_attention takes enable_gqa (torch >= 2.5)


def _fused(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    r = q.shape[1] // k.shape[1]
    if r > 1:
        if not _GQA:
            try:
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, scale=scale, enable_gqa=True
                )
                _GQA.append(True)
                return out
            except TypeError:
                _GQA.append(False)
        if _GQA[0]:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=scale, enable_gqa=True
            )
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _per_head(
    ctx: TorchContext, x: torch.Tensor, w: torch.Tensor, transpose_w: bool
) -> torch.Tensor:
    """``x @ w^T`` (``x @ w`` with ``transpose_w``) over the leading dims, one oneDNN product
    per head (:func:`.linalg.gemm`) where the rows are many enough (a prompt's): Gemma 3's
    512 queries times 512 keys of 256, 675 -> 339 us; else one ``torch.matmul``."""
    if (
        ctx.tracing
        or x.device.type != "cpu"
        or x.shape[-2] < _PER_HEAD_ROWS
        or min(x.shape[-1], w.shape[-1]) < _PER_HEAD_DIM
    ):
        return torch.matmul(x, w if transpose_w else w.transpose(-1, -2))
    lead = x.shape[:-2]
    xs = x.reshape(-1, *x.shape[-2:])
    ws = w.reshape(-1, *w.shape[-2:])
    out = [
        gemm(ctx, xs[i], ws[i].t().contiguous() if transpose_w else ws[i]) for i in range(len(xs))
    ]
    return torch.stack(out).reshape(*lead, *out[0].shape)


#: Query rows (per KV head) from which attention's products run head by head through oneDNN.
_PER_HEAD_ROWS = 32
#: ... and the smallest head size: with heads of 64 (the tiny llama) one ``torch.matmul`` wins.
_PER_HEAD_DIM = 128


def _explicit(
    ctx: TorchContext,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    sinks: torch.Tensor | None,
    scale: float,
    round_p: bool,
) -> torch.Tensor:
    b, h, lq, dk = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    r = h // hkv
    # consecutive query heads share a KV head: fold each group into the rows
    logits = _per_head(ctx, q.reshape(b, hkv, r * lq, dk), k, transpose_w=False)
    logits = logits.reshape(b, h, lq, lk) * scale
    if mask is not None:
        logits = logits + mask
    if sinks is not None:
        logits = torch.cat((logits, sinks.reshape(1, h, 1, 1).expand(b, h, lq, 1)), dim=-1)
    p = torch.softmax(logits, dim=-1)
    if sinks is not None:
        p = p[..., :lk]
    if round_p:
        p = f16_round(p)
    out = _per_head(ctx, p.reshape(b, hkv, r * lq, lk), v, transpose_w=True)
    return out.reshape(b, h, lq, v.shape[-1])


def _keys_or_values(ctx: TorchContext, t: Tensor, n: int | None) -> torch.Tensor:
    """Float32 ``(B, Hkv, Lk, d)`` of K or V, cut to the first ``n`` keys before converting
    (a decode step reads a few rows of a long F16 cache, not all of it)."""
    a = (ctx.values(t) if t.dtype.is_quantized else ctx.arr(t)).transpose(1, 2)
    if n is not None:
        a = a[:, :, :n]
    return a if a.dtype == torch.float32 else a.float()


def _visible(
    ctx: TorchContext, mask_t: Tensor, b: int, h: int, lq: int
) -> tuple[torch.Tensor, int | None, tuple[tuple[int, int, int], ...] | None]:
    """The mask ``(B or 1, H or 1, Lq, n)`` tiled over heads and batch, ``n`` (the keys kept,
    up to the last one any query may see; None: all) and the query blocks
    (:func:`~mlplug.numerics.query_blocks`; None: one block).

    Keys past it add exactly nothing: leaving them out keeps the sums (and their rounding)
    independent of a cache's padded history, and a cache's unused tail is never converted to
    float32. Every layer of a model reads the same mask: the answer is kept for the compute
    (eight layers of the tiny llama: eight mask scans per decode step down to one).
    """
    key = ("sdpa-mask", id(mask_t), b, h, lq)
    return ctx.shared(key, lambda: _scan_mask(ctx.values(mask_t), b, h, lq, ctx.tracing))


def _scan_mask(
    m: torch.Tensor, b: int, h: int, lq: int, tracing: bool
) -> tuple[torch.Tensor, int | None, tuple[tuple[int, int, int], ...] | None]:
    m = m[:, :, :lq, :]  # (M3, M2, Lq, Lk), tiled over heads and batch
    if m.shape[1] not in (1, h):
        m = m.repeat(1, h // m.shape[1], 1, 1)
    if m.shape[0] not in (1, b):
        m = m.repeat(b // m.shape[0], 1, 1, 1)
    if tracing:  # no data to look at: every key, one block
        return m, None, None
    seen = last_seen((m != float("-inf")).any(dim=1).any(dim=0).cpu().numpy())
    if not seen.any():
        return m, None, None
    n = int(seen.max())
    return m[..., :n], n, query_blocks(seen)


@implements("scaled_dot_product_attention")
def scaled_dot_product_attention(ctx: TorchContext, t: Tensor) -> None:
    """Scaled dot-product attention with GQA, additive mask and sinks; ``[d_v, H, L_q, B]``.

    A causal prompt runs in blocks of query rows, each against the keys it may see.
    """
    p = AttentionParams.of(t)
    q_t, k_t, v_t = t.src[:3]
    rest = list(t.src[3:])
    mask_t = rest.pop(0) if p.has_mask else None
    sinks_t = rest.pop(0) if p.has_sinks else None
    q = ctx.values(q_t).transpose(1, 2)  # (B, H, Lq, dk)
    b, h, lq, _ = q.shape
    mask, n, blocks = None, None, None
    if mask_t is not None:
        mask, n, blocks = _visible(ctx, mask_t, b, h, lq)
    k = _keys_or_values(ctx, k_t, n)  # (B, Hkv, Lk, dk)
    v = _keys_or_values(ctx, v_t, n)  # (B, Hkv, Lk, dv)
    s = f32(p.scale)
    att: Callable[..., torch.Tensor]
    if sinks_t is None and k_t.dtype != DType.F16 and v_t.dtype != DType.F16:
        att = partial(_fused, scale=s)
    else:
        if k_t.dtype == DType.F16:
            q = f16_round(q)
        sinks = None if sinks_t is None else ctx.values(sinks_t)
        att = partial(_explicit, ctx, sinks=sinks, scale=s, round_p=v_t.dtype == DType.F16)
    if blocks is None or len(blocks) == 1:
        out = att(q, k, v, mask)
    else:
        out = q.new_empty((b, h, lq, v.shape[-1]))
        for r0, r1, nb in blocks:
            m = None if mask is None else mask[:, :, r0:r1, :nb]
            out[:, :, r0:r1] = att(q[:, :, r0:r1], k[:, :, :nb], v[:, :, :nb], m)
    ctx.put(t, out.transpose(1, 2))
