"""Neural-network kernels: pooling, im2col, 3-D convolution, state-space ops, interpolation,
RoPE and scaled dot-product attention."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Final

from mlplug.plugin_api import (
    TRAITS,
    AttentionParams,
    Conv3dParams,
    DType,
    Im2colParams,
    InterpolateParams,
    Pool2dParams,
    RopeParams,
)

from ._layout import dim0_packed, mul_mat_operand, packed_src
from ._registry import Builder, implements
from .layout import ggml_type
from .linalg import GGML_PREC_F32

if TYPE_CHECKING:
    from mlplug import Tensor

#: enum ggml_op_pool
GGML_OP_POOL_AVG: Final = 1
#: RoPE modes that go through ggml_rope_multi (mrope, vision, imrope).
_MULTI_ROPE: Final = frozenset({8, 24, 40})
_GGML_F16: Final = TRAITS[DType.F16].ggml_type


@implements("pool_2d", needs=("pool_2d",))
def pool_2d(b: Builder, t: Tensor) -> int:
    """``ggml_pool_2d(a, AVG, k, k, s, s, p, p)``."""
    r = Pool2dParams.of(t)
    k, s, p = r.k, r.s, r.p
    return b.lib.ggml_pool_2d(b.ctx, b.src(t, 0), GGML_OP_POOL_AVG, k, k, s, s, p, p)  # type: ignore[no-any-return]


@implements("im2col", needs=("im2col",))
def im2col(b: Builder, t: Tensor) -> int:
    """``ggml_im2col(kernel, image, s0, s1, p0, p1, d0, d1, is_2D=True, node dtype)``."""
    r = Im2colParams.of(t)
    s0, s1, p0, p1, d0, d1 = r.s0, r.s1, r.p0, r.p1, r.d0, r.d1
    return b.lib.ggml_im2col(  # type: ignore[no-any-return]
        b.ctx, b.src(t, 0), b.src(t, 1), s0, s1, p0, p1, d0, d1, True, ggml_type(t)
    )


@implements("conv_3d", needs=("im2col_3d", "reshape_4d", "mul_mat", "permute", "cont"))
def conv_3d(b: Builder, t: Tensor) -> int:
    """3-D convolution composed as ollama's ggml composed ``ggml_conv_3d``: ``im2col_3d``
    into the weight's type, ``mul_mat``, then reshape/permute/cont to ``[OW, OH, OD, OC*N]``.

    Today's ``ggml_conv_3d`` always unfolds into F16 (rounding F32 data); ollama v0.17.5's ggml
    unfolded into the weight's type, which this keeps.
    """
    r = Conv3dParams.of(t)
    c, s0, s1, s2 = r.c, r.s0, r.s1, r.s2
    p0, p1, p2, d0, d1, d2 = r.p0, r.p1, r.p2, r.d0, r.d1, r.d2
    lib, ctx = b.lib, b.ctx
    w, x = t.src
    ow, oh, od = t.ne[0], t.ne[1], t.ne[2]
    oc, n = w.ne[3] // c, x.ne[3] // c
    k = w.ne[0] * w.ne[1] * w.ne[2] * c
    col = lib.ggml_im2col_3d(
        ctx, b.src(t, 0), b.src(t, 1), c, s0, s1, s2, p0, p1, p2, d0, d1, d2, ggml_type(w)
    )  # [K, OW, OH, OD*N]
    y = lib.ggml_mul_mat(
        ctx,
        lib.ggml_reshape_4d(ctx, col, k, ow * oh * od * n, 1, 1),
        lib.ggml_reshape_4d(ctx, b.src(t, 0), k, oc, 1, 1),
    )  # [OW*OH*OD*N, OC]
    y = lib.ggml_reshape_4d(ctx, y, ow * oh, od, n, oc)
    y = lib.ggml_cont(ctx, lib.ggml_permute(ctx, y, 0, 1, 3, 2))  # [OW*OH, OD, OC, N]
    return lib.ggml_reshape_4d(ctx, y, ow, oh, od, oc * n)  # type: ignore[no-any-return]


@implements("ssm_conv", needs=("ssm_conv",))
def ssm_conv(b: Builder, t: Tensor) -> int:
    """``ggml_ssm_conv(sx, kernel)`` (the CPU kernel needs ``sx`` contiguous: rows packed)."""
    sx = packed_src(b, t, 0, rows=True)
    return b.lib.ggml_ssm_conv(b.ctx, sx, b.src(t, 1))  # type: ignore[no-any-return]


@implements("ssm_scan", needs=("ssm_scan",))
def ssm_scan(b: Builder, t: Tensor) -> int:
    """``ggml_ssm_scan(s, x, dt, A, B, C, ids, K=1)``: y then the final states, packed."""
    srcs = [b.src(t, i) for i in range(7)]
    return b.lib.ggml_ssm_scan(b.ctx, *srcs, 1)  # type: ignore[no-any-return]


@implements("interpolate", needs=("interpolate",))
def interpolate(b: Builder, t: Tensor) -> int:
    """``ggml_interpolate(a, ne0, ne1, ne2, ne3, NEAREST | BILINEAR)``."""
    ne, mode = t.ne, InterpolateParams.of(t).mode
    ptr: int = b.lib.ggml_interpolate(b.ctx, b.src(t, 0), ne[0], ne[1], ne[2], ne[3], mode)
    return ptr


@implements("rope", needs=("rope_ext", "rope_multi", "reshape_4d", "cont"))
def rope(b: Builder, t: Tensor) -> int:
    """``ggml_rope_ext`` (normal, neox) or ``ggml_rope_multi`` (mrope, vision, imrope)."""
    r = RopeParams.of(t)
    n_dims, mode, n_ctx, base = r.n_dims, r.mode, r.n_ctx_orig, r.base
    fscale, ext, attn, bfast, bslow = (
        r.freq_scale,
        r.ext_factor,
        r.attn_factor,
        r.beta_fast,
        r.beta_slow,
    )
    lib, ctx = b.lib, b.ctx
    x = b.src(t, 0)
    # ggml wants positions as a vector and the factors' values along dim 0
    p = t.src[1]
    pos = b.src(t, 1)
    if p.ne[0] != p.nelements:
        pos = lib.ggml_reshape_4d(ctx, pos, p.nelements, 1, 1, 1)  # contiguous (the core's)
    factors = None
    if len(t.src) > 2:
        f = t.src[2]
        factors = b.src(t, 2)
        if f.ne[0] != f.nelements or not dim0_packed(f):
            if not f.is_contiguous():
                factors = lib.ggml_cont(ctx, factors)
            factors = lib.ggml_reshape_4d(ctx, factors, f.nelements, 1, 1, 1)
    if mode in _MULTI_ROPE:
        sections = (ctypes.c_int * 4)(*r.sections)
        return b.lib.ggml_rope_multi(  # type: ignore[no-any-return]
            b.ctx,
            x,
            pos,
            factors,
            n_dims,
            sections,
            mode,
            n_ctx,
            base,
            fscale,
            ext,
            attn,
            bfast,
            bslow,
        )
    return b.lib.ggml_rope_ext(  # type: ignore[no-any-return]
        b.ctx, x, pos, factors, n_dims, mode, n_ctx, base, fscale, ext, attn, bfast, bslow
    )


@implements(
    "scaled_dot_product_attention",
    needs=(
        "permute",
        "cont",
        "cast",
        "mul_mat",
        "mul_mat_set_prec",
        "soft_max_ext",
        "soft_max_add_sinks",
        "flash_attn_ext",
        "flash_attn_ext_add_sinks",
        "flash_attn_ext_set_prec",
    ),
)
def scaled_dot_product_attention(b: Builder, t: Tensor) -> int:
    """Attention as ollama builds it: ``ggml_flash_attn_ext`` when flash attention is
    enabled, else ``mul_mat`` (F32) + ``soft_max_ext`` (+ sinks) + ``mul_mat`` over V
    permuted to ``[L_k, d_v, H_kv]``, then permute + cont to ``[d_v, H, L_q]``."""
    r = AttentionParams.of(t)
    scale, has_mask, has_sinks = r.scale, r.has_mask, r.has_sinks
    lib, ctx = b.lib, b.ctx
    # Both paths need dim 0 of Q, K and V packed; mul_mat also a K that is not transposed
    # (mul_mat_operand copies one).
    q = lib.ggml_permute(ctx, packed_src(b, t, 0), 0, 2, 1, 3)  # [d_k, L_q, H, B]
    k = lib.ggml_permute(ctx, packed_src(b, t, 1), 0, 2, 1, 3)  # [d_k, L_k, H_kv, B]
    i = 3
    mask = None
    if has_mask:
        mask = b.src(t, i)
        mask_dtype = t.src[i].dtype
        i += 1
    sinks = b.src(t, i) if has_sinks else None
    if b.flash:
        if mask is not None and mask_dtype != DType.F16:
            mask = lib.ggml_cast(ctx, mask, _GGML_F16)  # the flash kernel reads an F16 mask
        v = lib.ggml_permute(ctx, packed_src(b, t, 2), 0, 2, 1, 3)  # [d_v, L_k, H_kv, B]
        out: int = lib.ggml_flash_attn_ext(ctx, q, k, v, mask, scale, 0.0, 0.0)
        if sinks is not None:
            lib.ggml_flash_attn_ext_add_sinks(out, sinks)
        lib.ggml_flash_attn_ext_set_prec(out, GGML_PREC_F32)
        return out  # [d_v, H, L_q, B]
    kq = lib.ggml_mul_mat(ctx, mul_mat_operand(b, k), q)  # [L_k, L_q, H, B]
    lib.ggml_mul_mat_set_prec(kq, GGML_PREC_F32)
    kq = lib.ggml_soft_max_ext(ctx, kq, mask, scale, 0.0)
    if sinks is not None:
        lib.ggml_soft_max_add_sinks(kq, sinks)
    v = lib.ggml_permute(ctx, b.src(t, 2), 1, 2, 0, 3)  # [L_k, d_v, H_kv, B]
    # The permuted view is used as is when V was stored permuted (L_k fastest), as the KV
    # cache does for this backend; mul_mat_operand copies any other.
    kqv = lib.ggml_mul_mat(ctx, mul_mat_operand(b, v), kq)  # [d_v, L_q, H, B]
    return lib.ggml_cont(ctx, lib.ggml_permute(ctx, kqv, 0, 2, 1, 3))  # type: ignore[no-any-return]
