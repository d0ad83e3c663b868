"""ggml's index and angle arithmetic, shared by the backends that compute ops themselves.

Interpolation indices and the RoPE schedule (which position row each pair rotates by, where
the vision mode restarts its powers, YaRN's ramp and magnitude scale) are plain float32 numpy
computations over small index ranges: cpu_numpy uses them as they are, torch moves the results
to its device. The conformance references in :mod:`mlplug.conformance.reference` stay separate
on purpose (they are the independent float64 check).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np

__all__ = [
    "MROPE_MODES",
    "bilinear_axis",
    "last_seen",
    "nearest_index",
    "query_blocks",
    "rope_n_pairs",
    "rope_pairs",
    "rope_rows",
    "rope_theta_scale",
    "rope_thetas",
    "yarn_mix",
]

F32: Final = np.float32
#: RoPE modes whose positions come in four rows (t, h, w, e): mrope, vision, imrope.
MROPE_MODES: Final = frozenset({8, 24, 40})
_VISION: Final = 24
_IMROPE: Final = 40


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Return ggml's nearest source index per output index: ``trunc(f32(i) / f32(out / in))``.

    :returns: int64 array of ``n_out`` indices, clamped to ``n_in - 1``.
    """
    sf = F32(n_out) / F32(n_in)
    idx = np.trunc(np.arange(n_out, dtype=F32) / sf).astype(np.int64)
    out: np.ndarray = np.minimum(idx, n_in - 1)
    return out


def bilinear_axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return half-pixel source positions along one axis, as ggml computes them in float32.

    :returns: ``(lo, hi, frac)``: the low and high source indices (int64, clamped) and the
        float32 weight of the high one.
    """
    sf = F32(n_out) / F32(n_in)
    pos = (np.arange(n_out, dtype=F32) + F32(0.5)) / sf - F32(0.5)
    i0 = np.floor(pos)
    lo = np.clip(i0, 0, n_in - 1).astype(np.int64)
    hi = np.clip(i0 + 1, 0, n_in - 1).astype(np.int64)
    frac = np.clip(pos - lo.astype(F32), 0, 1).astype(F32)
    return lo, hi, frac


#: Query rows per block of :func:`query_blocks`.
QUERY_BLOCK: Final = 128


def last_seen(visible: np.ndarray) -> np.ndarray:
    """Per query row of ``visible`` (bool ``(Lq, Lk)``: which keys its mask lets it see), one
    more than its last visible key; 0 for a row that sees none (int64 ``(Lq,)``)."""
    any_key = visible.any(axis=1)
    last = visible.shape[1] - np.argmax(visible[:, ::-1], axis=1)
    seen: np.ndarray = np.where(any_key, last, 0)
    return seen


def query_blocks(seen: np.ndarray, block: int = QUERY_BLOCK) -> tuple[tuple[int, int, int], ...]:
    """Cut attention's query rows into blocks that each read only the keys they may see.

    :param seen: per query row, one more than the last key its mask leaves visible (0: none),
        over every head and batch plane of the mask.
    :returns: ``(r0, r1, n)`` per block of (at most) ``block`` rows: rows ``r0..r1`` attend to
        keys ``0..n`` (at least one key, so a row that sees nothing gives what it gave before).
        One block of every row when cutting would save less than a fifth of the work (a
        decode step, a short prompt, a mask without a causal shape).

    Keys past a row's last visible one add exactly nothing to its sums, so a causal prompt
    reads about half of the keys it did (the first rows see the first keys only). The first
    key is always key 0: sums begin where they began.
    """
    rows = int(seen.shape[0])
    full = max(int(seen.max(initial=0)), 1)
    if rows <= block:
        return ((0, rows, full),)
    cuts = [
        (r0, min(r0 + block, rows), max(int(seen[r0 : r0 + block].max()), 1))
        for r0 in range(0, rows, block)
    ]
    if sum((r1 - r0) * n for r0, r1, n in cuts) > 0.8 * rows * full:
        return ((0, rows, full),)
    return tuple(cuts)


def rope_n_pairs(n_dims: int, mode: int) -> int:
    """Return how many (u, v) pairs RoPE rotates: ``n_dims``, or half of it (vision: all)."""
    return n_dims if mode == _VISION else n_dims // 2


@lru_cache(maxsize=64)
def rope_pairs(n_pairs: int, mode: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return RoPE's rotation as one gather and two products over the ``2 * n_pairs`` rotated
    values: ``y = x * cos[pair] + x[partner] * (sin[pair] * sign)``.

    Pair ``k`` is ``(u, v) = (x[2k], x[2k + 1])`` in the normal mode (0) and
    ``(x[k], x[k + n_pairs])`` in the others; ``u' = u cos - v sin`` and ``v' = u sin + v cos``.
    Per value: the pair it belongs to, the other value of its pair, and the sign of the sine
    term (-1 for ``u``, +1 for ``v``). The form is exact: ``u * c + v * (-s)`` is ``u * c - v * s``
    to the bit, and float additions commute.

    :returns: ``(pair, partner, sign)``: int64, int64 and float32 arrays of ``2 * n_pairs``
        (read-only; cached).
    """
    j = np.arange(2 * n_pairs)
    if mode == 0:
        pair, partner, first = j // 2, j ^ 1, j % 2 == 0
    else:
        pair, partner, first = j % n_pairs, (j + n_pairs) % (2 * n_pairs), j < n_pairs
    sign = np.where(first, F32(-1), F32(1)).astype(F32)
    for a in (pair, partner, sign):
        a.flags.writeable = False
    return pair, partner, sign


def rope_theta_scale(base: float, n_dims: int) -> np.float32:
    """Return ``f32(base) ** f32(-2 / n_dims)``, the per-pair factor of ggml's angle recurrence."""
    scale: np.float32 = F32(base) ** F32(-2.0 / n_dims)
    return scale


def rope_thetas(
    pos: np.ndarray,
    n_pairs: int,
    mode: int,
    sections: tuple[int, ...],
    theta_scale: np.float32,
    factors: np.ndarray | None = None,
) -> np.ndarray:
    """Return RoPE's angles before frequency scaling, float32 ``(n_tokens, n_pairs)``, as
    ggml's CPU computes them: pair ``k``'s angle is the position times ``theta_scale`` ``k``
    times, each product rounded to float32 (the schedule of :func:`rope_rows` for the m-rope
    modes), divided by ``factors[k]`` if given.

    :param pos: the positions (``n_tokens``; four rows of them for the m-rope modes).
    """
    mrope = mode in MROPE_MODES
    n_tok = pos.shape[-1] // 4 if mrope else pos.shape[-1]
    axes = pos.reshape(4 if mrope else 1, n_tok).astype(F32)
    ts = F32(theta_scale)
    out = np.empty((n_pairs, n_tok), F32)  # one row per pair: one ufunc call each
    if not mrope:
        out[0] = axes[0]
        for k in range(1, n_pairs):
            np.multiply(out[k - 1], ts, out=out[k])
    else:
        cur = axes.copy()
        for k, (row, restart) in enumerate(rope_rows(n_pairs, mode, sections)):
            if restart >= 0:  # vision: the power restarts at each section
                cur[restart] = axes[restart]
            out[k] = cur[row]
            np.multiply(cur, ts, out=cur)
    theta = out.T
    if factors is not None:
        theta = theta / factors.reshape(-1)[:n_pairs].astype(F32)
    return np.ascontiguousarray(theta)


@lru_cache(maxsize=64)
def rope_rows(n_pairs: int, mode: int, sections: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Return, per pair ``k``, ``(row, restart)`` of ggml's RoPE schedule.

    ``row`` is the position row (0..3; always 0 outside the m-rope modes) whose running power
    gives the pair's angle; ``restart`` is the row whose power restarts from its position just
    before pair ``k`` (vision mode), or -1.

    :param sections: the four m-rope section sizes (ignored by the other modes).
    """
    if mode not in MROPE_MODES:
        return ((0, -1),) * n_pairs
    s0, s1, s2 = sections[0], sections[1], sections[2]
    sect_dims = sum(sections)
    sec_w = s0 + s1
    out = []
    for k in range(n_pairs):
        sec = k % sect_dims
        restart = -1
        if mode == _VISION:
            if sec == 0:
                restart = 0
            elif sec == s0:
                restart = 1
            elif sec == sec_w:
                restart = 2
            elif sec == sec_w + s2:
                restart = 3
        if mode == _IMROPE:
            if sec % 3 == 1 and sec < 1 + 3 * s1:
                row = 1
            elif sec % 3 == 2 and sec < 2 + 3 * s2:
                row = 2
            else:
                row = 0
        elif sec < s0:
            row = 0
        elif sec < sec_w:
            row = 1
        elif sec < sec_w + s2:
            row = 2
        else:
            row = 3
        out.append((row, restart))
    return tuple(out)


def _yarn_corr(n_dims: int, n_ctx_orig: int, beta: float, base: float) -> float:
    return n_dims * math.log(n_ctx_orig / (beta * 2 * math.pi)) / (2 * math.log(base))


def yarn_mix(
    n_pairs: int,
    n_dims: int,
    n_ctx_orig: int,
    base: float,
    freq_scale: float,
    ext_factor: float,
    attn_factor: float,
    beta_fast: float,
    beta_slow: float,
) -> tuple[np.ndarray | None, np.float32]:
    """Return YaRN's per-pair mix and the magnitude scale of RoPE's cos/sin, as ggml's CPU.

    The angle of pair ``k`` is ``ang * (1 - mix[k]) + theta * mix[k]`` with
    ``ang = f32(freq_scale) * theta``; cos and sin are then multiplied by the scale.

    :returns: ``(mix, mscale)``: ``mix`` is float32 ``(n_pairs,)``, or None when
        ``ext_factor`` is 0 (no extrapolation mix); ``mscale`` is ``f32(attn_factor)``, times
        YaRN's ``1 + 0.1 ln(1 / freq_scale)`` when mixing.
    """
    mscale = F32(attn_factor)
    if ext_factor == 0.0:
        return None, mscale
    lo = max(0.0, math.floor(_yarn_corr(n_dims, n_ctx_orig, beta_fast, base)))
    hi = min(n_dims - 1.0, math.ceil(_yarn_corr(n_dims, n_ctx_orig, beta_slow, base)))
    kk = np.arange(n_pairs, dtype=F32)
    ramp = F32(1) - np.clip((kk - F32(lo)) / F32(max(0.001, hi - lo)), 0, 1)
    mix = (ramp * F32(ext_factor)).astype(F32)
    mscale = F32(mscale * (F32(1) + F32(0.1) * F32(math.log(1.0 / freq_scale))))
    return mix, mscale
