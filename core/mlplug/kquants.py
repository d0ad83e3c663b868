"""Host quantisers for ggml's k-quant types Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, in numpy.

The ``gguf`` package decodes every k-quant but encodes none, so backends without native kernels
(cpu_numpy, torch) could not cast to them. These follow ggml's reference quantisers (its
``quantize_row_*_K_ref``): the same search for each sub-block's scale (and minimum), the same
rounding of those to 4, 6 or 8 bits under f16 super-block scales, the same requantisation and
bit layout. Every sub-block of every row is searched at once, the sub-blocks as the columns of
one array; sums run left to right in float32, as the C loops do. The bytes equal ggml's bit for
bit (``plugins/ggml/tests/test_host_kquants.py``; both the libggml-python wheel and a native
llama.cpp build). A ggml built to fuse products into sums (FMA contraction) could differ in a
sum's last bit, and so rarely in a level. About 70-200 ms per million values on one core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from .dtypes import TRAITS, DType
from .errors import DTypeError

__all__ = ["KQUANT_TYPES", "quantize_kquant"]

F32: Final = np.float32
#: Values per super-block.
QK_K: Final = 256
#: Below this a group is all zeros (ggml's ``GROUP_MAX_EPS``).
_EPS: Final = F32(1e-15)


def _columns(x: np.ndarray, size: int) -> np.ndarray:
    """Rows of super-blocks -> groups of ``size`` values as the columns of a C-contiguous
    ``(size, groups)`` array (the searches' layout: see :func:`_seqsum`)."""
    return np.ascontiguousarray(x.reshape(-1, size).T)


def _seqsum(a: np.ndarray) -> np.ndarray:
    """Column sums of a C-contiguous ``(n, groups)`` float32 array, each left to right: numpy
    adds row after row into the running sums, the C loops' order (a reduction along the inner
    axis would be pairwise, and cumsum is 30x slower)."""
    out: np.ndarray = np.add.reduce(a, axis=0)
    return out


def _rint(a: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``, as float32: adding 1.5 * 2**23 leaves the integer nearest ``a``
    (ties to even) in the float32's low mantissa bits, which are read back. Exact for
    ``|a| < 2**22``; beyond, NaN and inf it gives what ggml gives (its bounds check is an
    ``assert``, compiled out), so the caller's clamp picks the same level as ggml."""
    v: np.ndarray = np.asarray(a, F32) + F32(12582912.0)
    out: np.ndarray = ((v.view(np.int32) & 0x7FFFFF) - 0x400000).astype(F32)
    return out


def _peak(a: np.ndarray, axis: int) -> np.ndarray:
    """The value of largest magnitude along ``axis``, sign kept (the first on ties)."""
    pick = np.expand_dims(np.abs(a).argmax(axis), axis)
    out: np.ndarray = np.take_along_axis(a, pick, axis).squeeze(axis)
    return out


def _half(a: np.ndarray) -> np.ndarray:
    """Round float32 to f16 (nearest, ties to even); returns the f16 array."""
    with np.errstate(over="ignore"):
        return np.asarray(a, F32).astype(np.float16)


def _min_scale_search(
    x: np.ndarray,
    w: np.ndarray,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    mad: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levels ``0..nmax``, scale and minimum of each group (column) minimising the weighted
    squared error of ``scale * level - minimum`` (ggml's ``make_qkx2_quants``).

    Starts from the groups' range, then tries ``nstep + 1`` grids of ``nmax + rmin + rdelta*i``
    steps over it, refitting scale and minimum by least squares on each and keeping the best
    (by the weighted squared error, or with ``mad`` the weighted absolute error).
    Returns levels (float32, the groups' shape), scales and minimums (the value ``-min`` ggml
    stores, 0 or positive).
    """
    mn = np.minimum(x.min(0), F32(0))
    mx = x.max(0)
    flat = mx == mn
    sum_w = _seqsum(w)
    sum_x = _seqsum(w * x)
    top = F32(nmax)
    iscale = top / np.where(flat, F32(1), mx - mn)
    scale = F32(1) / iscale
    levels = np.clip(_rint(iscale * (x - mn)), 0, top)
    diff = scale * levels + mn - x
    best = _seqsum(w * (np.abs(diff) if mad else diff * diff))
    for i in range(nstep + 1):
        # as ggml: each grid spans the range from the best minimum found so far
        grid = (F32(rmin) + F32(rdelta) * F32(i) + top) / np.where(flat, F32(1), mx - mn)
        trial = np.clip(_rint(grid * (x - mn)), 0, top)
        wl = w * trial
        sum_l = _seqsum(wl)
        sum_l2 = _seqsum(wl * trial)
        sum_xl = _seqsum(wl * x)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe = np.where(ok, det, F32(1))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe
        clamp = this_min > 0
        if clamp.any():
            this_min = np.where(clamp, F32(0), this_min)
            this_scale = np.where(clamp, sum_xl / np.where(clamp, sum_l2, F32(1)), this_scale)
        d = this_scale * trial + this_min - x
        err = _seqsum(w * (np.abs(d) if mad else d * d))
        take = ok & (err < best) & ~flat
        levels = np.where(take, trial, levels)
        best = np.where(take, err, best)
        scale = np.where(take, this_scale, scale)
        mn = np.where(take, this_min, mn)
    levels = np.where(flat, F32(0), levels)
    scale = np.where(flat, F32(0), scale)
    return levels, scale, -mn


def _signed_scale_search(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Levels ``0..2*nmax-1`` (offset ``nmax``) and the scale of each group (column), the
    scale fitted to the largest-magnitude value and refined over 18 nearby grids by the
    ``x**2``-weighted least squares (ggml's ``make_qx_quants`` with its error type 1)."""
    peak = _peak(x, 0)
    zero = np.abs(peak) < _EPS
    peak = np.where(zero, F32(1), peak)
    w = x * x
    wx = w * x
    lo, hi = F32(-nmax), F32(nmax - 1)

    def fit(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lv = np.clip(_rint(iscale * x), lo, hi)
        return lv, _seqsum(wx * lv), _seqsum((w * lv) * lv)

    levels, sumlx, suml2 = fit(F32(-nmax) / peak)
    scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, F32(1)), F32(0))
    best = scale * sumlx
    for i in range(-9, 10):
        if i == 0:
            continue
        trial, tx, t2 = fit(-(F32(nmax) + F32(0.1) * F32(i)) / peak)
        take = (t2 > 0) & (tx * tx > best * t2) & ~zero
        levels = np.where(take, trial, levels)
        scale = np.where(take, tx / np.where(t2 > 0, t2, F32(1)), scale)
        best = np.where(take, scale * tx, best)
    levels = np.where(zero, F32(0), levels + F32(nmax))
    return levels, np.where(zero, F32(0), scale)


def _descent_search(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Levels ``0..2*nmax-1`` (offset ``nmax``) and the scale of each group (column): the
    grid of the largest-magnitude value, then up to five passes that move single values to the
    level improving the ``x**2``-weighted fit (ggml's ``make_q3_quants`` with its RMSE search).

    Each pass visits the values in order and updates the group's sums as it goes, as ggml does;
    a pass that changes nothing in a group would change nothing again, so groups run together.
    """
    peak = _peak(x, 0)
    zero = np.abs(peak) < _EPS
    peak = np.where(zero, F32(1), peak)
    lo, hi = F32(-nmax), F32(nmax - 1)
    levels = np.clip(_rint((F32(-nmax) / peak) * x), lo, hi)
    w = x * x
    wx = w * x
    sumlx = _seqsum(wx * levels)
    suml2 = _seqsum((w * levels) * levels)
    for _ in range(5):
        changed = False
        for i in range(x.shape[0]):
            xi, wi, wxi, li = x[i], w[i], wx[i], levels[i]
            slx = sumlx - wxi * li
            sl2 = suml2 - (wi * li) * li
            ok = slx > 0
            new = np.clip(_rint(xi * sl2 / np.where(ok, slx, F32(1))), lo, hi)
            ok &= new != li
            slx = slx + wxi * new
            sl2 = sl2 + (wi * new) * new
            ok &= (sl2 > 0) & ((slx * slx) * suml2 > (sumlx * sumlx) * sl2)
            if ok.any():
                changed = True
                levels[i] = np.where(ok, new, li)
                sumlx = np.where(ok, slx, sumlx)
                suml2 = np.where(ok, sl2, suml2)
        if not changed:
            break
    scale = np.where(zero, F32(0), sumlx / np.where(zero, F32(1), suml2))
    return np.where(zero, F32(0), levels + F32(nmax)), scale


def _requantise(
    sub: np.ndarray,
    d: np.ndarray,
    levels: np.ndarray,
    lo: int,
    hi: int,
    m: np.ndarray | None = None,
) -> np.ndarray:
    """Levels of the values ``sub`` ``(n, groups, size)`` under their groups' stored scales
    ``d`` (and minimums ``m``): ``round((x + m) / d)`` clamped to ``lo..hi``, counted from 0.
    Groups whose stored scale is 0 keep the search's ``levels``, as ggml skips them."""
    nz = d != 0
    v = sub if m is None else sub + m[..., None]
    q = np.clip(_rint(v / np.where(nz, d, F32(1))[..., None]), lo, hi) - F32(lo)
    out: np.ndarray = np.where(nz[..., None], q, levels).astype(np.uint8)
    return out


def _bit_planes(bits: np.ndarray) -> np.ndarray:
    """One bit per value ``(n, 8, 32)`` -> 32 bytes: bit ``s`` of byte ``j`` is value
    ``32*s + j``'s (Q3_K's high-bit mask, Q5_K's fifth bits)."""
    shifted = bits.astype(np.uint8) << np.arange(8, dtype=np.uint8)[:, None]
    out: np.ndarray = np.bitwise_or.reduce(shifted, axis=1)
    return out


def _inverse(top: np.float32, peak: np.ndarray) -> np.ndarray:
    """``top / peak`` where ``peak > 0``, else 0 (the sub-block scales' rounding factor)."""
    out: np.ndarray = np.where(peak > 0, top / np.where(peak > 0, peak, F32(1)), F32(0))
    return out


def _pack_2bit(q: np.ndarray) -> np.ndarray:
    """Levels ``(n, 256)`` of 2 bits -> 64 bytes: byte ``32*h + l`` holds values
    ``128*h + 32*k + l`` for ``k`` = 0..3 in bits ``2k``, ``2k+1`` (Q2_K's and Q3_K's low bits,
    Q6_K's high ones)."""
    c = q.reshape(q.shape[0], 2, 4, 32)
    packed: np.ndarray = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
    return packed.reshape(-1, 64)


def _quantize_q2_k(x: np.ndarray) -> np.ndarray:
    """Q2_K super-blocks ``(n, 256)`` -> bytes ``(n, 84)``: 4-bit scale and minimum per 16."""
    n = x.shape[0]
    sub = x.reshape(n, 16, 16)
    g = _columns(x, 16)
    levels, scales, mins = _min_scale_search(g, np.abs(g), 3, -0.5, 0.1, 15, mad=True)
    levels, scales, mins = levels.T.reshape(n, 16, 16), scales.reshape(n, 16), mins.reshape(n, 16)
    top = F32(15)
    max_scale = np.maximum(scales.max(-1), F32(0))
    max_min = np.maximum(mins.max(-1), F32(0))
    has_s, has_m = max_scale > 0, max_min > 0
    ls = np.where(has_s[:, None], _rint(_inverse(top, max_scale)[:, None] * scales), 0)
    lm = np.where(has_m[:, None], _rint(_inverse(top, max_min)[:, None] * mins), 0)
    ls, lm = ls.astype(np.int64), lm.astype(np.int64)
    packed = ((ls & 0xFF) | ((lm << 4) & 0xFF)).astype(np.uint8)  # bytes, as ggml's stores wrap
    d16 = _half(np.where(has_s, max_scale / top, F32(0)))
    dmin16 = _half(np.where(has_m, max_min / top, F32(0)))
    dd = d16.astype(F32)[:, None] * (packed & 0xF).astype(F32)
    dm = dmin16.astype(F32)[:, None] * (packed >> 4).astype(F32)
    q = _requantise(sub, dd, levels, 0, 3, dm).reshape(n, QK_K)
    tail = np.concatenate((d16.reshape(n, 1), dmin16.reshape(n, 1)), 1).view(np.uint8)
    return np.concatenate((packed, _pack_2bit(q), tail), axis=1)


def _quantize_q3_k(x: np.ndarray) -> np.ndarray:
    """Q3_K super-blocks ``(n, 256)`` -> bytes ``(n, 110)``: signed 6-bit scales per 16."""
    n = x.shape[0]
    sub = x.reshape(n, 16, 16)
    levels, scales = _descent_search(_columns(x, 16), 4)
    levels, scales = levels.T.reshape(n, 16, 16), scales.reshape(n, 16)
    max_scale = _peak(scales, 1)
    has = max_scale != 0
    iscale = F32(-32) / np.where(has, max_scale, F32(1))
    ls = np.where(has[:, None], np.clip(_rint(iscale[:, None] * scales), -32, 31) + 32, 0)
    ls = ls.astype(np.uint8)
    sc = np.zeros((n, 12), np.uint8)
    sc[:, 0:8] = (ls[:, 0:8] & 0xF) | ((ls[:, 8:16] & 0xF) << 4)
    high = (ls >> 4).reshape(n, 4, 4)  # [j // 4, j % 4]
    sc[:, 8:12] = high[:, 0] | (high[:, 1] << 2) | (high[:, 2] << 4) | (high[:, 3] << 6)
    d16 = _half(np.where(has, F32(1) / iscale, F32(0)))
    dd = d16.astype(F32)[:, None] * (ls.astype(F32) - F32(32))
    q = _requantise(sub, dd, levels, -4, 3).reshape(n, 8, 32)
    low = (q & 3).reshape(n, QK_K)
    return np.concatenate(
        (_bit_planes(q >> 2), _pack_2bit(low), sc, d16.reshape(n, 1).view(np.uint8)), axis=1
    )


def _pack_scales_mins(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The 12 bytes holding eight 6-bit scales and eight 6-bit minimums (Q4_K, Q5_K)."""
    out = np.zeros((*ls.shape[:-1], 12), np.uint8)
    out[..., 0:4] = ls[..., 0:4] | ((ls[..., 4:8] >> 4) << 6)
    out[..., 4:8] = lm[..., 0:4] | ((lm[..., 4:8] >> 4) << 6)
    out[..., 8:12] = (ls[..., 4:8] & 0xF) | ((lm[..., 4:8] & 0xF) << 4)
    return out


def _quantize_qk_min(x: np.ndarray, bits: int) -> np.ndarray:
    """Q4_K (``bits`` 4) or Q5_K (5) super-blocks ``(n, 256)`` -> bytes ``(n, 144 | 176)``."""
    nmax = (1 << bits) - 1
    rmin, nstep = (-1.0, 20) if bits == 4 else (-0.5, 15)
    n = x.shape[0]
    sub = x.reshape(n, 8, 32)
    g = _columns(x, 32)
    w = np.sqrt(_seqsum(g * g) / F32(32)) + np.abs(g)
    levels, scales, mins = _min_scale_search(g, w, nmax, rmin, 0.1, nstep)
    levels, scales, mins = levels.T.reshape(n, 8, 32), scales.reshape(n, 8), mins.reshape(n, 8)
    max_scale = np.maximum(scales.max(-1), F32(0))
    max_min = np.maximum(mins.max(-1), F32(0))
    # ggml stores the rounded value in a byte, then caps it at 63
    ls = _rint(_inverse(F32(63), max_scale)[:, None] * scales).astype(np.int64) & 0xFF
    lm = _rint(_inverse(F32(63), max_min)[:, None] * mins).astype(np.int64) & 0xFF
    ls, lm = np.minimum(ls, 63).astype(np.uint8), np.minimum(lm, 63).astype(np.uint8)
    d16 = _half(max_scale / F32(63))
    dmin16 = _half(max_min / F32(63))
    dd = d16.astype(F32)[:, None] * ls.astype(F32)
    dm = dmin16.astype(F32)[:, None] * lm.astype(F32)
    q = _requantise(sub, dd, levels, 0, nmax, dm).reshape(n, 4, 2, 32)
    head = np.empty((n, 4), np.uint8)
    head[:, 0:2] = d16.reshape(n, 1).view(np.uint8)
    head[:, 2:4] = dmin16.reshape(n, 1).view(np.uint8)
    low = q & 0xF
    qs = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(n, 128)
    parts = [head, _pack_scales_mins(ls, lm)]
    if bits == 5:
        parts.append(_bit_planes((q >> 4).reshape(n, 8, 32)))
    parts.append(qs)
    return np.concatenate(parts, axis=1)


def _quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Q6_K super-blocks ``(n, 256)`` -> bytes ``(n, 210)``."""
    n = x.shape[0]
    sub = x.reshape(n, 16, 16)
    levels, scales = _signed_scale_search(_columns(x, 16), 32)
    levels, scales = levels.T.reshape(n, 16, 16), scales.reshape(n, 16)
    max_scale = _peak(scales, 1)
    zero = np.abs(max_scale) < _EPS
    iscale = F32(-128) / np.where(zero, F32(1), max_scale)
    sc = np.minimum(_rint(iscale[:, None] * scales), F32(127))
    d16 = _half(F32(1) / iscale)
    dd = d16.astype(F32)[:, None] * sc
    q = _requantise(sub, dd, levels, -32, 31)
    q = np.where(zero[:, None, None], np.uint8(0), q).reshape(n, 2, 4, 32)
    low = q & 0xF
    ql = np.concatenate((low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)), 2)
    qh = _pack_2bit((q >> 4).reshape(n, QK_K))
    scales8 = np.where(zero[:, None], F32(0), sc).astype(np.int8).view(np.uint8)
    d16 = np.where(zero, np.float16(0), d16)
    return np.concatenate(
        (ql.reshape(n, 128), qh.reshape(n, 64), scales8, d16.reshape(n, 1).view(np.uint8)), axis=1
    )


_QUANTISERS: Final[dict[DType, Callable[[np.ndarray], np.ndarray]]] = {
    DType.Q2_K: _quantize_q2_k,
    DType.Q3_K: _quantize_q3_k,
    DType.Q4_K: lambda x: _quantize_qk_min(x, 4),
    DType.Q5_K: lambda x: _quantize_qk_min(x, 5),
    DType.Q6_K: _quantize_q6_k,
}

#: The k-quant types :func:`quantize_kquant` produces.
KQUANT_TYPES: Final = frozenset(_QUANTISERS)


def quantize_kquant(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Quantise float32 rows ``(..., n)`` to ``dtype`` (one of :data:`KQUANT_TYPES`): uint8
    rows ``(..., row_bytes)``.

    :raises DTypeError: ``dtype`` is not one of them, or ``n`` is not a multiple of 256.
    """
    fn = _QUANTISERS.get(dtype)
    if fn is None:
        msg = f"cannot quantize to {dtype.name}: no host quantiser (have Q4_K, Q5_K, Q6_K)"
        raise DTypeError(msg, op="quantize", dtypes=(dtype,))
    x = np.ascontiguousarray(values, dtype=F32)
    if x.ndim == 0 or x.shape[-1] % QK_K:
        shape = list(x.shape)
        msg = f"cannot quantize to {dtype.name}: rows of shape {shape} are not whole 256-blocks"
        raise DTypeError(msg, op="quantize", dtypes=(dtype,))
    row_bytes = x.shape[-1] // QK_K * TRAITS[dtype].type_size
    if not x.size:
        return np.zeros((*x.shape[:-1], row_bytes), np.uint8)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN/inf in, no abort
        raw = fn(x.reshape(-1, QK_K))
    return raw.reshape(*x.shape[:-1], row_bytes)
