"""The reference's own block codecs, written from the block formats and shared with no backend.

:func:`dequantize` decodes every block-quantised type from its byte layout (the arithmetic of
each format is float32, reproduced step by step with numpy float32). :func:`dot_activations`
rounds the right operand of a quantised matrix product the way ggml's x86 CPU does before its
integer dot products: Q8_0 blocks of 32 (Q8_1 for Q4_1 and Q5_1, whose values are the same) for
the 32-element types, Q8_K super-blocks of 256 for the k-quants, halves rounded to even.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..dtypes import TRAITS, DType

__all__ = [
    "Q8_0_DOT",
    "Q8_K_DOT",
    "dequantize",
    "dot_activations",
    "q8_0_quantize",
    "q8_k_quantize",
]

F32 = np.float32
#: Left-operand types whose CPU dot product takes Q8_0 (or Q8_1) activations.
Q8_0_DOT = frozenset({DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.MXFP4})
#: Left-operand types whose CPU dot product takes Q8_K activations.
Q8_K_DOT = frozenset({DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K})
#: The sixteen values of an MXFP4 (e2m1) nibble, doubled (the block scale is halved to match).
_E2M1_X2 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], F32)


def _f16(b: np.ndarray, off: int) -> np.ndarray:
    """The little-endian f16 field at byte ``off`` of each block, as float32 ``(n, 1)``."""
    return np.ascontiguousarray(b[:, off : off + 2]).view("<f2").astype(F32)


def _lo(b: np.ndarray) -> np.ndarray:
    return (b & 0x0F).astype(np.int32)


def _hi(b: np.ndarray) -> np.ndarray:
    return (b >> 4).astype(np.int32)


def _bits(b: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` bits of each row of bytes, least significant bit first: ``(rows, n)``."""
    return np.unpackbits(b, axis=1, bitorder="little")[:, :n].astype(np.int32)


def _q8_0(b: np.ndarray) -> np.ndarray:
    return _f16(b, 0) * b[:, 2:34].view(np.int8).astype(F32)


def _q4_0(b: np.ndarray) -> np.ndarray:
    qs = b[:, 2:18]
    q = np.concatenate([_lo(qs), _hi(qs)], axis=1) - 8
    return _f16(b, 0) * q.astype(F32)


def _q4_1(b: np.ndarray) -> np.ndarray:
    qs = b[:, 4:20]
    q = np.concatenate([_lo(qs), _hi(qs)], axis=1)
    return np.asarray((q.astype(F32) * _f16(b, 0)).astype(F32) + _f16(b, 2))


def _q5(qh: np.ndarray, qs: np.ndarray) -> np.ndarray:
    return np.asarray(np.concatenate([_lo(qs), _hi(qs)], axis=1) | (_bits(qh, 32) << 4))


def _q5_0(b: np.ndarray) -> np.ndarray:
    q = _q5(b[:, 2:6], b[:, 6:22]) - 16
    return _f16(b, 0) * q.astype(F32)


def _q5_1(b: np.ndarray) -> np.ndarray:
    q = _q5(b[:, 4:8], b[:, 8:24])
    return np.asarray((q.astype(F32) * _f16(b, 0)).astype(F32) + _f16(b, 2))


def _mxfp4(b: np.ndarray) -> np.ndarray:
    # e8m0 scale 2^(e - 127), halved because the table holds doubled values
    scale = np.ldexp(F32(1.0), b[:, :1].astype(np.int32) - 128).astype(F32)
    qs = b[:, 1:17]
    q = np.concatenate([_E2M1_X2[_lo(qs)], _E2M1_X2[_hi(qs)]], axis=1)
    return np.asarray(q * scale)


def _q2_k(b: np.ndarray) -> np.ndarray:
    # scales[16] (low nibble scale, high nibble min), qs[64], d, dmin
    sc, qs = b[:, 0:16], b[:, 16:80]
    d, dmin = _f16(b, 80), _f16(b, 82)
    out = np.empty((b.shape[0], 256), F32)
    for half in range(2):
        q = qs[:, 32 * half : 32 * half + 32]
        for j in range(4):
            v = ((q >> (2 * j)) & 3).astype(F32)
            for part in range(2):
                s = sc[:, 8 * half + 2 * j + part : 8 * half + 2 * j + part + 1]
                dl = (d * _lo(s).astype(F32)).astype(F32)
                ml = (dmin * _hi(s).astype(F32)).astype(F32)
                start = 128 * half + 32 * j + 16 * part
                out[:, start : start + 16] = (dl * v[:, 16 * part : 16 * part + 16]) - ml
    return out


def _q3_k_scales(s: np.ndarray) -> np.ndarray:
    """Sixteen signed 6-bit scales from 12 bytes: low nibbles of bytes 0-7 (twice), high pairs
    of bits from bytes 8-11; minus 32."""
    i = np.arange(16)
    low = (s[:, i % 8] >> (4 * (i // 8))) & 0x0F
    high = (s[:, 8 + i % 4] >> (2 * (i // 4))) & 3
    return (low | (high << 4)).astype(np.int32) - 32


def _q3_k(b: np.ndarray) -> np.ndarray:
    # hmask[32], qs[64], scales[12], d
    hm, qs = b[:, 0:32], b[:, 32:96]
    scales = _q3_k_scales(b[:, 96:108]).astype(F32)
    d = _f16(b, 108)
    out = np.empty((b.shape[0], 256), F32)
    for half in range(2):
        q = qs[:, 32 * half : 32 * half + 32]
        for j in range(4):
            bit = 4 * half + j
            low = ((q >> (2 * j)) & 3).astype(np.int32)
            high = ((hm >> bit) & 1).astype(np.int32)
            v = (low - np.where(high == 1, 0, 4)).astype(F32)
            for part in range(2):
                k = 8 * half + 2 * j + part
                dl = (d * scales[:, k : k + 1]).astype(F32)
                start = 128 * half + 32 * j + 16 * part
                out[:, start : start + 16] = dl * v[:, 16 * part : 16 * part + 16]
    return out


def _k4_scale_min(s: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and min ``j`` (0-7) of the 12-byte 6-bit packing shared by Q4_K and Q5_K."""
    if j < 4:
        sc = s[:, j : j + 1] & 63
        mn = s[:, j + 4 : j + 5] & 63
    else:
        sc = (s[:, j + 4 : j + 5] & 0x0F) | ((s[:, j - 4 : j - 3] >> 6) << 4)
        mn = (s[:, j + 4 : j + 5] >> 4) | ((s[:, j : j + 1] >> 6) << 4)
    return sc.astype(F32), mn.astype(F32)


def _q45_k(b: np.ndarray, five: bool) -> np.ndarray:
    d, dmin = _f16(b, 0), _f16(b, 2)
    s = b[:, 4:16]
    qh = b[:, 16:48] if five else None
    qs = b[:, 48:176] if five else b[:, 16:144]
    out = np.empty((b.shape[0], 256), F32)
    for g in range(4):  # 64 values per group: 32 low nibbles, then 32 high nibbles
        q = qs[:, 32 * g : 32 * g + 32]
        for part, nib in enumerate((_lo(q), _hi(q))):
            sc, mn = _k4_scale_min(s, 2 * g + part)
            v = nib
            if qh is not None:
                v = v + (((qh >> (2 * g + part)) & 1).astype(np.int32) << 4)
            dl = (d * sc).astype(F32)
            ml = (dmin * mn).astype(F32)
            start = 64 * g + 32 * part
            out[:, start : start + 32] = (dl * v.astype(F32)).astype(F32) - ml
    return out


def _q6_k(b: np.ndarray) -> np.ndarray:
    # ql[128], qh[64], scales[16] (int8), d
    ql, qh = b[:, 0:128], b[:, 128:192]
    sc = b[:, 192:208].view(np.int8).astype(F32)
    d = _f16(b, 208)
    out = np.empty((b.shape[0], 256), F32)
    for half in range(2):
        lo = ql[:, 64 * half : 64 * half + 64]
        hi = qh[:, 32 * half : 32 * half + 32]
        quads = (
            _lo(lo[:, :32]) | (((hi >> 0) & 3).astype(np.int32) << 4),
            _lo(lo[:, 32:]) | (((hi >> 2) & 3).astype(np.int32) << 4),
            _hi(lo[:, :32]) | (((hi >> 4) & 3).astype(np.int32) << 4),
            _hi(lo[:, 32:]) | (((hi >> 6) & 3).astype(np.int32) << 4),
        )
        for n, q in enumerate(quads):
            for part in range(2):
                k = 8 * half + 2 * n + part
                dl = (d * sc[:, k : k + 1]).astype(F32)
                start = 128 * half + 32 * n + 16 * part
                out[:, start : start + 16] = dl * (q[:, 16 * part : 16 * part + 16] - 32).astype(
                    F32
                )
    return out


_DECODERS: dict[DType, Callable[[np.ndarray], np.ndarray]] = {
    DType.Q8_0: _q8_0,
    DType.Q4_0: _q4_0,
    DType.Q4_1: _q4_1,
    DType.Q5_0: _q5_0,
    DType.Q5_1: _q5_1,
    DType.MXFP4: _mxfp4,
    DType.Q2_K: _q2_k,
    DType.Q3_K: _q3_k,
    DType.Q4_K: lambda b: _q45_k(b, five=False),
    DType.Q5_K: lambda b: _q45_k(b, five=True),
    DType.Q6_K: _q6_k,
}


def dequantize(rows: np.ndarray, dtype: DType) -> np.ndarray:
    """Decode uint8 rows ``(..., row_bytes)`` of ``dtype`` to float64 ``(..., elements)``.

    :raises ValueError: a type without a decoder here, or rows that are not whole blocks.
    """
    decode = _DECODERS.get(dtype)
    if decode is None:
        msg = f"the reference has no decoder for {dtype.name}"
        raise ValueError(msg)
    tr = TRAITS[dtype]
    raw = np.ascontiguousarray(rows, np.uint8)
    if raw.shape[-1] % tr.type_size:
        msg = f"{dtype.name} rows of {raw.shape[-1]} bytes are not whole {tr.type_size}-byte blocks"
        raise ValueError(msg)
    n_blocks = raw.shape[-1] // tr.type_size
    values = decode(raw.reshape(-1, tr.type_size))
    return np.asarray(values, np.float64).reshape(*raw.shape[:-1], n_blocks * tr.block_size)


def q8_0_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's x86 Q8_0 activation quantiser on float32 rows (length a multiple of 32).

    Per block: ``d = amax / 127`` (float32), ``q = rint(x * (127 / amax))`` with halves to even;
    returns ``q`` as int64 ``(..., n)`` and ``d`` as float32 ``(..., n/32, 1)`` (before its
    rounding to f16, which the stored block holds).
    """
    blocks = np.asarray(x, F32).reshape(*np.shape(x)[:-1], -1, 32)
    amax = np.abs(blocks).max(-1, keepdims=True)
    d = (amax / F32(127)).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, F32(127) / np.where(amax > 0, amax, F32(1)), F32(0)).astype(F32)
    q = np.rint((blocks * inv).astype(F32)).astype(np.int64)
    return q.reshape(np.shape(x)), d


def q8_k_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's Q8_K activation quantiser on float32 rows (length a multiple of 256).

    Per super-block: ``m`` is the first value of largest magnitude, ``iscale = -127 / m``,
    ``q = min(127, rint(iscale * x))`` (halves to even) and ``d = 1 / iscale`` in float32
    (0 for an all-zero block). Returns ``q`` (int64 ``(..., n)``) and ``d`` (``(..., n/256, 1)``).
    """
    blocks = np.asarray(x, F32).reshape(*np.shape(x)[:-1], -1, 256)
    first = np.argmax(np.abs(blocks), axis=-1)[..., None]
    m = np.take_along_axis(blocks, first, -1)
    nz = m != 0
    iscale = np.where(nz, F32(-127) / np.where(nz, m, F32(1)), F32(0)).astype(F32)
    q = np.minimum(127, np.rint((iscale * blocks).astype(F32))).astype(np.int64)
    d = np.where(nz, F32(1) / np.where(nz, iscale, F32(1)), F32(0)).astype(F32)
    return q.reshape(np.shape(x)), d


def dot_activations(x: np.ndarray, weight: DType) -> np.ndarray:
    """The values the CPU dot product of a ``weight``-typed left operand sees of float32 ``x``.

    Q8_0 blocks (``q * f16(d)``) for :data:`Q8_0_DOT`, Q8_K super-blocks (``q * d``) for
    :data:`Q8_K_DOT`; any other type: ``x`` unchanged. Returned as float64.
    """
    x = np.asarray(x, F32)
    if weight in Q8_0_DOT:
        q, d = q8_0_quantize(x)
        d16 = d.astype(np.float16).astype(np.float64)
        qb = q.reshape(d.shape[:-1] + (32,)).astype(np.float64)
        return np.asarray(qb * d16, np.float64).reshape(x.shape)
    if weight in Q8_K_DOT:
        q, d = q8_k_quantize(x)
        qb = q.reshape(d.shape[:-1] + (256,)).astype(np.float64)
        return np.asarray(qb * d.astype(np.float64), np.float64).reshape(x.shape)
    return np.asarray(x, np.float64)
