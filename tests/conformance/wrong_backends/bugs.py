"""Deliberately wrong backends: cpu_numpy with ONE kernel replaced by a plausible bug.

Each :class:`Wrong` names its bug, the kernels it replaces (``None`` removes a kernel: the op
becomes unsupported), the ops whose cases it runs, and the case ids (globs) that must catch it.
:func:`backend_class` derives the backend class; the tests register it in process under
:attr:`Wrong.name` for the duration of one test (never as an installed entry point).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplug import Backend
from mlplug.plugin_api import (
    TRAITS,
    AttentionParams,
    Conv3dParams,
    DType,
    Im2colParams,
    Pool2dParams,
    RopeParams,
)
from mlplug_cpu_numpy.backend import CpuNumpyBackend
from mlplug_cpu_numpy.ops import KERNELS
from mlplug_cpu_numpy.ops.elementwise import tile_to
from mlplug_cpu_numpy.ops.linalg import _right
from mlplug_cpu_numpy.ops.nn import _patches

F32 = np.float32
Kernel = Callable[[Any, Any], None]


@dataclass(frozen=True)
class Wrong:
    """One wrong backend: its bug, replaced kernels, the ops to run and the cases that catch it.

    ``catch``: globs over case ids; each must match at least one case of ``ops`` and every
    matched case must fail. Empty: at least one case of ``ops`` must fail.
    """

    name: str
    bug: str
    kernels: Mapping[str, Kernel | None]
    ops: tuple[str, ...]
    catch: tuple[str, ...] = ()


def backend_class(wrong: Wrong) -> type[Backend]:
    """Return cpu_numpy's backend class with ``wrong``'s kernels replaced (or removed)."""
    kernels = {op: k for op, k in KERNELS.items() if op not in wrong.kernels}
    kernels.update({op: k for op, k in wrong.kernels.items() if k is not None})

    def known_failures(self: Backend) -> dict[str, str]:
        return {}

    return type(
        f"Wrong_{wrong.name}",
        (CpuNumpyBackend,),
        {"name": wrong.name, "kernels": kernels, "known_failures": known_failures},
    )


# -- softmax and attention ----------------------------------------------------------------------
def softmax_no_max(ctx: Any, t: Any) -> None:
    """Softmax without subtracting the row maximum (overflows for logits above ~88)."""
    e = np.exp(ctx.values(t.src[0]))
    ctx.arr(t)[...] = e / e.sum(axis=-1, keepdims=True, dtype=F32)


def _sdpa(*, subtract_max: bool = True, gqa_tile: bool = False) -> Kernel:
    def kernel(ctx: Any, t: Any) -> None:
        p = AttentionParams.of(t)
        q_t, k_t, v_t = t.src[:3]
        rest = list(t.src[3:])
        mask = ctx.values(rest.pop(0)) if p.has_mask else None
        sinks = ctx.values(rest.pop(0)).reshape(-1) if p.has_sinks else None
        q, k, v = ctx.values(q_t), ctx.values(k_t), ctx.values(v_t)
        if k_t.dtype == DType.F16:
            q = q.astype(np.float16).astype(F32)
        h, r = q.shape[2], q.shape[2] // k.shape[2]
        if r > 1 and gqa_tile:  # head i reads kv head i % Hkv instead of i // r
            k, v = np.tile(k, (1, 1, r, 1)), np.tile(v, (1, 1, r, 1))
        elif r > 1:
            k, v = np.repeat(k, r, axis=2), np.repeat(v, r, axis=2)
        logits = np.einsum("bnhd,bjhd->bhnj", q, k, dtype=F32) * F32(p.scale)
        if mask is not None:
            m = mask[:, :, : q.shape[1], :]
            logits = logits + m[np.arange(q.shape[0]) % m.shape[0]][:, np.arange(h) % m.shape[1]]
        mx = logits.max(-1, keepdims=True) if subtract_max else np.zeros_like(logits[..., :1])
        if sinks is not None and subtract_max:
            mx = np.maximum(mx, sinks[None, :, None, None])
        e = np.exp(logits - mx)
        den = e.sum(-1, keepdims=True, dtype=F32)
        if sinks is not None:
            den = den + np.exp(sinks[None, :, None, None] - mx)
        w = e / den
        if v_t.dtype == DType.F16:
            w = w.astype(np.float16).astype(F32)
        ctx.put(t, np.einsum("bhnj,bjhe->bnhe", w, v, dtype=F32))

    return kernel


# -- matrix products ----------------------------------------------------------------------------
def _mulmat(*, tile3: bool = False, last_block: float = 1.0) -> Kernel:
    def kernel(ctx: Any, t: Any) -> None:
        a, b = t.src
        av = ctx.values(a)
        if a.dtype.is_quantized and last_block != 1.0:  # one block's scale read wrong
            av = av.copy()
            av[..., -TRAITS[a.dtype].block_size :] *= F32(last_block)
        bv = _right(ctx, a, b)
        r2, r3 = b.ne[2] // a.ne[2], b.ne[3] // a.ne[3]
        if r2 > 1:
            av = np.repeat(av, r2, axis=1)
        if r3 > 1:
            av = np.tile(av, (r3, 1, 1, 1)) if tile3 else np.repeat(av, r3, axis=0)
        np.matmul(bv, av.swapaxes(-1, -2), out=ctx.arr(t))

    return kernel


def _after_mulmat(fix: Callable[[Any, np.ndarray], None]) -> Kernel:
    def kernel(ctx: Any, t: Any) -> None:
        KERNELS["mulmat"](ctx, t)
        fix(t, ctx.arr(t))

    return kernel


def _quant_times_102(t: Any, out: np.ndarray) -> None:
    if t.src[0].dtype.is_quantized:
        out *= F32(1.02)


def _quant_one_element(t: Any, out: np.ndarray) -> None:
    if t.src[0].dtype.is_quantized:
        out[0, 0, 0, 0] *= F32(1.2)


def _round_f16(t: Any, out: np.ndarray) -> None:
    out[...] = out.astype(np.float16).astype(F32)


# -- element-wise -------------------------------------------------------------------------------
def _binary_repeat(ufunc: np.ufunc) -> Kernel:
    """Broadcast b over dim 3 by repeating each of its slices (ggml tiles it)."""

    def kernel(ctx: Any, t: Any) -> None:
        a, b = t.src
        av, bv = ctx.values(a), ctx.values(b)
        if bv.shape[0] not in (1, av.shape[0]):
            bv = np.repeat(bv, av.shape[0] // bv.shape[0], axis=0)
        ctx.put(t, ufunc(av, tile_to(bv, av.shape)))

    return kernel


def add_flush_nonfinite(ctx: Any, t: Any) -> None:
    """Addition that turns inf and NaN results into 0."""
    a, b = t.src
    av = ctx.values(a)
    y = np.add(av, tile_to(ctx.values(b), av.shape))
    ctx.put(t, np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0))


# -- reductions, norms, sorting -----------------------------------------------------------------
def argsort_ties_duplicated(ctx: Any, t: Any) -> None:
    """Argsort that gives every member of a run of equal keys the first member's index.

    (Reversed tie order would be legal: the order of equal keys is unspecified.)
    """
    from mlplug.plugin_api import ArgsortParams

    x = ctx.arr(t.src[0]).astype(np.float64)
    if ArgsortParams.of(t).order == "desc":
        x = -x
    order = np.argsort(x, axis=-1, kind="stable")
    keys = np.take_along_axis(x, order, axis=-1)
    same = np.zeros(keys.shape, dtype=bool)
    same[..., 1:] = keys[..., 1:] == keys[..., :-1]
    fixed = order.copy()
    for j in range(1, order.shape[-1]):
        fixed[..., j] = np.where(same[..., j], fixed[..., j - 1], order[..., j])
    ctx.arr(t)[...] = fixed


def rms_norm_no_eps(ctx: Any, t: Any) -> None:
    """``x / sqrt(mean(x^2))``: eps left out."""
    x = ctx.values(t.src[0])
    ms = (np.square(x).sum(axis=-1, keepdims=True, dtype=np.float64) / x.shape[-1]).astype(F32)
    np.multiply(x, F32(1) / np.sqrt(ms), out=ctx.arr(t))


def cum_sum_exclusive(ctx: Any, t: Any) -> None:
    """Prefix sums shifted by one (exclusive instead of inclusive)."""
    x = ctx.values(t.src[0])
    out = ctx.arr(t)
    out[...] = 0
    np.cumsum(x[..., :-1], axis=-1, dtype=F32, out=out[..., 1:])


def l2_norm_eps_inside(ctx: Any, t: Any) -> None:
    """``x / sqrt(||x||^2 + eps)`` instead of ``x / max(||x||, eps)``."""
    from mlplug.plugin_api import NormParams

    x = ctx.values(t.src[0])
    ss = np.square(x).sum(axis=-1, keepdims=True, dtype=np.float64)
    scale = (1.0 / np.sqrt(ss + NormParams.of(t).eps)).astype(F32)
    np.multiply(x, scale, out=ctx.arr(t))


# -- gather and scatter -------------------------------------------------------------------------
def rows_unchecked(ctx: Any, t: Any) -> None:
    """Row gather without the id range check: id -1 silently reads the last row."""
    table, ids = t.src
    idx = ctx.arr(ids)[0]
    k = np.arange(idx.shape[0])[:, None, None]
    j = np.arange(idx.shape[1])[None, :, None]
    if table.dtype in (DType.F32, DType.I32, DType.F16):
        ctx.arr(t)[...] = ctx.arr(table)[k, j, idx]
    else:
        ctx.put(t, ctx.values(table)[k, j, idx])


def mulmat_id_first_token_experts(ctx: Any, t: Any) -> None:
    """Expert products where every token uses the experts chosen for token 0."""
    a, b, ids = t.src
    w = ctx.values(a)[0]
    x = _right(ctx, a, b)[0]
    idx = ctx.arr(ids)[0, 0]
    idx = np.broadcast_to(idx[:1], idx.shape)
    xs = x[:, np.arange(idx.shape[1]) % x.shape[1]]
    ctx.arr(t)[0] = np.einsum("tuk,turk->tur", xs, w[idx], dtype=F32)


def set_rows_broadcast_by_block(ctx: Any, t: Any) -> None:
    """set_rows whose ids broadcast over dim 1 in blocks (``j // r``) instead of cyclically."""
    _dst, src, ids = t.src
    d = ctx.arr(t)
    idx = ctx.arr(ids)[0]
    s = ctx.values(src)
    kk = np.arange(s.shape[0])[:, None, None]
    jj = np.arange(s.shape[1])[None, :, None]
    r1 = max(1, s.shape[1] // idx.shape[1])
    r2 = max(1, s.shape[0] // idx.shape[0])
    rows = idx[kk // r2, jj // r1, np.arange(s.shape[2])[None, None, :]]
    tmp = ctx.values(t).copy()
    tmp[kk, jj, rows] = s
    ctx.put(t, tmp)
    del d


# -- rope, windows --------------------------------------------------------------------------------
def rope_rotates_all(ctx: Any, t: Any) -> None:
    """RoPE that rotates the whole head, ignoring ``n_dims`` (partial rotation)."""
    p = RopeParams.of(t)
    full = t.src[0].ne[0]
    if p.n_dims == full:
        KERNELS["rope"](ctx, t)
        return
    patched = _Rewrap(t, n_dims=full)
    KERNELS["rope"](ctx, patched)


def im2col_no_dilation(ctx: Any, t: Any) -> None:
    """im2col that ignores the dilation."""
    kernel, image = t.src
    r = Im2colParams.of(t)
    kw, kh, c = kernel.ne[0], kernel.ne[1], kernel.ne[2]
    ow, oh = t.ne[1], t.ne[2]
    x = ctx.values(image)
    pt = _patches(x, kh, kw, oh, ow, (r.s1, r.s0), (r.p1, r.p0), (1, 1))
    ctx.put(t, pt.transpose(2, 4, 5, 3, 0, 1).reshape(x.shape[0], oh, ow, c * kh * kw))


def pool_2d_count_valid(ctx: Any, t: Any) -> None:
    """Average pooling dividing by the in-image elements of each window (ggml: k*k)."""
    r = Pool2dParams.of(t)
    k, s, pi = r.k, r.s, int(r.p)
    x = ctx.values(t.src[0])
    oh, ow = t.ne[1], t.ne[0]
    eh = max(0, (oh - 1) * s + k - (x.shape[2] + pi))
    ew = max(0, (ow - 1) * s + k - (x.shape[3] + pi))
    xp = np.pad(x, ((0, 0), (0, 0), (pi, eh + pi), (pi, ew + pi)))
    ones = np.pad(np.ones(x.shape[2:], F32), ((pi, eh + pi), (pi, ew + pi)))
    acc = np.zeros((x.shape[0], x.shape[1], oh, ow), F32)
    cnt = np.zeros((oh, ow), F32)
    for ky in range(k):
        for kx in range(k):
            acc += xp[:, :, ky : ky + s * oh : s, kx : kx + s * ow : s][:, :, :oh, :ow]
            cnt += ones[ky : ky + s * oh : s, kx : kx + s * ow : s][:oh, :ow]
    ctx.put(t, acc / np.maximum(cnt, F32(1)))


def conv_3d_depth_uses_height_params(ctx: Any, t: Any) -> None:
    """conv_3d reading the height's stride, padding and dilation for the depth axis."""
    r = Conv3dParams.of(t)
    KERNELS["conv_3d"](ctx, _Rewrap(t, s2=r.s1, p2=r.p1, d2=r.d1))


class _Rewrap:
    """A node seen with some of its params changed (the bug reads the wrong field)."""

    def __init__(self, node: Any, **changes: Any) -> None:
        self._node = node
        self.params = dataclasses.replace(node.params, **changes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)


_ADD_FAMILY = ("add", "sub", "mul", "div")
_UFUNCS = ("add", "subtract", "multiply", "divide")
_QUANT_MULMAT = ("mulmat-q*",)

WRONG: tuple[Wrong, ...] = (
    Wrong(
        "wrong_softmax_no_max",
        "softmax without max-subtraction",
        {"softmax": softmax_no_max},
        ("softmax",),
    ),
    Wrong(
        "wrong_sdpa_no_max",
        "attention's softmax without max-subtraction",
        {"scaled_dot_product_attention": _sdpa(subtract_max=False)},
        ("scaled_dot_product_attention",),
    ),
    Wrong(
        "wrong_sdpa_gqa_tile",
        "grouped-query attention: query head i reads kv head i % Hkv (tile, not repeat)",
        {"scaled_dot_product_attention": _sdpa(gqa_tile=True)},
        ("scaled_dot_product_attention",),
        catch=("*-gqa-8x4x3-kv2x5*", "*-mask-8x4x3-kv2x5", "*-batch-8x4x2x2"),
    ),
    Wrong(
        "wrong_qmulmat_x102",
        "quantised mulmat: every output times 1.02",
        {"mulmat": _after_mulmat(_quant_times_102)},
        ("mulmat",),
        catch=_QUANT_MULMAT,
    ),
    Wrong(
        "wrong_qmulmat_last_block",
        "quantised mulmat: 3% scale error on the last K block",
        {"mulmat": _mulmat(last_block=1.03)},
        ("mulmat",),
        catch=_QUANT_MULMAT,
    ),
    Wrong(
        "wrong_qmulmat_one_element",
        "quantised mulmat: one output element 20% too large",
        {"mulmat": _after_mulmat(_quant_one_element)},
        ("mulmat",),
        catch=_QUANT_MULMAT,
    ),
    Wrong(
        "wrong_mulmat_f16_result",
        "mulmat rounded to f16 (also under full precision)",
        {"mulmat": _after_mulmat(_round_f16)},
        ("mulmat_full_prec",),
        catch=("mulmat_full_prec-f32-*",),
    ),
    Wrong(
        "wrong_mulmat_tile_dim3",
        "mulmat broadcasts a over dim 3 by tiling instead of repeating",
        {"mulmat": _mulmat(tile3=True)},
        ("mulmat",),
    ),
    Wrong(
        "wrong_binary_repeat_dim3",
        "binary ops broadcast b over dim 3 by repeating instead of tiling",
        {op: _binary_repeat(getattr(np, u)) for op, u in zip(_ADD_FAMILY, _UFUNCS, strict=True)},
        _ADD_FAMILY,
    ),
    Wrong(
        "wrong_add_flush_nonfinite",
        "add flushes inf and NaN to 0",
        {"add": add_flush_nonfinite},
        ("add",),
    ),
    Wrong(
        "wrong_argsort_ties",
        "argsort repeats one index for a run of equal keys",
        {"argsort": argsort_ties_duplicated},
        ("argsort",),
    ),
    Wrong(
        "wrong_rms_norm_no_eps",
        "rms_norm without eps",
        {"rms_norm": rms_norm_no_eps},
        ("rms_norm",),
        catch=("rms_norm-f32-9x4x3", "rms_norm-f32-weight-*"),
    ),
    Wrong(
        "wrong_l2_norm_eps_inside",
        "l2_norm adds eps under the square root instead of clamping the norm",
        {"l2_norm": l2_norm_eps_inside},
        ("l2_norm",),
        catch=("l2_norm-f32-gold-eps-floor",),
    ),
    Wrong(
        "wrong_mulmat_id_routing",
        "mulmat_id: every token uses the experts chosen for token 0",
        {"mulmat_id": mulmat_id_first_token_experts},
        ("mulmat_id",),
        catch=("mulmat_id-f32-gold", "mulmat_id-f32-topk-*", "mulmat_id-q8_0-*"),
    ),
    Wrong(
        "wrong_rows_negative_id",
        "get_rows: id -1 returns the last row instead of an error",
        {"rows": rows_unchecked},
        ("rows",),
    ),
    Wrong(
        "wrong_set_rows_broadcast",
        "set_rows broadcasts its ids over dim 1 in blocks instead of cyclically",
        {"set_rows": set_rows_broadcast_by_block},
        ("set_rows",),
        catch=("set_rows-f32-bcast-8x5x4",),
    ),
    Wrong(
        "wrong_cum_sum_exclusive",
        "cum_sum off by one (exclusive prefix sums)",
        {"cum_sum": cum_sum_exclusive},
        ("cum_sum",),
        catch=("cum_sum-*",),
    ),
    Wrong(
        "wrong_rope_partial",
        "rope rotates the whole head when n_dims asks for a partial rotation",
        {"rope": rope_rotates_all},
        ("rope",),
        catch=("rope-f32-normal-partial-*", "rope-f32-vision-*"),
    ),
    Wrong(
        "wrong_im2col_dilation",
        "im2col ignores the dilation",
        {"im2col": im2col_no_dilation},
        ("im2col",),
        catch=("im2col-f32-7x6x1x2-k3x2-210112",),
    ),
    Wrong(
        "wrong_pool_divisor",
        "avg pool divides by the in-image count, not k*k",
        {"pool_2d": pool_2d_count_valid},
        ("avg_pool_2d",),
        catch=("avg_pool_2d-f32-6x6x2-k3s1p1", "avg_pool_2d-f32-9x7x3-k2s1p0.5"),
    ),
    Wrong(
        "wrong_conv_3d_depth",
        "conv_3d takes the depth axis' stride, padding and dilation from the height's",
        {"conv_3d": conv_3d_depth_uses_height_params},
        ("conv_3d",),
        catch=("conv_3d-f32-pad-*",),
    ),
)

#: A backend missing three core kernels: every case of those ops is unsupported.
REMOVED = Wrong(
    "wrong_removed_kernels",
    "mulmat, softmax and rope kernels removed (NotSupportedError)",
    {"mulmat": None, "softmax": None, "rope": None},
    ("mulmat", "softmax", "rope"),
)
