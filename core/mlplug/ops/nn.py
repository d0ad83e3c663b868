"""Neural-network ops: pooling, convolutions, im2col, state-space ops, interpolation, RoPE and
scaled dot-product attention."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._tensorbase import TensorBase, as_tensor
from ..dtypes import DType
from ..errors import NotSupportedError, ShapeError
from ._build import (
    F32,
    F32_ONLY,
    FLOATS,
    I32_ONLY,
    OTHER,
    as_int,
    contiguous,
    node,
    require,
    require_dtype,
    rows_contiguous,
    shape_error,
)
from .records import (
    AttentionParams,
    Conv3dParams,
    Im2colParams,
    InterpolateParams,
    Pool2dParams,
    RopeParams,
)

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

#: RoPE modes ggml's CPU kernel accepts: normal, neox, mrope, vision, imrope.
ROPE_MODES = (0, 2, 8, 24, 40)
_MROPE = (8, 24, 40)


def _sections(sections: Sequence[int]) -> tuple[int, int, int, int]:
    if not sections:
        return (0, 0, 0, 0)
    s4 = (*(int(s) for s in sections), 0, 0, 0, 0)
    return (s4[0], s4[1], s4[2], s4[3])


@functools.lru_cache(maxsize=256)
def _rope_params(
    dim: int,
    rope_type: int,
    original_context_length: int,
    base: float,
    scale: float,
    extrapolation_factor: float,
    attention_factor: float,
    beta_fast: float,
    beta_slow: float,
    sections: tuple[int, int, int, int],
) -> RopeParams:
    """The record of a rope's settings, zeros replaced by defaults (made once per setting)."""
    return RopeParams(
        int(dim),
        int(rope_type),
        int(original_context_length or 131072),
        float(base),
        float(scale),
        float(extrapolation_factor),
        float(attention_factor or 1.0),
        float(beta_fast or 32.0),
        float(beta_slow or 1.0),
        sections,
    )


def conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    """Output extent of a convolution: ``(size + 2p - d(k-1) - 1) // s + 1``."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _positive(op: str, **values: int) -> None:
    for name, v in values.items():
        if as_int(op, name, v) < 1:
            msg = f"{op}: {name} must be >= 1, got {v}"
            raise ShapeError(msg, op=op)


def _im2col(
    ctx: Context,
    kernel: Tensor,
    image: Tensor,
    s0: int,
    s1: int,
    p0: int,
    p1: int,
    d0: int,
    d1: int,
    dtype: DType,
    op: str,
) -> Tensor:
    _positive(op, s0=s0, s1=s1, d0=d0, d1=d1)
    require(p0 >= 0 and p1 >= 0, op, "padding must be >= 0")
    require_dtype(op, image, F32_ONLY, "image")
    require(
        kernel.ne[2] == image.ne[2],
        op,
        "kernel dim 2 (channels) must equal image dim 2",
        kernel,
        image,
    )
    ow = conv_out(image.ne[0], kernel.ne[0], s0, p0, d0)
    oh = conv_out(image.ne[1], kernel.ne[1], s1, p1, d1)
    require(ow > 0 and oh > 0, op, f"the output would be empty ({ow} x {oh})", kernel, image)
    image = contiguous(ctx, image)
    k = kernel.ne[0] * kernel.ne[1] * kernel.ne[2]
    return node(
        ctx,
        "im2col",
        (kernel, image),
        dtype,
        (k, ow, oh, image.ne[3]),
        Im2colParams(s0, s1, p0, p1, d0, d1),
    )


class NNOps(TensorBase):
    """Pooling, convolution, state-space, interpolation, RoPE and attention Tensor methods."""

    __slots__ = ()

    def avg_pool_2d(self, ctx: Context, k: int, s: int, p: float) -> Tensor:
        """Average-pool dims 0 and 1 with a ``k x k`` window, stride ``s``, padding ``p``.

        The divisor is always ``k * k`` (padding counts as zeros).

        >>> t = ctx.from_floats(np.arange(16), 4, 4)
        >>> y = t.avg_pool_2d(ctx, 2, 2, 0)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((2, 2), [2.5, 4.5, 10.5, 12.5])
        """
        t = as_tensor(self)
        _positive("avg_pool_2d", k=k, s=s)
        require_dtype("avg_pool_2d", t, FLOATS)
        require(p >= 0, "avg_pool_2d", f"padding must be >= 0, got {p}")
        ow = math.trunc((t.ne[0] + 2 * p - k) / s + 1)
        oh = math.trunc((t.ne[1] + 2 * p - k) / s + 1)
        require(ow > 0 and oh > 0, "avg_pool_2d", "the window is larger than the input", t)
        t = contiguous(ctx, t)
        return node(
            ctx,
            "pool_2d",
            (t,),
            DType.F32,
            (ow, oh, t.ne[2], t.ne[3]),
            Pool2dParams("avg", k, s, float(p)),
        )

    def im2col(
        self, ctx: Context, input: Tensor, s0: int, s1: int, p0: int, p1: int, d0: int, d1: int
    ) -> Tensor:
        """Unfold ``input`` image patches for this kernel's shape: ``[C*KH*KW, OW, OH, N]``.

        The receiver is the kernel (only its shape is used); ``input`` is the F32 image.

        >>> kernel = ctx.empty(DType.F32, 2, 2, 1)
        >>> image = ctx.from_floats(np.arange(9), 3, 3, 1)
        >>> y = kernel.im2col(ctx, image, 1, 1, 0, 0, 1, 1)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().reshape(-1, 4).tolist()
        ((4, 2, 2), [[0.0, 1.0, 3.0, 4.0], [1.0, 2.0, 4.0, 5.0],
                     [3.0, 4.0, 6.0, 7.0], [4.0, 5.0, 7.0, 8.0]])
        """
        return _im2col(ctx, as_tensor(self), input, s0, s1, p0, p1, d0, d1, DType.F32, "im2col")

    def conv_2d(
        self, ctx: Context, input: Tensor, s0: int, s1: int, p0: int, p1: int, d0: int, d1: int
    ) -> Tensor:
        """Cross-correlate ``input`` ``[IW, IH, IC, N]`` with this weight ``[KW, KH, IC, OC]``.

        Returns ``[OW, OH, OC, N]`` F32. Index 0 of s/p/d is the width (dim 0).

        >>> w = ctx.from_floats(np.ones(4), 2, 2, 1, 1)
        >>> x = ctx.from_floats(np.arange(9), 3, 3, 1, 1)
        >>> y = w.conv_2d(ctx, x, 1, 1, 0, 0, 1, 1)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((2, 2), [8.0, 12.0, 20.0, 24.0])
        """
        w = as_tensor(self)
        require_dtype("conv_2d", w, FLOATS, "weight")
        col = _im2col(ctx, w, input, s0, s1, p0, p1, d0, d1, w.dtype, "conv_2d")
        k, ow, oh, n = col.ne
        oc = w.ne[3]
        y = col.reshape(ctx, k, ow * oh * n).mulmat(ctx, w.reshape(ctx, k, oc))
        return y.reshape(ctx, ow, oh, n, oc).permute(ctx, 0, 1, 3, 2).contiguous(ctx)

    def conv_3d(
        self,
        ctx: Context,
        input: Tensor,
        c: int,
        s0: int,
        s1: int,
        s2: int,
        p0: int,
        p1: int,
        p2: int,
        d0: int,
        d1: int,
        d2: int,
    ) -> Tensor:
        """Convolve ``input`` ``[IW, IH, ID, N*IC]`` with this weight ``[KW, KH, KD, OC*IC]``.

        The result is reshaped to ``[OC, N]``, which needs a 1x1x1 output (docs/nn.md, section
        'Pooling and convolution').

        >>> w = ctx.from_floats(np.repeat([1, 2], 8), 2, 2, 2, 2)
        >>> x = ctx.from_floats(np.concatenate([np.arange(8), np.ones(8)]), 2, 2, 2, 2)
        >>> y = w.conv_3d(ctx, x, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((2, 2), [28.0, 56.0, 8.0, 16.0])

        :raises ShapeError: when the output is not 1x1x1 or channels do not divide.
        """
        w = as_tensor(self)
        op = "conv_3d"
        _positive(op, c=c, s0=s0, s1=s1, s2=s2, d0=d0, d1=d1, d2=d2)
        require(min(p0, p1, p2) >= 0, op, "padding must be >= 0")
        require_dtype(op, w, FLOATS, "weight")
        require_dtype(op, input, F32_ONLY, "input")
        require(
            w.ne[3] % c == 0 and input.ne[3] % c == 0,
            op,
            f"dim 3 of weight and input must be multiples of c={c}",
            w,
            input,
        )
        ow = conv_out(input.ne[0], w.ne[0], s0, p0, d0)
        oh = conv_out(input.ne[1], w.ne[1], s1, p1, d1)
        od = conv_out(input.ne[2], w.ne[2], s2, p2, d2)
        oc, n = w.ne[3] // c, input.ne[3] // c
        if (ow, oh, od) != (1, 1, 1):
            msg = (
                f"{op}: the output is {ow}x{oh}x{od}; conv_3d reshapes it to [OC, N], which "
                "needs a 1x1x1 output (kernel covering the whole padded input)"
            )
            raise ShapeError(msg, op=op, shapes=(w.shape, input.shape))
        w, x = contiguous(ctx, w), contiguous(ctx, input)
        y = node(
            ctx,
            "conv_3d",
            (w, x),
            DType.F32,
            (ow, oh, od, oc * n),
            Conv3dParams(c, s0, s1, s2, p0, p1, p2, d0, d1, d2),
        )
        return y.reshape(ctx, oc, n)

    def ssm_conv(self, ctx: Context, kernel: Tensor) -> Tensor:
        """Depthwise causal conv of ``[d_conv-1+n_t, d_inner, n_s]`` by ``[d_conv, d_inner]``.

        Returns channel-major ``[d_inner, n_t, n_s]``.

        >>> sx = ctx.from_floats([1, 2, 3, 4], 4, 1, 1)
        >>> y = sx.ssm_conv(ctx, ctx.from_floats([1, 0, -1], 3, 1))
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((1, 2), [-2.0, -2.0])
        """
        sx = as_tensor(self)
        op = "ssm_conv"
        require_dtype(op, sx, F32_ONLY)
        require_dtype(op, kernel, F32_ONLY, "kernel")
        require(
            sx.ne[3] == 1 and kernel.ne[2] == 1 and kernel.ne[3] == 1,
            op,
            "input must be at most 3-D and kernel 2-D",
            sx,
            kernel,
        )
        require(sx.ne[1] == kernel.ne[1], op, "input dim 1 must equal kernel dim 1", sx, kernel)
        n_t = sx.ne[0] - kernel.ne[0] + 1
        require(n_t >= 1, op, "input is shorter than the kernel", sx, kernel)
        sx, kernel = contiguous(ctx, sx), contiguous(ctx, kernel)  # ggml reads dense rows
        return node(ctx, "ssm_conv", (sx, kernel), DType.F32, (sx.ne[1], n_t, sx.ne[2], 1))

    def ssm_scan(
        self, ctx: Context, x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, ids: Tensor
    ) -> Tensor:
        """Run the Mamba selective scan from state pool self; return ``y`` then final states.

        >>> s = ctx.zeros(DType.F32, 1, 1, 1, 1)
        >>> x = ctx.from_floats([1, 2], 1, 1, 2, 1)
        >>> dt = ctx.from_floats([0, 0], 1, 2, 1)
        >>> a = ctx.from_floats([-1], 1, 1)
        >>> b = c = ctx.from_floats([1, 1], 1, 1, 2, 1)
        >>> y = s.ssm_scan(ctx, x, dt, a, b, c, ctx.from_ints([0], 1))
        >>> ctx.compute(y)
        >>> y.shape, [round(v, 4) for v in y.floats().tolist()]
        ((3,), [0.6931, 1.7329, 1.7329])
        """
        s = as_tensor(self)
        op = "ssm_scan"
        for name, t in (("s", s), ("x", x), ("dt", dt), ("A", a), ("B", b), ("C", c)):
            require_dtype(op, t, F32_ONLY, name)
        require_dtype(op, ids, I32_ONLY, "ids")
        d_state, head_dim, n_head = s.ne[0], s.ne[1], s.ne[2]
        n_tok, n_seq = x.ne[2], x.ne[3]
        require(
            x.ne[0] == head_dim and x.ne[1] == n_head,
            op,
            "x must be [head_dim, n_head, tokens, seqs] matching s",
            s,
            x,
        )
        require(
            dt.ne[:3] == (n_head, n_tok, n_seq) and dt.ne[3] == 1,
            op,
            "dt must be [n_head, tokens, seqs]",
            dt,
            x,
        )
        require(
            a.ne[0] in (1, d_state) and a.ne[1] == n_head and a.ne[2:] == (1, 1),
            op,
            "A must be [1 or d_state, n_head]",
            a,
            s,
        )
        require(b.ne == c.ne, op, "B and C must have the same shape", b, c)
        require(
            b.ne[0] == d_state and b.ne[2] == n_tok and b.ne[3] == n_seq,
            op,
            "B must be [d_state, n_group, tokens, seqs]",
            b,
            x,
        )
        require(
            b.ne[1] >= 1 and n_head % b.ne[1] == 0, op, "n_head must be a multiple of n_group", b
        )
        require(ids.ne[0] == n_seq and ids.nelements == n_seq, op, "ids must be [seqs]", ids, x)
        srcs = tuple(contiguous(ctx, t) for t in (s, x, dt, a, b, c)) + (ids,)
        n = x.nelements + d_state * head_dim * n_head * n_seq
        return node(ctx, "ssm_scan", srcs, DType.F32, (n, 1, 1, 1))

    def interpolate(self, ctx: Context, dims: Sequence[int], mode: int) -> Tensor:
        """Resize to exactly ``dims`` (4 extents): nearest (0) or bilinear on dims 0, 1 (1).

        >>> t = ctx.from_floats([0, 10], 2)
        >>> near = t.interpolate(ctx, (4, 1, 1, 1), ml.SamplingMode.NEAREST)
        >>> bilinear = t.interpolate(ctx, (4, 1, 1, 1), ml.SamplingMode.BILINEAR)
        >>> ctx.compute(near, bilinear)
        >>> near.floats().tolist(), bilinear.floats().tolist()
        ([0.0, 0.0, 10.0, 10.0], [0.0, 2.5, 7.5, 10.0])
        """
        t = as_tensor(self)
        if len(dims) != 4:
            msg = f"interpolate: dims must have 4 extents, got {list(dims)}"
            raise ShapeError(msg, op="interpolate", shapes=(t.shape,))
        if int(mode) not in (0, 1):
            raise NotSupportedError(ctx.backend.name, "interpolate", f"sampling mode {mode}")
        _positive("interpolate", **{f"dim{i}": d for i, d in enumerate(dims)})
        require_dtype("interpolate", t, F32_ONLY)
        t = contiguous(ctx, t)
        return node(ctx, "interpolate", (t,), DType.F32, tuple(dims), InterpolateParams(int(mode)))

    def rope(
        self,
        ctx: Context,
        positions: Tensor,
        dim: int,
        base: float,
        scale: float,
        *,
        rope_type: int = 0,
        factors: Tensor | None = None,
        sections: Sequence[int] = (),
        original_context_length: int = 0,
        extrapolation_factor: float = 0.0,
        attention_factor: float = 0.0,
        beta_fast: float = 0.0,
        beta_slow: float = 0.0,
    ) -> Tensor:
        """Rotate pairs of ``[head_dim, heads, tokens, batch]`` by position-dependent angles.

        ``rope_type`` is 0 (normal), 2 (neox), 8 (mrope), 24 (vision) or 40 (imrope);
        ``scale`` is the frequency scale. A zero ``original_context_length``,
        ``attention_factor``, ``beta_fast`` or ``beta_slow`` takes its default (131072, 1, 32, 1);
        a zero ``extrapolation_factor`` switches YaRN off (docs/nn.md, section 'rope').

        >>> x = ctx.from_floats([1, 2, 3, 4], 4, 1, 1)
        >>> pos = ctx.from_ints([1], 1)
        >>> normal = x.rope(ctx, pos, 4, 10000.0, 1.0)
        >>> neox = x.rope(ctx, pos, 4, 10000.0, 1.0, rope_type=2)
        >>> ctx.compute(normal, neox)
        >>> [round(v, 4) for v in normal.floats().tolist()]
        [-1.1426, 1.9221, 2.9599, 4.0298]
        >>> [round(v, 4) for v in neox.floats().tolist()]
        [-1.9841, 1.9599, 2.4624, 4.0198]
        """
        x = as_tensor(self)
        op = "rope"
        if rope_type not in ROPE_MODES:
            raise NotSupportedError(ctx.backend.name, op, f"rope type {rope_type}")
        if x.dtype.is_quantized:
            x = x.cast(ctx, F32)
        require_dtype(op, x, FLOATS)
        require_dtype(op, positions, I32_ONLY, "positions")
        n_pos = x.ne[2] * (4 if rope_type in _MROPE else 1)
        if positions.nelements != n_pos:
            msg = f"positions must hold {n_pos} values (dim 2 of the input is the token axis)"
            raise shape_error(op, msg, x, positions)
        if not (dim > 0 and dim % 2 == 0 and dim <= x.ne[0]):
            raise shape_error(op, f"dim must be even and at most {x.ne[0]}, got {dim}", x)
        if rope_type == 24:
            require(dim * 2 == x.ne[0], op, "vision rope needs dim == head_dim / 2", x)
        secs = _sections(sections)
        if rope_type in _MROPE:
            require(sum(secs) > 0, op, "m-rope modes need sections")
        srcs: tuple[Tensor, ...] = (rows_contiguous(ctx, x), contiguous(ctx, positions))
        if factors is not None:
            require_dtype(op, factors, F32_ONLY, "factors")
            require(factors.nelements >= dim // 2, op, f"factors need {dim // 2} values", factors)
            srcs += (factors,)
        settings = (
            dim,
            rope_type,
            original_context_length,
            base,
            scale,
            extrapolation_factor,
            attention_factor,
            beta_fast,
            beta_slow,
            secs,
        )
        try:
            params = _rope_params(*settings)
        except TypeError:  # an unhashable number (a 0-d array, say): made without the memo
            params = _rope_params.__wrapped__(*settings)
        return node(ctx, "rope", srcs, x.dtype, x.ne, params)

    def scaled_dot_product_attention(
        self,
        ctx: Context,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None,
        sinks: Tensor | None,
        vmla: Tensor | None,
        scale: float,
        cache_config_applied: bool,
    ) -> Tensor:
        """Attention of this query ``[d_k, H, L_q]`` over ``key``/``value``; ``[d_out, H, L_q]``.

        Query head h uses kv head ``h // (H / H_kv)``; ``mask`` ``[L_k, >=L_q]`` is added to the
        scaled logits; ``sinks`` ``[H]`` join the softmax denominator only; ``vmla`` maps each
        head's output through ``[d_v, d_out, H_v]``. With ``cache_config_applied`` and a
        backend whose cache config has ``permuted_v``, ``value`` is ``[L_k, d_v, H_kv]``.

        >>> q = ctx.from_floats([1, 2], 1, 2, 1)
        >>> k = ctx.from_floats([1, 0], 1, 1, 2)
        >>> v = ctx.from_floats([10, 20], 1, 1, 2)
        >>> sinks = ctx.from_floats([0.5, -1], 2)
        >>> y = q.scaled_dot_product_attention(ctx, k, v, None, None, None, 1.0, False)
        >>> ys = q.scaled_dot_product_attention(ctx, k, v, None, sinks, None, 1.0, False)
        >>> ctx.compute(y, ys)
        >>> y.shape, [round(v, 4) for v in y.floats().tolist()]
        ((1, 2), [12.6894, 11.192])
        >>> [round(v, 4) for v in ys.floats().tolist()]
        [8.7913, 10.7219]
        """
        q = as_tensor(self)
        op = "scaled_dot_product_attention"
        cfg = ctx.backend.cache_config()
        require_dtype(op, q, F32_ONLY, "query")
        require_dtype(op, key, FLOATS, "key")
        require_dtype(op, value, FLOATS, "value")
        if not cache_config_applied and cfg.permuted_v:
            value = value.permute(ctx, 1, 2, 0, 3).contiguous(ctx)
        if cfg.permuted_v:
            value = value.permute(ctx, 2, 0, 1, 3)  # back to [d_v, H_kv, L_k] as a view
        d_k, h, l_q, batch = q.ne
        require(key.ne[0] == d_k, op, "query and key dim 0 (d_k) must match", q, key)
        require(
            key.ne[1] >= 1 and h % key.ne[1] == 0,
            op,
            "query heads must be a multiple of key heads",
            q,
            key,
        )
        require(
            value.ne[1] == key.ne[1] and value.ne[2] == key.ne[2],
            op,
            "key and value must agree in heads and length",
            key,
            value,
        )
        require(key.ne[3] == batch and value.ne[3] == batch, op, "batch (dim 3) must match", q, key)
        srcs = [q, key, value]
        if mask is not None:
            require_dtype(op, mask, FLOATS, "mask")
            require(
                mask.ne[0] == key.ne[2] and mask.ne[1] >= l_q,
                op,
                "mask must be [L_k, >= L_q]",
                mask,
                key,
            )
            require(
                h % mask.ne[2] == 0 and batch % mask.ne[3] == 0,
                op,
                "mask dims 2, 3 must divide heads and batch",
                mask,
                q,
            )
            if not cache_config_applied and cfg.mask_dtype not in (OTHER, mask.dtype):
                mask = mask.cast(ctx, cfg.mask_dtype)
            srcs.append(contiguous(ctx, mask))
        if sinks is not None:
            require_dtype(op, sinks, F32_ONLY, "sinks")
            require(
                sinks.nelements == h,
                op,
                f"sinks must hold one value per query head ({h})",
                sinks,
                q,
            )
            srcs.append(contiguous(ctx, sinks))
        out = node(
            ctx,
            "scaled_dot_product_attention",
            tuple(srcs),
            F32,
            (value.ne[0], h, l_q, batch),
            AttentionParams(float(scale), mask is not None, sinks is not None),
        )
        if vmla is None:
            return out
        require(
            vmla.ne[0] == value.ne[0] and h % vmla.ne[2] == 0,
            op,
            "vmla must be [d_v, d_out, H_v] with H a multiple of H_v",
            vmla,
            value,
        )
        o = out.permute(ctx, 0, 2, 1, 3)
        return vmla.mulmat(ctx, o).permute(ctx, 0, 2, 1, 3).contiguous(ctx)
