"""Pooling, im2col, conv, state-space, interpolation, RoPE and attention kernels."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from mlplug.plugin_api import (
    AttentionParams,
    Conv3dParams,
    DType,
    Im2colParams,
    InterpolateParams,
    Pool2dParams,
    RopeParams,
    bilinear_axis,
    f16_round,
    half_to_f32,
    last_seen,
    nearest_index,
    query_blocks,
    rope_n_pairs,
    rope_pairs,
    rope_theta_scale,
    rope_thetas,
    yarn_mix,
)

from ._registry import implements
from .linalg import check_ids

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import NumpyContext

F32 = np.float32


@implements("pool_2d")
def pool_2d(ctx: NumpyContext, t: Tensor) -> None:
    """Average pooling over dims 0, 1 (divisor k*k)."""
    r = Pool2dParams.of(t)
    k, s, p = r.k, r.s, r.p
    x = ctx.values(t.src[0])  # (N, C, H, W)
    oh, ow = t.ne[1], t.ne[0]
    pi = int(p)
    extra_h = max(0, (oh - 1) * s + k - (x.shape[2] + pi))
    extra_w = max(0, (ow - 1) * s + k - (x.shape[3] + pi))
    xp = np.pad(x, ((0, 0), (0, 0), (pi, extra_h + pi), (pi, extra_w + pi)))
    acc = np.zeros((x.shape[0], x.shape[1], oh, ow), F32)
    for ky in range(k):
        for kx in range(k):
            acc += xp[:, :, ky : ky + s * oh : s, kx : kx + s * ow : s][:, :, :oh, :ow]
    ctx.put(t, acc / F32(k * k))


def _patches(
    x: np.ndarray,
    kh: int,
    kw: int,
    oh: int,
    ow: int,
    s: tuple[int, int],
    p: tuple[int, int],
    d: tuple[int, int],
) -> np.ndarray:
    """Return ``(KH, KW, N, C, OH, OW)`` patches of ``x`` ``(N, C, H, W)`` (zero padded)."""
    s1, s0 = s
    p1, p0 = p
    d1, d0 = d
    need_h = (oh - 1) * s1 + (kh - 1) * d1 + 1
    need_w = (ow - 1) * s0 + (kw - 1) * d0 + 1
    xp = np.pad(
        x,
        (
            (0, 0),
            (0, 0),
            (p1, max(0, need_h - x.shape[2] - p1)),
            (p0, max(0, need_w - x.shape[3] - p0)),
        ),
    )
    out = np.empty((kh, kw, x.shape[0], x.shape[1], oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out[i, j] = xp[:, :, i * d1 : i * d1 + s1 * oh : s1, j * d0 : j * d0 + s0 * ow : s0][
                :, :, :oh, :ow
            ]
    return out


@implements("im2col")
def im2col(ctx: NumpyContext, t: Tensor) -> None:
    """Unfold image patches: ``[C*KH*KW, OW, OH, N]``."""
    kernel, image = t.src
    r = Im2colParams.of(t)
    s0, s1, p0, p1, d0, d1 = r.s0, r.s1, r.p0, r.p1, r.d0, r.d1
    kw, kh, c = kernel.ne[0], kernel.ne[1], kernel.ne[2]
    ow, oh = t.ne[1], t.ne[2]
    x = ctx.values(image)  # (N, C, IH, IW)
    pt = _patches(x, kh, kw, oh, ow, (s1, s0), (p1, p0), (d1, d0))  # (KH, KW, N, C, OH, OW)
    out = pt.transpose(2, 4, 5, 3, 0, 1).reshape(x.shape[0], oh, ow, c * kh * kw)
    ctx.put(t, out)


@implements("conv_3d")
def conv_3d(ctx: NumpyContext, t: Tensor) -> None:
    """Direct 3-D cross-correlation with channels merged into dim 3."""
    w, x = t.src
    r = Conv3dParams.of(t)
    c, s0, s1, s2 = r.c, r.s0, r.s1, r.s2
    p0, p1, p2, d0, d1, d2 = r.p0, r.p1, r.p2, r.d0, r.d1, r.d2
    wv = ctx.values(w)  # (OC*IC, KD, KH, KW)
    xv = ctx.values(x)  # (N*IC, ID, IH, IW)
    if w.dtype == DType.F16:
        xv = f16_round(xv)
    oc, n = w.ne[3] // c, x.ne[3] // c
    kd, kh, kw = wv.shape[1:]
    ow, oh, od = t.ne[0], t.ne[1], t.ne[2]
    wv = wv.reshape(oc, c, kd, kh, kw).astype(np.float64)
    xv = xv.reshape(n, c, *xv.shape[1:])
    xp = np.pad(xv, ((0, 0), (0, 0), (p2, p2 + kd * d2), (p1, p1 + kh * d1), (p0, p0 + kw * d0)))
    out = np.zeros((n, oc, od, oh, ow))
    for a in range(kd):
        for b in range(kh):
            for e in range(kw):
                patch = xp[
                    :,
                    :,
                    a * d2 : a * d2 + s2 * od : s2,
                    b * d1 : b * d1 + s1 * oh : s1,
                    e * d0 : e * d0 + s0 * ow : s0,
                ][:, :, :od, :oh, :ow]
                out += np.einsum("ncdhw,oc->nodhw", patch, wv[:, :, a, b, e])
    ctx.put(t, out.reshape(n * oc, od, oh, ow).astype(F32))


@implements("ssm_conv")
def ssm_conv(ctx: NumpyContext, t: Tensor) -> None:
    """Depthwise causal conv; output channel-major ``[d_inner, n_t, n_s]``."""
    sx, kernel = t.src
    x = ctx.values(sx)[0]  # (n_s, d_inner, T)
    k = ctx.values(kernel)[0, 0]  # (d_inner, K)
    win = np.lib.stride_tricks.sliding_window_view(x, k.shape[1], axis=-1)  # (n_s, D, n_t, K)
    ctx.arr(t)[0] = np.einsum("sdtk,dk->std", win, k, dtype=F32)


@implements("ssm_scan")
def ssm_scan(ctx: NumpyContext, t: Tensor) -> None:
    """Mamba selective scan; output ``y`` then final states, packed 1-D."""
    s_t, x_t, dt_t, a_t, b_t, c_t, ids_t = t.src
    s = ctx.values(s_t)  # (slots, H, P, N)
    x = ctx.values(x_t)  # (Q, T, H, P)
    dt = ctx.values(dt_t)[0]  # (Q, T, H)
    a = ctx.values(a_t)[0, 0]  # (H, 1 or N)
    bm = ctx.values(b_t)  # (Q, T, G, N)
    cm = ctx.values(c_t)
    ids = ctx.arr(ids_t).reshape(-1)
    check_ids(ids, s.shape[0], "ssm_scan")
    n_seq, n_tok, n_head, _hd = x.shape
    group = np.arange(n_head) // (n_head // bm.shape[2])
    ys = np.empty_like(x)
    states = np.empty((n_seq, *s.shape[1:]), F32)
    with np.errstate(over="ignore"):
        for q in range(n_seq):
            st = s[ids[q]].astype(F32).copy()  # (H, P, N)
            for tok in range(n_tok):
                v = dt[q, tok]
                delta = np.where(v > 20, v, np.log(F32(1) + np.exp(v))).astype(F32)  # (H,)
                decay = np.exp(delta[:, None] * a).astype(F32)[:, None, :]  # (H, 1, 1|N)
                bh, ch = bm[q, tok, group], cm[q, tok, group]  # (H, N)
                st = st * decay + bh[:, None, :] * (x[q, tok][:, :, None] * delta[:, None, None])
                ys[q, tok] = (st * ch[:, None, :]).sum(-1, dtype=F32)
            states[q] = st
    flat = ctx.arr(t).reshape(-1)
    flat[: ys.size] = ys.reshape(-1)
    flat[ys.size :] = states.reshape(-1)


@implements("interpolate")
def interpolate(ctx: NumpyContext, t: Tensor) -> None:
    """Nearest (float32 index rule) or half-pixel bilinear on dims 0, 1."""
    x = ctx.values(t.src[0])  # (n3, n2, n1, n0)
    ne_in, ne_out = t.src[0].ne, t.ne
    i3 = nearest_index(ne_out[3], ne_in[3])
    i2 = nearest_index(ne_out[2], ne_in[2])
    x = x[i3][:, i2]
    if InterpolateParams.of(t).mode == 0:
        y = x[:, :, nearest_index(ne_out[1], ne_in[1])][..., nearest_index(ne_out[0], ne_in[0])]
        ctx.put(t, y)
        return
    y0, y1, fy = bilinear_axis(ne_out[1], ne_in[1])
    x0, x1, fx = bilinear_axis(ne_out[0], ne_in[0])
    a = x[:, :, y0][..., x0]
    b = x[:, :, y0][..., x1]
    c = x[:, :, y1][..., x0]
    d = x[:, :, y1][..., x1]
    fy_, fx_ = fy[:, None], fx[None, :]
    one = F32(1)
    out = (
        a * (one - fx_) * (one - fy_)
        + b * fx_ * (one - fy_)
        + c * (one - fx_) * fy_
        + d * fx_ * fy_
    )
    ctx.put(t, out)


def rope_angles(
    pos: np.ndarray,
    n_pairs: int,
    n_dims: int,
    base: float,
    freq_scale: float,
    ext_factor: float,
    attn_factor: float,
    beta_fast: float,
    beta_slow: float,
    n_ctx_orig: int,
    factors: np.ndarray | None,
    mode: int,
    sections: tuple[int, int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``cos``/``sin`` ``(n_tokens, n_pairs)`` (float32), as ggml's CPU computes them."""
    theta_scale = rope_theta_scale(base, n_dims)
    theta = rope_thetas(pos, n_pairs, mode, sections, theta_scale, factors)
    mix, mscale = yarn_mix(
        n_pairs, n_dims, n_ctx_orig, base, freq_scale, ext_factor, attn_factor, beta_fast, beta_slow
    )
    ang = F32(freq_scale) * theta
    if mix is not None:
        ang = ang * (F32(1) - mix) + theta * mix
    return (np.cos(ang) * mscale).astype(F32), (np.sin(ang) * mscale).astype(F32)


def _full_tables(
    cs: tuple[np.ndarray, np.ndarray], n_pairs: int, mode: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cos and signed sin per value (broadcastable over batch and heads) and each value's
    partner: a whole head rotates as ``x * c + x[partner] * s``."""
    pair, partner, sign = rope_pairs(n_pairs, mode)
    c, s = cs[0][:, pair], cs[1][:, pair] * sign
    return c[None, :, None, :], s[None, :, None, :], partner


@implements("rope")
def rope(ctx: NumpyContext, t: Tensor) -> None:
    """Rotary position embedding (normal, neox, mrope, vision, imrope)."""
    x_t, pos_t = t.src[0], t.src[1]
    fac_t = t.src[2] if len(t.src) > 2 else None
    p = RopeParams.of(t)
    n_dims, mode = p.n_dims, p.mode
    x = ctx.values(x_t)  # (B, T, H, D)
    n_pairs = rope_n_pairs(n_dims, mode)
    # every layer's queries and keys share one table: computed once per compute
    key = ("rope", id(pos_t), None if fac_t is None else id(fac_t), n_pairs, p)
    cs = ctx.shared(
        key,
        lambda: rope_angles(
            ctx.arr(pos_t).reshape(-1),
            n_pairs,
            n_dims,
            p.base,
            p.freq_scale,
            p.ext_factor,
            p.attn_factor,
            p.beta_fast,
            p.beta_slow,
            p.n_ctx_orig,
            None if fac_t is None else ctx.values(fac_t).reshape(-1),
            mode,
            p.sections,
        ),
    )
    if x.shape[-1] == 2 * n_pairs:  # every value rotates: its partners, two products
        c, s, partner = ctx.shared(("rope-full", *key[1:]), lambda: _full_tables(cs, n_pairs, mode))
        if mode == 0:  # adjacent pairs: a gather
            swapped = np.take(x, partner, axis=-1)
        else:  # halves: two slices, 4-8x faster than the gather on a prompt
            swapped = np.concatenate((x[..., n_pairs:], x[..., :n_pairs]), axis=-1)
        ctx.put(t, x * c + swapped * s)
        return
    cos, sin = cs
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    y = x.copy()
    if mode == 0:
        u, v = x[..., 0:n_dims:2], x[..., 1:n_dims:2]
        y[..., 0:n_dims:2] = u * cos - v * sin
        y[..., 1:n_dims:2] = u * sin + v * cos
    else:
        half = n_pairs
        u, v = x[..., :half], x[..., half : 2 * half]
        y[..., :half] = u * cos - v * sin
        y[..., half : 2 * half] = u * sin + v * cos
    ctx.put(t, y)


def _keys_or_values(ctx: NumpyContext, t: Tensor, n: int | None) -> np.ndarray:
    """Float32 ``(B, Lk, Hkv, d)`` of K or V, cut to the first ``n`` keys before converting
    (a decode step reads a few rows of a long F16 cache, not all of it)."""
    if t.dtype in (DType.F32, DType.F16):
        a = ctx.arr(t)[:, :n]
        return a if t.dtype == DType.F32 else half_to_f32(a)
    return ctx.values(t)[:, :n]


def _visible(
    ctx: NumpyContext, mask_t: Tensor, lq: int
) -> tuple[np.ndarray, int | None, tuple[tuple[int, int, int], ...]]:
    """The mask's first ``lq`` rows cut to ``n`` keys, ``n`` (the keys kept, up to the last
    one any query may see; None: all) and the query blocks (:func:`query_blocks`).

    Keys past it add exactly nothing: leaving them out keeps the sums (and their rounding)
    independent of how far a cache padded its history, and a cache's unused tail is never
    converted to float32. Every layer reads the same mask: the answer is kept for the compute.
    """
    return ctx.shared(("sdpa-mask", id(mask_t), lq), lambda: _scan_mask(ctx.values(mask_t), lq))


def _scan_mask(
    mask: np.ndarray, lq: int
) -> tuple[np.ndarray, int | None, tuple[tuple[int, int, int], ...]]:
    mask = mask[:, :, :lq, :]
    seen = last_seen((mask != -np.inf).any(axis=(0, 1)))
    if not seen.any():
        return mask, None, ((0, lq, mask.shape[-1]),)
    n = int(seen.max())
    return mask[..., :n], n, query_blocks(seen)


@implements("scaled_dot_product_attention")
def scaled_dot_product_attention(ctx: NumpyContext, t: Tensor) -> None:
    """Scaled dot-product attention with GQA, additive mask and sinks.

    A causal prompt runs in blocks of query rows, each against the keys it may see.
    """
    p = AttentionParams.of(t)
    q_t, k_t, v_t = t.src[:3]
    rest = list(t.src[3:])
    mask_t = rest.pop(0) if p.has_mask else None
    sinks = ctx.values(rest.pop(0)).reshape(-1) if p.has_sinks else None
    q = ctx.values(q_t)  # (B, Lq, H, dk)
    mask, n, blocks = None, None, None
    if mask_t is not None:
        mask, n, blocks = _visible(ctx, mask_t, q.shape[1])
    k = _keys_or_values(ctx, k_t, n)  # (B, Lk, Hkv, dk)
    v = _keys_or_values(ctx, v_t, n)  # (B, Lk, Hkv, dv)
    if k_t.dtype == DType.F16:
        q = f16_round(q)
    att = partial(_attend, scale=F32(p.scale), sinks=sinks, round_p=v_t.dtype == DType.F16)
    if blocks is None or len(blocks) == 1:
        ctx.put(t, att(q, k, v, mask))
        return
    out = ctx.arr(t)  # the result is F32 (the op's contract): each block goes where it lies
    for r0, r1, nb in blocks:
        m = None if mask is None else mask[:, :, r0:r1, :nb]
        out[:, r0:r1] = att(q[:, r0:r1], k[:, :nb], v[:, :nb], m)


def _attend(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    *,
    scale: np.float32,
    sinks: np.ndarray | None,
    round_p: bool,
) -> np.ndarray:
    """Attention of queries ``q`` ``(B, Lq, H, dk)`` over keys ``k`` and values ``v``
    ``(B, Lk, Hkv, d)`` with the mask's rows ``(M3, M2, Lq, Lk)``; ``(B, Lq, H, dv)``."""
    bsz, lq, h, _ = q.shape
    hkv, lk = k.shape[2], k.shape[1]
    r = h // hkv
    # Query head h uses KV head h // r: fold each group of r heads into the rows, so that both
    # products are batched BLAS matmuls over (batch, KV head) without repeating K or V.
    qg = q.transpose(0, 2, 1, 3).reshape(bsz, hkv, r * lq, q.shape[3])
    logits = np.matmul(qg, k.transpose(0, 2, 3, 1)).reshape(bsz, h, lq, lk)
    logits *= scale  # in place, as every step below: a prompt's logits are megabytes
    if mask is not None:
        m = mask  # (M3, M2, Lq, Lk): head h reads mask head h mod M2
        if m.shape[1] not in (1, h) or m.shape[0] not in (1, bsz):
            m = m[np.arange(bsz) % m.shape[0]][:, np.arange(h) % m.shape[1]]
        logits += m
    with np.errstate(invalid="ignore", over="ignore"):
        mx = logits.max(-1, keepdims=True)
        if sinks is not None:
            mx = np.maximum(mx, sinks[None, :, None, None])
        e = np.subtract(logits, mx, out=logits)
        np.exp(e, out=e)
        den = e.sum(-1, keepdims=True, dtype=F32)
        if sinks is not None:
            den = den + np.exp(sinks[None, :, None, None] - mx)
        probs = np.divide(e, den, out=e)
    if round_p:
        probs = f16_round(probs)
    o = np.matmul(probs.reshape(bsz, hkv, r * lq, lk), v.transpose(0, 2, 1, 3))
    out: np.ndarray = o.reshape(bsz, h, lq, v.shape[3]).transpose(0, 2, 1, 3)
    return out
