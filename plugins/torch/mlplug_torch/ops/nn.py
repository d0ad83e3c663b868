"""Pooling, im2col, conv, state-space, interpolation and RoPE kernels.

ggml's ``[W, H, C, N]`` tensors are torch's ``(N, C, H, W)`` in memory, so pooling and
convolutions map onto ``F.avg_pool2d``, ``F.unfold`` and ``F.conv3d`` with the parameter
tuples reversed (ggml's index 0 is the width). Interpolation and RoPE reproduce ggml's
float32 index and angle arithmetic exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from mlplug.plugin_api import (
    MROPE_MODES,
    Conv3dParams,
    DType,
    Im2colParams,
    InterpolateParams,
    Pool2dParams,
    RopeParams,
    Step,
    bilinear_axis,
    nearest_index,
    rope_n_pairs,
    rope_pairs,
    rope_rows,
    rope_theta_scale,
    rope_thetas,
    yarn_mix,
)

from ._registry import implements, prepares
from .elementwise import f16_round, fresh_f32

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import TorchContext

F32 = np.float32


@implements("pool_2d")
def pool_2d(ctx: TorchContext, t: Tensor) -> None:
    """Average pooling over dims 0, 1; the divisor is always ``k * k``."""
    r = Pool2dParams.of(t)
    k, s, p = r.k, r.s, r.p
    x = ctx.values(t.src[0])  # (N, C, H, W)
    ow, oh = t.ne[0], t.ne[1]
    pi = int(p)
    h, w = x.shape[2], x.shape[3]
    # an integer padding sizes the output as torch does (the core's trunc is a floor here:
    # a positive output needs h + 2p >= k); torch allows padding up to half the kernel
    if pi == p and 2 * pi <= k:
        ctx.put(
            t, F.avg_pool2d(x, k, s, padding=pi, count_include_pad=True, divisor_override=k * k)
        )
        return
    # ggml sizes the output with the float padding but offsets windows by int(p)
    extra_h = max(0, (oh - 1) * s + k - (h + pi))
    extra_w = max(0, (ow - 1) * s + k - (w + pi))
    xp = F.pad(x, (pi, pi + extra_w, pi, pi + extra_h))
    acc = torch.zeros((x.shape[0], x.shape[1], oh, ow), dtype=torch.float32, device=x.device)
    for ky in range(k):
        for kx in range(k):
            acc = acc + xp[:, :, ky : ky + s * oh : s, kx : kx + s * ow : s][:, :, :oh, :ow]
    ctx.put(t, acc / float(k * k))


@implements("im2col")
def im2col(ctx: TorchContext, t: Tensor) -> None:
    """Unfold image patches into ``[C*KH*KW, OW, OH, N]`` (kernel-width index fastest)."""
    kernel, image = t.src
    r = Im2colParams.of(t)
    s0, s1, p0, p1, d0, d1 = r.s0, r.s1, r.p0, r.p1, r.d0, r.d1
    kw, kh = kernel.ne[0], kernel.ne[1]
    ow, oh = t.ne[1], t.ne[2]
    x = ctx.values(image)  # (N, C, IH, IW)
    cols = F.unfold(x, (kh, kw), dilation=(d1, d0), padding=(p1, p0), stride=(s1, s0))
    ctx.put(t, cols.transpose(1, 2).reshape(x.shape[0], oh, ow, t.ne[0]))


@implements("conv_3d")
def conv_3d(ctx: TorchContext, t: Tensor) -> None:
    """3-D cross-correlation with channels merged into dim 3 (``ic + IC * n``)."""
    w, x = t.src
    r = Conv3dParams.of(t)
    c, s0, s1, s2 = r.c, r.s0, r.s1, r.s2
    p0, p1, p2, d0, d1, d2 = r.p0, r.p1, r.p2, r.d0, r.d1, r.d2
    wv = ctx.values(w)  # (OC*IC, KD, KH, KW)
    xv = ctx.values(x)  # (N*IC, ID, IH, IW)
    if w.dtype == DType.F16:
        xv = f16_round(xv)  # ggml's im2col buffer has the weight's dtype
    oc, n = w.ne[3] // c, x.ne[3] // c
    y = F.conv3d(
        xv.reshape(n, c, *xv.shape[1:]),
        wv.reshape(oc, c, *wv.shape[1:]),
        stride=(s2, s1, s0),
        padding=(p2, p1, p0),
        dilation=(d2, d1, d0),
    )
    ctx.put(t, y.reshape(n * oc, *y.shape[2:]))


@implements("ssm_conv")
def ssm_conv(ctx: TorchContext, t: Tensor) -> None:
    """Depthwise causal conv; output channel-major ``[d_inner, n_t, n_s]``."""
    sx, kernel = t.src
    x = ctx.values(sx)[0]  # (n_s, D, T + K - 1)
    k = ctx.values(kernel)[0, 0]  # (D, K)
    win = x.unfold(2, k.shape[1], 1)  # (n_s, D, n_t, K)
    ctx.put(t, torch.einsum("sdtk,dk->std", win, k).unsqueeze(0))


@implements("ssm_scan")
def ssm_scan(ctx: TorchContext, t: Tensor) -> None:
    """Mamba selective scan; output ``y`` then the final states, packed 1-D."""
    s_t, x_t, dt_t, a_t, b_t, c_t, ids_t = t.src
    s = ctx.values(s_t)  # (slots, H, P, N)
    x = ctx.values(x_t)  # (Q, T, H, P)
    dt = ctx.values(dt_t)[0]  # (Q, T, H)
    a = ctx.values(a_t)[0, 0]  # (H, 1 or N)
    bm = ctx.values(b_t)  # (Q, T, G, N)
    cm = ctx.values(c_t)
    ids = ctx.indices(ids_t, s.shape[0], "ssm_scan").reshape(-1)
    _n_seq, n_tok, n_head, _hd = x.shape
    group = torch.arange(n_head, device=x.device) // (n_head // bm.shape[2])
    st = s[ids]  # (Q, H, P, N)
    ys = []
    for tok in range(n_tok):
        v = dt[:, tok]  # (Q, H)
        delta = torch.where(v > 20, v, torch.log(1.0 + torch.exp(v)))
        decay = torch.exp(delta[:, :, None] * a)[:, :, None, :]  # (Q, H, 1, 1|N)
        bh, ch = bm[:, tok][:, group], cm[:, tok][:, group]  # (Q, H, N)
        st = st * decay + bh[:, :, None, :] * (x[:, tok][..., None] * delta[:, :, None, None])
        ys.append((st * ch[:, :, None, :]).sum(dim=-1))  # (Q, H, P)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(x.shape)
    ctx.put(t, torch.cat((y.reshape(-1), st.reshape(-1))).reshape(1, 1, 1, -1))


@implements("interpolate")
def interpolate(ctx: TorchContext, t: Tensor) -> None:
    """Nearest (float32 index rule, all dims) or half-pixel bilinear on dims 0, 1."""
    x = ctx.values(t.src[0])  # (n3, n2, n1, n0)
    ne_in, ne_out = t.src[0].ne, t.ne
    dev = x.device

    def idx(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(dev)

    x = x.index_select(0, idx(nearest_index(ne_out[3], ne_in[3])))
    x = x.index_select(1, idx(nearest_index(ne_out[2], ne_in[2])))
    if InterpolateParams.of(t).mode == 0:
        x = x.index_select(2, idx(nearest_index(ne_out[1], ne_in[1])))
        ctx.put(t, x.index_select(3, idx(nearest_index(ne_out[0], ne_in[0]))))
        return
    y0, y1, fy = (idx(v) for v in bilinear_axis(ne_out[1], ne_in[1]))
    x0, x1, fx = (idx(v) for v in bilinear_axis(ne_out[0], ne_in[0]))
    r0, r1 = x.index_select(2, y0), x.index_select(2, y1)
    a, b = r0.index_select(3, x0), r0.index_select(3, x1)
    c, d = r1.index_select(3, x0), r1.index_select(3, x1)
    fy_, fx_ = fy[:, None], fx[None, :]
    gx, gy = 1.0 - fx_, 1.0 - fy_
    ctx.put(t, a * gx * gy + b * fx_ * gy + c * gx * fy_ + d * fx_ * fy_)


def _traced_thetas(
    pos: torch.Tensor,
    n_pairs: int,
    p: RopeParams,
    theta_scale: float,
    factors: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`mlplug.plugin_api.rope_thetas` in torch ops (while tracing, or on a GPU)."""
    mrope = p.mode in MROPE_MODES
    n_tok = pos.shape[-1] // (4 if mrope else 1)
    axes = pos.reshape(4 if mrope else 1, n_tok).float()
    cur = axes
    cols = []
    for k, (row, j) in enumerate(rope_rows(n_pairs, p.mode, p.sections)):
        if j >= 0:  # vision: the power restarts at each section
            cur = torch.cat((cur[:j], axes[j : j + 1], cur[j + 1 :]))
        th = cur[row]
        cols.append(th if factors is None else th / factors[k])
        cur = cur * theta_scale
    return torch.stack(cols, dim=1)  # (n_tok, n_pairs)


def rope_angles(
    ctx: TorchContext,
    pos: torch.Tensor,
    n_pairs: int,
    params: RopeParams,
    factors: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``cos``, ``sin`` ``(n_tokens, n_pairs)`` as ggml's CPU computes them.

    The angle of pair k is the position times ``theta_scale`` k times, each product rounded
    to float32 (ggml's recurrence), divided by the frequency factor; YaRN as docs/nn.md defines it.
    """
    p = params
    n_dims, mode, base, fscale = p.n_dims, p.mode, p.base, p.freq_scale
    theta_scale = rope_theta_scale(base, n_dims)
    if not ctx.tracing and pos.device.type == "cpu":
        # the float32 recurrence in numpy: one ufunc call per pair, a few times cheaper than
        # torch's per-op cost (Gemma 3: 128 pairs, two bases per decode step)
        fac = None if factors is None else factors.numpy()
        theta = torch.from_numpy(
            rope_thetas(pos.numpy(), n_pairs, mode, p.sections, theta_scale, fac)
        )
    else:
        theta = _traced_thetas(pos, n_pairs, p, float(theta_scale), factors)
    ang = theta * float(F32(fscale))
    mix, mscale = yarn_mix(
        n_pairs,
        n_dims,
        p.n_ctx_orig,
        base,
        fscale,
        p.ext_factor,
        p.attn_factor,
        p.beta_fast,
        p.beta_slow,
    )
    if mix is not None:
        w = torch.from_numpy(mix).to(ctx.device)
        ang = ang * (1.0 - w) + theta * w
    m = float(mscale)
    return torch.cos(ang) * m, torch.sin(ang) * m


def _full_tables(
    ctx: TorchContext, cs: tuple[torch.Tensor, torch.Tensor], n_pairs: int, mode: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin per value (broadcastable over batch and heads): a whole head rotates
    as ``x * c + partners(x) * s`` (:func:`_partners`)."""
    pair, _, sign = (torch.tensor(a, device=ctx.device) for a in rope_pairs(n_pairs, mode))
    c, s = cs[0][:, pair], cs[1][:, pair] * sign
    return c[None, :, None, :], s[None, :, None, :]


def _partners(x: torch.Tensor, n_pairs: int, mode: int) -> torch.Tensor:
    """Each value's pair partner (``rope_pairs``' ``partner``) by slices, not a gather: the two
    values of each adjacent pair swapped (mode 0), or the two halves swapped (the others). A
    Gemma 3 prompt's 512 x 4 x 256 query: 1.1 ms by ``index_select``, 31 us by halves."""
    if mode == 0:
        xv = x.reshape(*x.shape[:-1], n_pairs, 2)
        return torch.stack((xv[..., 1], xv[..., 0]), dim=-1).reshape(x.shape)
    return torch.cat((x[..., n_pairs:], x[..., :n_pairs]), dim=-1)


def _rope_tables(ctx: TorchContext, t: Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``(n_tokens, n_pairs)`` of ``t``'s positions, made once per compute for
    every node with the same positions, factors and parameters (each layer's q and k)."""
    pos_t = t.src[1]
    fac_t = t.src[2] if len(t.src) > 2 else None
    params = RopeParams.of(t)
    n_pairs = rope_n_pairs(params.n_dims, params.mode)
    key = ("rope", id(pos_t), None if fac_t is None else id(fac_t), n_pairs, params)

    def angles() -> tuple[torch.Tensor, torch.Tensor]:
        factors = None if fac_t is None else ctx.values(fac_t).reshape(-1)
        return rope_angles(ctx, ctx.arr(pos_t).reshape(-1), n_pairs, params, factors)

    return ctx.shared(key, angles)


def _rotation(ctx: TorchContext, t: Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin per value, for a rope that rotates every value (see
    :func:`_full_tables`), shared as :func:`_rope_tables`' are."""
    params = RopeParams.of(t)
    n_pairs, mode = rope_n_pairs(params.n_dims, params.mode), params.mode
    key = ("rope-full", id(t.src[1]), id(t.src[2]) if len(t.src) > 2 else None, params)
    return ctx.shared(key, lambda: _full_tables(ctx, _rope_tables(ctx, t), n_pairs, mode))


@implements("rope")
def rope(ctx: TorchContext, t: Tensor) -> None:
    """Rotary position embedding (normal, neox, mrope, vision, imrope)."""
    params = RopeParams.of(t)
    n_dims, mode = params.n_dims, params.mode
    n_pairs = rope_n_pairs(n_dims, mode)
    x = ctx.values(t.src[0])  # (B, T, H, D)
    if x.shape[-1] == 2 * n_pairs:  # every value rotates: its partners, two products
        c, s = _rotation(ctx, t)
        ctx.put(t, x * c + _partners(x, n_pairs, mode) * s)
        return
    cs = _rope_tables(ctx, t)
    cos, sin = cs[0][None, :, None, :], cs[1][None, :, None, :]
    if mode == 0:
        u, v = x[..., 0:n_dims:2], x[..., 1:n_dims:2]
        pairs = torch.stack((u * cos - v * sin, u * sin + v * cos), dim=-1)
        rot = pairs.reshape(*x.shape[:3], n_dims)
        y = torch.cat((rot, x[..., n_dims:]), dim=-1)
    else:
        half = n_pairs
        u, v = x[..., :half], x[..., half : 2 * half]
        y = torch.cat((u * cos - v * sin, u * sin + v * cos, x[..., 2 * half :]), dim=-1)
    ctx.put(t, y)


@prepares(rope)
def _prepare_rope(ctx: TorchContext, t: Tensor) -> Step | None:
    """An F32 rope that rotates every value: the two products written in place."""
    params = RopeParams.of(t)
    n_pairs, mode = rope_n_pairs(params.n_dims, params.mode), params.mode
    x_t = t.src[0]
    if not fresh_f32(t, x_t) or x_t.ne[0] != 2 * n_pairs:
        return None
    x, out = ctx.arr(x_t), ctx.arr(t)

    def step() -> None:
        c, s = _rotation(ctx, t)
        torch.add(x * c, _partners(x, n_pairs, mode) * s, out=out)

    return step
