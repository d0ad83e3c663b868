"""One-column products (a decode step's) as single loops compiled by inductor.

A decode step multiplies every weight by one activation column. Eagerly, a weight in a block
type costs several passes and a dozen torch calls per product (:mod:`.intdot`, or decoding a
tile to float32 and multiplying). Written as one expression — decode the blocks, multiply by
the column, sum — and compiled by inductor, the product becomes one vectorised C++ loop that
reads each weight byte once (Gemma 3's Q8_0 output product, 262144 x 640: 20.7 ms through
``_int_mm``, 7.3 ms fused; the tiny llama's 512 x 512 Q8_0 ones: 49 -> 19 us).

Each weight type has its expression here; the backend's :class:`.compiled.CompiledKernels`
compiles one kernel per (type, rows, columns) the first time a product of that shape runs,
checks it, and keeps it (or turns every compiled kernel off if that fails).

The numerics are ggml's CPU's, as the eager paths': Q8_0, Q4_0, Q5_0, MXFP4 take the column's Q8_0
quants (:class:`.intdot.Column`) and form each block's integer dot product exactly in float32
(at most 32 * 127 * 127), scaled by ``d_w * d_x``; Q4_1 and Q5_1 meet the Q8_1-rounded column
(``d * (q . x) + m * sum(x)`` per block); the k-quants (Q2_K to Q6_K) multiply their
sub-blocks' integer quants by the Q8_K-rounded column, then scale each sub-block (and take off
Q2_K's, Q4_K's and Q5_K's minimum); F16 and BF16 weights meet the column rounded to their type, F32
ones the column as it is. Only the order of the float32 sums differs from ggml's, as it does
between any two of mlplug's backends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import torch

from mlplug.plugin_api import DType

from ..quant import e8m0_half, k_scales_mins, q3_k_scales
from .compiled import CompiledKernels, Kernel

__all__ = ["GEMV_TYPES", "kernel_of"]


def _half(raw: torch.Tensor, at: int) -> torch.Tensor:
    """The f16 at byte ``at`` (even) of each block of ``raw`` ``(M, nb, bytes)``, as float32
    ``(M, nb)``."""
    return raw.view(torch.int16)[..., at // 2].view(torch.float16).float()


def _q8_0(raw: torch.Tensor, qx: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    s = (raw[..., 2:].view(torch.int8).float() * qx).sum(-1)  # exact integers
    return (s * (_half(raw, 0) * dx)).sum(-1)


def _nibble_dots(q: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
    """Per block, the dot of 16 nibble bytes ``q`` (value ``j`` low, ``j + 16`` high) with the
    column's 32 quants ``qx`` ``(nb, 32)``: exact integers."""
    # one sum of both halves' products (two sums: Gemma 3's 2048x640 Q5_0 about 1.5x slower)
    return ((q & 0x0F).float() * qx[:, :16] + (q >> 4).float() * qx[:, 16:]).sum(-1)


def _q4_0(raw: torch.Tensor, qx: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    s = _nibble_dots(raw[..., 2:], qx) - 8.0 * qx.sum(-1)
    return (s * (_half(raw, 0) * dx)).sum(-1)


def _q5_0(
    raw: torch.Tensor, qx: torch.Tensor, dx: torch.Tensor, bits: torch.Tensor
) -> torch.Tensor:
    """The fifth bits (bytes 2..5: bit ``j`` is value ``j``'s) by lookup: ``bits[4b + i, y]``
    is the sum of block ``b``'s quants ``8i + k`` over the set bits ``k`` of byte value ``y``
    (:meth:`.intdot.Column.bit_table`); 30 % faster than shifting 32 bits out per block."""
    nb = raw.shape[1]
    at = raw[..., 2:6].long() + torch.arange(0, nb * 4 * 256, 256).view(nb, 4)  # (M, nb, 4)
    fifth = bits.reshape(-1)[at].sum(-1).float()  # (M, nb)
    s = _nibble_dots(raw[..., 6:], qx) + 16.0 * fifth - 16.0 * qx.sum(-1)
    return (s * (_half(raw, 0) * dx)).sum(-1)


def _e2m1(codes: torch.Tensor) -> torch.Tensor:
    """MXFP4's 4-bit E2M1 codes -> their values doubled, as int32: magnitude code ``m`` (the
    low 3 bits) is 0, 1, 2, 3, 4, 6, 8, 12, and bit 3 the sign."""
    c = codes.to(torch.int32)
    m = c & 7
    v = torch.where(m < 4, m, (2 + (m & 1)) << ((m >> 1) - 1))
    return torch.where(c >= 8, -v, v)


def _mxfp4(raw: torch.Tensor, qx: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Byte 0: the e8m0 exponent (ggml's half scale ``2^(e - 128)``, built from its bits);
    bytes 1..16: E2M1 codes, value ``j`` the low nibble of byte ``j``, ``j + 16`` the high.
    Each block's integer dot with the column's Q8_0 quants, times both scales."""
    scale = e8m0_half(raw[..., 0].to(torch.int32))
    q = raw[..., 1:]
    s = (_e2m1(q & 0x0F).float() * qx[:, :16] + _e2m1(q >> 4).float() * qx[:, 16:]).sum(-1)
    return (s * (scale * dx)).sum(-1)


def _q4_1(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Value ``d * q + m``, nibbles as Q4_0's from byte 4: per block ``d * (q . x) + m * sum(x)``
    with the Q8_1-rounded column ``x`` ``(nb, 32)``."""
    return (_half(raw, 0) * _nibble_dots(raw[..., 4:], x) + _half(raw, 2) * x.sum(-1)).sum(-1)


def _q5_1(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """As Q4_1 with a fifth bit per value (bit ``j`` of the 32-bit word at bytes 4..7, added as
    16) and the nibbles from byte 8."""
    b = raw[..., 4:8].to(torch.int32)
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)  # (M, nb)
    bits = (word.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1  # (M, nb, 32)
    dots = _nibble_dots(raw[..., 8:], x) + 16.0 * (bits.float() * x).sum(-1)
    return (_half(raw, 0) * dots + _half(raw, 2) * x.sum(-1)).sum(-1)


def _k_sums(
    raw: torch.Tensor, x: torch.Tensor, even: torch.Tensor, odd: torch.Tensor
) -> torch.Tensor:
    """Q4_K/Q5_K rows from their sub-blocks' integer dots ``even`` (sub-blocks 0, 2, 4, 6) and
    ``odd`` (1, 3, 5, 7), each ``(M, nb, 4)``: ``sum_j (d * sc_j) * dot_j - dmin * m_j * sum_j x``
    with the six-bit scales and mins of bytes 4..15."""
    m, nb = raw.shape[:2]
    sc, mn = k_scales_mins(raw)
    d = (_half(raw, 0).unsqueeze(-1) * sc.float()).view(m, nb, 4, 2)
    scaled = even * d[..., 0] + odd * d[..., 1]
    mins = x.view(nb, 8, 32).sum(-1) * (_half(raw, 2).unsqueeze(-1) * mn.float())  # (M, nb, 8)
    return scaled.sum(-1).sum(-1) - mins.sum(-1).sum(-1)


def _q4_k(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sub-block ``j`` of 32: ``(d * sc_j) * q - dmin * m_j``; chunk ``i`` of the 128 nibble
    bytes holds sub-block ``2i`` low and ``2i + 1`` high. ``x``: ``(nb, 256)``."""
    m, nb = raw.shape[:2]
    q = raw[..., 16:].reshape(m, nb, 4, 32)
    xs = x.view(nb, 4, 2, 32)
    even = ((q & 0x0F).float() * xs[:, :, 0]).sum(-1)  # (M, nb, 4): sub-blocks 0, 2, 4, 6
    odd = ((q >> 4).float() * xs[:, :, 1]).sum(-1)
    return _k_sums(raw, x, even, odd)


def _q5_k(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """As Q4_K, with a fifth bit per value: bit ``s`` of byte ``j`` of bytes 16..47 is value
    ``j`` of sub-block ``s``'s (added as 16); the nibbles follow at byte 48."""
    m, nb = raw.shape[:2]
    qh = raw[..., 16:48]  # (M, nb, 32)
    q = raw[..., 48:].reshape(m, nb, 4, 32)
    xs = x.view(nb, 4, 2, 32)
    evens, odds = [], []
    for i in range(4):  # chunk i: sub-block 2i in the low nibbles, 2i + 1 in the high
        c = q[:, :, i]
        low = (c & 0x0F) | (((qh >> (2 * i)) & 1) << 4)
        high = (c >> 4) | (((qh >> (2 * i + 1)) & 1) << 4)
        evens.append((low.float() * xs[:, i, 0]).sum(-1))
        odds.append((high.float() * xs[:, i, 1]).sum(-1))
    return _k_sums(raw, x, torch.stack(evens, dim=-1), torch.stack(odds, dim=-1))


def _q2_k(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sub-block ``k`` of 16: ``(d * sc_k) * q - dmin * m_k`` with ``sc_k``/``m_k`` the low/high
    nibbles of byte ``k``. Value ``128h + 32j + l`` (``l < 32``) is bits ``2j`` of byte
    ``16 + 32h + l``; sub-block ``k = 8h + 2j + l // 16``. ``x``: ``(nb, 256)``."""
    m, nb = raw.shape[:2]
    sc = raw[..., 0:16]
    q = raw[..., 16:80].reshape(m, nb, 2, 32)
    xs = x.view(nb, 2, 4, 2, 16)  # (h, j, l // 16, l mod 16)
    dots = [
        (((q >> (2 * j)) & 3).float().view(m, nb, 2, 2, 16) * xs[:, :, j]).sum(-1) for j in range(4)
    ]  # each (M, nb, h, l // 16)
    dot = torch.stack(dots, dim=3).reshape(m, nb, 16)  # sub-block 8h + 2j + l // 16
    d = _half(raw, 80).unsqueeze(-1) * (sc & 0x0F).float()
    mins = x.view(nb, 16, 16).sum(-1) * (_half(raw, 82).unsqueeze(-1) * (sc >> 4).float())
    return (dot * d).sum(-1).sum(-1) - mins.sum(-1).sum(-1)


def _q3_k(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sub-block ``k`` of 16: ``(d * s_k) * q`` (``s_k``: :func:`..quant.q3_k_scales`),
    ``q = low - 4`` where bit ``4h + j`` of byte ``l`` of the 32-byte mask is clear; ``low``:
    bits ``2j`` of byte ``32 + 32h + l``, as Q2_K's. ``x``: ``(nb, 256)``."""
    m, nb = raw.shape[:2]
    hm = raw[..., 0:32]
    q = raw[..., 32:96].reshape(m, nb, 2, 32)
    scales = q3_k_scales(raw)  # (M, nb, 16)
    xs = x.view(nb, 2, 4, 2, 16)
    dots = []
    for h in range(2):
        for j in range(4):
            bits = ((hm >> (4 * h + j)) & 1).float()
            v = ((q[:, :, h] >> (2 * j)) & 3).float() + 4.0 * bits - 4.0  # exact integers
            dots.append((v.view(m, nb, 2, 16) * xs[:, h, j]).sum(-1))  # (M, nb, l // 16)
    dot = torch.stack(dots, dim=2).reshape(m, nb, 16)
    return (dot * (_half(raw, 108).unsqueeze(-1) * scales)).sum(-1).sum(-1)


def _q6_k(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Group ``g`` of 16: ``(d * sc_g) * (q - 32)``. Value ``128h + 64j + 32u + i`` has its low
    four bits in nibble ``j`` of byte ``64h + 32u + i`` and its top two in bits ``2(2j + u)``
    of byte ``128 + 32h + i``: eight pieces of 32 values, two groups each. ``x``: ``(nb, 256)``."""
    m, nb = raw.shape[:2]
    d = _half(raw, 208).unsqueeze(-1) * raw[..., 192:208].view(torch.int8).float()  # (M, nb, 16)
    xs = x.view(nb, 8, 2, 16)
    dots = []
    for h in range(2):
        high = raw[..., 128 + 32 * h : 160 + 32 * h]
        for j in range(2):
            for u in range(2):
                low = raw[..., 64 * h + 32 * u : 64 * h + 32 * u + 32]
                nib = (low >> 4) if j else (low & 0x0F)
                q = (nib | (((high >> (2 * (2 * j + u))) & 3) << 4)).float().view(m, nb, 2, 16)
                dots.append((q * xs[:, 4 * h + 2 * j + u]).sum(-1))  # (M, nb, 2)
    groups = torch.cat(dots, dim=-1) - 32.0 * xs.reshape(nb, 16, 16).sum(-1)  # (M, nb, 16)
    return (groups * d).sum(-1).sum(-1)


def _halves(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """F16, BF16 (widened) or F32 rows times the column."""
    return (raw.float() * x).sum(-1)


#: Types whose one-column products compile, and whether they take the column's Q8_0 quants
#: (``True``) or its rounded values.
GEMV_TYPES: Final[dict[DType, bool]] = {
    DType.Q8_0: True,
    DType.Q4_0: True,
    DType.Q5_0: True,
    DType.MXFP4: True,
    DType.Q4_1: False,
    DType.Q5_1: False,
    DType.Q2_K: False,
    DType.Q3_K: False,
    DType.Q4_K: False,
    DType.Q5_K: False,
    DType.Q6_K: False,
    DType.F16: False,
    DType.BF16: False,
    DType.F32: False,
}

_EXPRESSIONS: Final[dict[DType, Callable[..., torch.Tensor]]] = {
    DType.Q8_0: _q8_0,
    DType.Q4_0: _q4_0,
    DType.Q5_0: _q5_0,
    DType.MXFP4: _mxfp4,
    DType.Q4_1: _q4_1,
    DType.Q5_1: _q5_1,
    DType.Q2_K: _q2_k,
    DType.Q3_K: _q3_k,
    DType.Q4_K: _q4_k,
    DType.Q5_K: _q5_k,
    DType.Q6_K: _q6_k,
    DType.F16: _halves,
    DType.BF16: _halves,
    DType.F32: _halves,
}


def kernel_of(
    kernels: CompiledKernels,
    dtype: DType,
    shape: torch.Size,
    operands: Callable[[], tuple[torch.Tensor, ...]],
) -> Kernel | None:
    """The compiled one-column product of a ``dtype`` weight whose blocks have ``shape`` (one
    kernel per weight shape; ``operands()``, the weight's blocks then the column's parts, are
    made only to compile it), or None where its compilation failed."""
    return kernels.kernel(("gemv", dtype, shape), _EXPRESSIONS[dtype], operands)
