"""Scaled dot-product attention: torch's fused SDPA where it applies, else an explicit softmax.

ggml's ``[d, H, L, B]`` tensors are ``(B, L, H, d)`` in memory, so the torch layout
``(B, H, L, d)`` is a transposed view. Query head ``h`` uses KV head ``h // (H / H_kv)``
(``repeat_interleave``, which is SDPA's ``enable_gqa``); the mask's head and batch indices
tile (``h mod M2``, ``b mod M3``). Sinks (an extra logit column with no value) and F16 K/V
(ggml rounds the query and the probabilities to f16) take the explicit path.

A decode step's single query over F16 or F32 keys runs, on the CPU, as one kernel compiled by
inductor (:func:`_one_query`; the backend's :class:`.compiled.CompiledKernels`), with the
number of keys symbolic, so one kernel serves every step: it reads the cache once, where the
explicit path widens keys and values to float32 and runs two batched products (the tiny
llama's 560 F16 keys of 8 x 64: about 300 -> 170 us per layer when the cache is cold).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from mlplug.plugin_api import TRAITS, AttentionParams, DType, Step, last_seen, query_blocks

from ._registry import implements, prepares
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
    # one KV head (Gemma 3 270M): its product is the result, not copied into a stack
    whole = out[0] if len(out) == 1 else torch.stack(out)
    return whole.reshape(*lead, *out[0].shape)


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


#: Types of the keys and values a compiled one-query attention reads.
_ONE_QUERY_TYPES = frozenset({DType.F16, DType.F32})


@cache
def _one_query(round_q: bool, round_p: bool, masked: bool) -> Callable[..., torch.Tensor]:
    """The expression of one query's attention, as :func:`_explicit` computes it: ``q``
    ``(H, dk)`` float32 (rounded to f16 for F16 keys), ``k`` ``(n, Hkv, dk)`` and ``v``
    ``(n, Hkv, dv)`` in the cache's type, ``mask`` ``(n,)``, ``scale`` a 0-d tensor; query
    head ``h`` reads KV head ``h // (H / Hkv)``. Returns ``(H, dv)``."""

    def attend(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: torch.Tensor
    ) -> torch.Tensor:
        mask, scale = rest if masked else (None, rest[0])
        h, dk = q.shape
        hkv = k.shape[1]
        qg = (f16_round(q) if round_q else q).view(1, hkv, h // hkv, dk)
        logits = (qg * k.float().unsqueeze(2)).sum(-1) * scale  # (n, Hkv, r)
        if mask is not None:
            logits = logits + mask.view(-1, 1, 1)
        p = torch.softmax(logits, dim=0)
        if round_p:
            p = f16_round(p)
        out = (p.unsqueeze(-1) * v.float().unsqueeze(2)).sum(0)  # (Hkv, r, dv)
        return out.reshape(h, v.shape[2])

    return attend


def _one_query_gap(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: torch.Tensor) -> float:
    """How far a compiled one-query attention may be from the eager one: a probability rounded
    to f16 may round the other way when the sums' order differs (a half's step, 2^-11
    relative), so each output may move by up to 2^-11 of the largest value (twice that here);
    with F32 values, by 1e-5 of it."""
    share = 2.0**-10 if v.dtype == torch.float16 else 1e-5
    return share * float(v.float().abs().max()) + 1e-30


class _OneQuery:
    """One query's attention (batch 1, no sinks, a mask shared by the heads) through the
    backend's compiled kernel, its operands' views bound once (:meth:`bind`); called with the
    visible keys (mask row and count) of a compute, it returns ``(H, dv)``, or None where the
    kernel does not apply (fewer than two keys, or too few bytes) or did not compile."""

    def __init__(
        self, ctx: TorchContext, t: Tensor, q_t: Tensor, k_t: Tensor, v_t: Tensor, masked: bool
    ) -> None:
        self.ctx = ctx
        self.q = ctx.arr(q_t)[0, 0]  # (H, dk), F32
        self.k, self.v = ctx.arr(k_t)[0], ctx.arr(v_t)[0]  # (Lk, Hkv, d), in the cache's type
        self.row_bytes = k_t.ne[0] * k_t.ne[1] * TRAITS[k_t.dtype].type_size + (
            v_t.ne[0] * v_t.ne[1] * TRAITS[v_t.dtype].type_size
        )
        self.scale = torch.tensor(f32(AttentionParams.of(t).scale), dtype=torch.float32)
        self.masked = masked
        round_q, round_p = k_t.dtype == DType.F16, v_t.dtype == DType.F16
        #: The kernel's key (one per head layout, the number of keys left symbolic) and expression.
        self.key = (
            "attention",
            *self.q.shape,
            *self.k.shape[1:],
            self.v.shape[2],
            round_q,
            round_p,
            masked,
        )
        self.expression = _one_query(round_q, round_p, masked)

    @classmethod
    def bind(
        cls, ctx: TorchContext, t: Tensor, q_t: Tensor, k_t: Tensor, v_t: Tensor, masked: bool
    ) -> _OneQuery | None:
        """The bound attention of node ``t`` (with a mask or not), or None where the kernel
        cannot apply."""
        if (
            not ctx.backend.compiled.on
            or ctx.tracing
            or ctx.device.type != "cpu"
            or q_t.dtype != DType.F32
            or q_t.ne[2] != 1
            or q_t.ne[3] != 1
            or k_t.dtype not in _ONE_QUERY_TYPES
            or v_t.dtype not in _ONE_QUERY_TYPES
            or q_t.ne[1] % k_t.ne[1]
        ):
            return None
        one = cls(ctx, t, q_t, k_t, v_t, masked)
        if not (one.q.is_contiguous() and one.k.is_contiguous() and one.v.is_contiguous()):
            return None  # the kernels are traced for (and assert) packed operands
        return one

    def __call__(self, mask: torch.Tensor | None, n: int | None) -> torch.Tensor | None:
        k, v = self.k, self.v
        if n is not None:
            k, v = k[:n], v[:n]
        keys = k.shape[0]
        kernels = self.ctx.backend.compiled
        # two keys at least: a traced size of 1 would be specialised, not symbolic
        if keys < 2 or not kernels.wants(keys * self.row_bytes):
            return None
        args: tuple[torch.Tensor, ...] = (self.q, k, v)
        if mask is not None:
            if not self.masked or mask.shape[:3] != (1, 1, 1):
                return None
            args += (mask[0, 0, 0].contiguous(),)
        elif self.masked:
            return None
        args += (self.scale,)
        kernel = kernels.kernel(
            self.key, self.expression, lambda: args, dynamic=True, atol=_one_query_gap
        )
        return None if kernel is None else kernel(*args)


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
    if lq == 1 and b == 1 and sinks_t is None:
        bound = _OneQuery.bind(ctx, t, q_t, k_t, v_t, mask_t is not None)
        one = None if bound is None else bound(mask, n)
        if one is not None:
            ctx.put(t, one.view(1, 1, *one.shape))
            return
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


@prepares(scaled_dot_product_attention)
def _prepare_attention(ctx: TorchContext, t: Tensor) -> Step | None:
    """A decode step's one-query attention through the compiled kernel, its views bound once
    (a step where it does not apply runs the kernel)."""
    p = AttentionParams.of(t)
    q_t, k_t, v_t = t.src[:3]
    if p.has_sinks or t.view_src is not None or t.dtype != DType.F32 or q_t.ne[3] != 1:
        return None
    mask_t = t.src[3] if p.has_mask else None
    one = _OneQuery.bind(ctx, t, q_t, k_t, v_t, mask_t is not None)
    if one is None:
        return None
    h, out = q_t.ne[1], ctx.arr(t)[0, 0]

    def step() -> None:
        mask, n = None, None
        if mask_t is not None:
            mask, n, _ = _visible(ctx, mask_t, 1, h, 1)
        got = one(mask, n)
        if got is None:
            scaled_dot_product_attention(ctx, t)
        else:
            out.copy_(got)

    return step
