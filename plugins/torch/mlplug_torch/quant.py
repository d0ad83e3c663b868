"""Block-quantised data as torch tensors: dequantisation on the device, quantisation on the host.

Raw blocks are held as ``uint8`` tensors of shape ``(..., n_blocks, bytes_per_block)``.
Q8_0, Q4_0 and MXFP4 dequantise with torch ops on the tensor's device (the fast path of
``mulmat`` with quantised weights); the other types go through :mod:`mlplug.quants` on the
host. :func:`decode_tile` also decodes the CPU weight tiles of ``mulmat`` (every type of
:data:`TORCH_DECODED`: Q4_1, Q5_0, Q5_1, MXFP4, the k-quants, F16 and BF16 too) into a reused
buffer. Quantising (``cast``/``cpy``/``set_rows`` into a quantised tensor) always uses
:func:`mlplug.quants.quantize`, so the bytes are those of the other backends.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import torch.nn.functional as F

from mlplug import quants
from mlplug.plugin_api import BYTE_BITS, TRAITS, DType, can_quantize

__all__ = [
    "TORCH_DECODED",
    "can_quantize",
    "decode_tile",
    "dequantize",
    "quantize",
    "split_nibbles",
]

#: MXFP4 code points (E2M1 values, doubled), as int8 in the block nibble order.
_MXFP4_VALUES = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


#: Types whose tiles torch decodes itself on the CPU: its elementwise ops run on every thread
#: (numpy's on one), about 4x faster here; the values equal mlplug's decoders bit for bit.
TORCH_DECODED = frozenset(
    (DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.MXFP4, DType.F16)
    + (DType.BF16, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K)
)


def _byte_table(values: torch.Tensor) -> torch.Tensor:
    """A lookup table of eight int8 values per byte value (``(256, 8)``), held as one int64 per
    byte: :func:`_lookup` then gathers whole rows with one ``index_select``."""
    return values.to(torch.int8).contiguous().view(torch.int64).view(256)


#: By the offset taken off the quants (Q5_0: 16; Q5_1, Q5_K: 0): every byte value's eight bits
#: as 0 or 16, minus that offset.
_FIFTH_BITS = {
    offset: _byte_table(torch.from_numpy(BYTE_BITS.copy()).to(torch.int16) * 16 - offset)
    for offset in (0, 16)
}


def _lookup(table: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``table``'s eight int8 values for every byte of ``keys`` (uint8): int8 ``(*keys, 8)``."""
    got = torch.index_select(table.to(keys.device), 0, keys.reshape(-1).int())
    return got.view(torch.int8).view(*keys.shape, 8)


def _half(rows: torch.Tensor, at: int) -> torch.Tensor:
    """The f16 at byte ``at`` (even) of each block, as float32 ``(n, n_blocks, 1)``: read
    through a 2-byte view of the blocks, not a gathered copy."""
    return rows.view(torch.int16)[..., at // 2 : at // 2 + 1].view(torch.float16).float()


_local = threading.local()


def split_nibbles(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The low and high nibbles of every byte of ``rows`` (``(n, blocks, bytes)`` uint8, CPU),
    as int8 of the same shape (0..15), into this thread's reused buffers.

    Whole rows at a time: torch runs flat uint8 ops about ten times faster than the same ops
    on a block's strided bytes, and the scale bytes' nibbles cost less than picking them out.
    """
    n = rows.numel()
    buf: torch.Tensor | None = getattr(_local, "nibbles", None)
    if buf is None or buf.shape[1] < n or buf.device != rows.device:
        buf = _local.nibbles = torch.empty((2, n), dtype=torch.uint8, device=rows.device)
    flat = rows.reshape(-1)
    lo = torch.bitwise_and(flat, 0x0F, out=buf[0, :n])
    hi = torch.bitwise_right_shift(flat, 4, out=buf[1, :n])
    return lo.view(rows.shape).view(torch.int8), hi.view(rows.shape).view(torch.int8)


def _quants(n: int, device: torch.device) -> torch.Tensor:
    """This thread's reused int8 buffer of ``n`` values, where a tile's integer quants are put
    together before one conversion to float32 (byte ops cost a quarter of float32 ones)."""
    buf: torch.Tensor | None = getattr(_local, "quants", None)
    if buf is None or buf.numel() < n or buf.device != device:
        buf = _local.quants = torch.empty(n, dtype=torch.int8, device=device)
    return buf[:n]


def _q4_k(rows: torch.Tensor, out: torch.Tensor) -> None:
    """Q4_K super-blocks: ``(d * sc) * q - dmin * mn`` per sub-block of 32 (see quantmm).

    Chunk ``i`` of the 128 nibble bytes holds sub-block ``2i`` in its low nibbles and
    ``2i + 1`` in its high ones. Gemma 3's 640x2048 tile: 2.2 -> 0.74 ms with the nibbles split
    over whole rows (:func:`split_nibbles`) instead of per chunk.
    """
    _k_values(rows, out, 16)


def _q5_k(rows: torch.Tensor, out: torch.Tensor) -> None:
    """Q5_K super-blocks: as Q4_K with the nibbles at byte 48 and a fifth bit per value (bit
    ``s`` of byte ``j`` of bytes 16..47: value ``j`` of sub-block ``s``), added as 16."""
    _k_values(rows, out, 48, fifth=True)


def k_scales_mins(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eight 6-bit scales and mins of Q4_K/Q5_K super-blocks (bytes 4..15), each uint8
    ``(..., 8)``: low six bits of bytes 0..3 / 4..7, then nibbles of bytes 8..11 topped with the
    two high bits of bytes 0..3 / 4..7."""
    s = blocks[..., 4:16]
    lo, hi, mix = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = torch.cat([lo & 0x3F, (mix & 0x0F) | ((lo >> 2) & 0x30)], dim=-1)
    mn = torch.cat([hi & 0x3F, (mix >> 4) | ((hi >> 2) & 0x30)], dim=-1)
    return sc, mn


def q3_k_scales(blocks: torch.Tensor) -> torch.Tensor:
    """The sixteen signed scales of Q3_K super-blocks as float32 ``(..., 16)``: scale ``k``'s low
    nibble from byte ``96 + k mod 8`` (shifted by ``4 (k // 8)``), its top two bits from byte
    ``104 + k mod 4`` (shifted by ``2 (k // 4)``), minus 32."""
    s, hs = blocks[..., 96:104], blocks[..., 104:108]
    low = torch.cat([s & 0x0F, s >> 4], dim=-1)
    high = torch.cat([hs & 3, (hs >> 2) & 3, (hs >> 4) & 3, (hs >> 6) & 3], dim=-1)
    return (low | (high << 4)).float() - 32.0


def e8m0_half(e: torch.Tensor) -> torch.Tensor:
    """MXFP4's e8m0 exponents (int32) -> ggml's half scale ``2^(e - 128)`` as float32, built
    from its bits (a subnormal below ``e = 2``)."""
    small = torch.bitwise_left_shift(torch.full_like(e, 0x00200000), e)
    return torch.where(e < 2, small, (e - 1) << 23).view(torch.float32)


def _k_values(rows: torch.Tensor, out: torch.Tensor, at: int, fifth: bool = False) -> None:
    """``(d * sc) * q - dmin * mn`` per sub-block of 32 of Q4_K/Q5_K super-blocks, ``q`` the
    nibbles at byte ``at``, plus 16 where a fifth bit is set (``fifth``: bit ``s`` of byte
    ``j`` of bytes 16..47 is value ``j`` of sub-block ``s``'s). The quants are put together
    as int8, then widened once."""
    n, nb = rows.shape[:2]
    sc, mn = k_scales_mins(rows)
    d = (_half(rows, 0) * sc.float()).unsqueeze(-1)  # (n, nb, 8, 1)
    dm = (_half(rows, 2) * mn.float()).unsqueeze(-1)
    low, high = split_nibbles(rows)
    q = _quants(n * nb * 256, rows.device).view(n, nb, 4, 2, 32)  # sub-block 2 chunk + low/high
    nibbles = (
        low[..., at : at + 128].view(n, nb, 4, 32),
        high[..., at : at + 128].view(n, nb, 4, 32),
    )
    if fifth:  # the bits of byte j, by sub-block, as (chunk, low/high, j)
        bits = _lookup(_FIFTH_BITS[0], rows[..., 16:48]).view(n, nb, 32, 4, 2)
        bits = bits.permute(0, 1, 3, 4, 2)
        for half in (0, 1):
            torch.add(nibbles[half], bits[..., half, :], out=q[..., half, :])
    else:
        for half in (0, 1):
            q[..., half, :] = nibbles[half]
    blocks = out.view(n, nb, 8, 32)
    blocks.copy_(q.view(n, nb, 8, 32))
    blocks.mul_(d).sub_(dm)


def _q6_k(rows: torch.Tensor, out: torch.Tensor) -> None:
    """Q6_K super-blocks: ``(d * sc) * (q - 32)`` per group of 16 (see quantmm).

    Value ``128h + 64j + l`` (``l < 64``) has its low four bits in nibble ``j`` of byte
    ``64h + l`` and its top two in bits ``2c`` of byte ``128 + 32h + l mod 32``, where
    ``c = 2j + l // 32``. Both are taken with whole-row operations, as for Q4_K; the high part is
    added as ``16 * crumb`` (exact integers in float32, the same ``q`` as before).
    """
    n, nb = rows.shape[:2]
    d = _half(rows, 208) * rows[..., 192:208].view(torch.int8).float()  # (n, nb, 16)
    low, high = split_nibbles(rows)
    halves = out.view(n, nb, 2, 2, 64)  # (h, j, l)
    halves[..., 0, :].copy_(low[..., :128].view(n, nb, 2, 64))
    halves[..., 1, :].copy_(high[..., :128].view(n, nb, 2, 64))
    crumbs = out.view(n, nb, 2, 4, 32)  # (h, c, l mod 32)
    for c in range(4):  # bits 2c of the byte: bits 0 or 2 of its low (c < 2) or high nibble
        nibble = (low if c < 2 else high)[..., 128:192].view(n, nb, 2, 32)
        crumbs[..., c, :].add_((nibble >> 2 if c % 2 else nibble) & 0x03, alpha=16)
    blocks = out.view(n, nb, 16, 16)
    blocks.sub_(32.0).mul_(d.unsqueeze(-1))


def decode_tile(rows: torch.Tensor, dtype: DType, out: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 ``(n, K)`` of ``n`` encoded rows (``(n, n_blocks, bytes)`` uint8 blocks, or
    ``(n, K)`` halves) of a type in :data:`TORCH_DECODED`, written into ``out`` if given (a
    reused buffer: a fresh megabyte per tile costs the allocator more than the decoding)."""
    n = rows.shape[0]
    if out is None:
        per = 1 if rows.dim() == 2 else TRAITS[dtype].block_size
        out = torch.empty((n, rows.shape[1] * per), dtype=torch.float32, device=rows.device)
    if dtype in (DType.F16, DType.BF16):
        return out.copy_(rows)
    if dtype == DType.MXFP4:
        return out.copy_(_mxfp4(rows).view(n, -1))
    super_blocks = _SUPER_BLOCKS.get(dtype)
    if super_blocks is not None:
        super_blocks(rows, out)
        return out
    nb = rows.shape[1]
    blocks = out.view(n, nb, 32)
    if dtype == DType.Q8_0:
        blocks.copy_(rows[..., 2:].view(torch.int8))
        blocks.mul_(_half(rows, 0))
        return out
    # byte j of the nibbles holds value j (low nibble) and j + 16 (high); Q5_0/Q5_1: bit j of
    # a 32-bit word is value j's fifth; value (q - offset) * d, plus m for Q4_1/Q5_1. The
    # quants are put together as int8 (Q5_0's offset folded into its bit table) and widened
    # once (Gemma 3's 2048 x 640 Q5_0 tiles: 0.98 -> 0.66 ms)
    at, fifth_at, offset, has_min = _BLOCK32[dtype]
    low, high = split_nibbles(rows)
    q = _quants(n * nb * 32, rows.device).view(n, nb, 32)
    if fifth_at:
        bits = _lookup(_FIFTH_BITS[offset], rows[..., fifth_at : fifth_at + 4]).view(q.shape)
        torch.add(low[..., at:], bits[..., :16], out=q[..., :16])
        torch.add(high[..., at:], bits[..., 16:], out=q[..., 16:])
    else:
        q[..., :16] = low[..., at:]
        q[..., 16:] = high[..., at:]
        if offset:
            q.sub_(offset)  # exact integers
    blocks.copy_(q)
    blocks.mul_(_half(rows, 0))
    if has_min:
        blocks.add_(_half(rows, 2))
    return out


#: 32-value types: byte of the nibbles, byte of the fifth bits' word (0: none), the offset
#: taken off the quants, and whether an f16 minimum at byte 2 is added.
_BLOCK32 = {
    DType.Q4_0: (2, 0, 8, False),
    DType.Q5_0: (6, 2, 16, False),
    DType.Q4_1: (4, 0, 0, True),
    DType.Q5_1: (8, 4, 0, True),
}


def _q2_k(rows: torch.Tensor, out: torch.Tensor) -> None:
    """Q2_K super-blocks: ``(d * sc) * q - dmin * m`` per sub-block of 16 (``sc``/``m`` the low
    and high nibbles of bytes 0..15); value ``128h + 32j + l`` is bits ``2j`` of byte
    ``16 + 32h + l``."""
    n, nb = rows.shape[:2]
    sc = rows[..., 0:16]
    dl = (_half(rows, 80) * (sc & 0x0F).float()).unsqueeze(-1)  # (n, nb, 16, 1)
    ml = (_half(rows, 82) * (sc >> 4).float()).unsqueeze(-1)
    q = rows[..., 16:80].view(n, nb, 2, 32)
    values = out.view(n, nb, 2, 4, 32)
    for j in range(4):
        values[:, :, :, j].copy_((q >> (2 * j)) & 3)
    out.view(n, nb, 16, 16).mul_(dl).sub_(ml)


def _q3_k(rows: torch.Tensor, out: torch.Tensor) -> None:
    """Q3_K super-blocks: ``(d * (s - 32)) * q`` per sub-block of 16, ``q`` the two bits ``2j``
    of byte ``32 + 32h + l`` minus 4 where bit ``4h + j`` of mask byte ``l`` is clear; the 6-bit
    ``s`` are packed in bytes 96..107 (low nibbles, then pairs of top bits)."""
    n, nb = rows.shape[:2]
    dl = (_half(rows, 108) * q3_k_scales(rows)).unsqueeze(-1)
    mask, q = rows[..., 0:32], rows[..., 32:96].view(n, nb, 2, 32)
    values = out.view(n, nb, 2, 4, 32)
    for h in range(2):
        for j in range(4):
            v = values[:, :, h, j]
            v.copy_((q[:, :, h] >> (2 * j)) & 3)
            v.add_((mask >> (4 * h + j)) & 1, alpha=4).sub_(4.0)  # exact integers
    out.view(n, nb, 16, 16).mul_(dl)


#: The k-quants' tile decoders (super-blocks of 256 values).
_SUPER_BLOCKS = {
    DType.Q2_K: _q2_k,
    DType.Q3_K: _q3_k,
    DType.Q4_K: _q4_k,
    DType.Q5_K: _q5_k,
    DType.Q6_K: _q6_k,
}


#: ``(low nibble, high nibble)`` E2M1 values of every byte value 0..255.
_MXFP4_PAIRS = [[float(_MXFP4_VALUES[b & 0x0F]), float(_MXFP4_VALUES[b >> 4])] for b in range(256)]


def _mxfp4(raw: torch.Tensor) -> torch.Tensor:
    d = e8m0_half(raw[..., :1].to(torch.int32))
    qs = raw[..., 1:]
    table = torch.tensor(_MXFP4_PAIRS, dtype=torch.float32, device=raw.device)
    pairs = F.embedding(qs.int(), table)  # (..., 16, 2)
    return pairs.transpose(-1, -2).reshape(*qs.shape[:-1], 32).mul_(d)


_DEVICE_KERNELS = {DType.MXFP4: _mxfp4}


def dequantize(raw: torch.Tensor, dtype: DType) -> torch.Tensor:
    """Return float32 ``(..., n_blocks * block_size)`` of raw blocks ``(..., n_blocks, bytes)``.

    :raises DTypeError: for a type the host codecs cannot decode either.
    """
    lead = raw.shape[:-2]
    if dtype in (DType.Q8_0, DType.Q4_0):  # the tile decoders, on the tensor's device
        return decode_tile(raw.reshape(-1, *raw.shape[-2:]), dtype).reshape(*lead, -1)
    kernel = _DEVICE_KERNELS.get(dtype)
    if kernel is not None:
        return kernel(raw).reshape(*lead, -1)
    host = raw.contiguous().cpu().numpy().reshape(*lead, -1)
    values = quants.dequantize(host, dtype)
    return torch.from_numpy(np.ascontiguousarray(values)).to(raw.device)


def quantize(values: torch.Tensor, dtype: DType) -> torch.Tensor:
    """Quantise float rows ``(..., n)`` to raw blocks ``(..., n / block, bytes)`` (on the host).

    :raises DTypeError: if the host has no quantiser for ``dtype``.
    """
    tr = TRAITS[dtype]
    host = values.detach().to(torch.float32).cpu().numpy()
    raw = quants.quantize(host, dtype)
    out = torch.from_numpy(np.ascontiguousarray(raw)).to(values.device)
    return out.reshape(*values.shape[:-1], values.shape[-1] // tr.block_size, tr.type_size)
