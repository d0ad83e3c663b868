"""Matrix products with weights kept as raw GGUF blocks: decoded a tile of rows at a time.

A backend without native quantised kernels (cpu_numpy, torch on the CPU) would otherwise
dequantise a whole weight for every product. Here a weight stays in its file encoding; a
product decodes :data:`TILE_BYTES` of float32 rows at a time into one reused buffer and
multiplies each tile with the activations, so the extra memory is one tile, not one weight.
A one-column product (a decode step) with a Q8_0, Q4_0 or Q5_0 weight skips the decoding: it
sums each block's integer quants against the activations and scales the block sums, as ggml's
CPU does.

The decoders here are vectorised numpy for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, F16
and BF16 and give the same float32 values, bit for bit, as :func:`mlplug.quants.dequantize`
(the ``gguf`` package's codecs): each value is computed with the same float32 operations in the
same order. Other block types decode a tile through :func:`mlplug.quants.dequantize`.

Block layouts (ggml's, little-endian; ``d``/``m``/``dmin`` are f16):

- Q8_0 (34 bytes / 32 values): ``d``, 32 int8; value ``q * d``.
- Q4_0 (18 / 32): ``d``, 16 bytes: value ``j`` is the low nibble of byte ``j``, value
  ``j + 16`` its high nibble; value ``(q - 8) * d``.
- Q4_1 (20 / 32): ``d``, ``m``, nibbles as Q4_0; value ``d * q + m``.
- Q5_0 (22 / 32): ``d``, a 32-bit word of fifth bits (bit ``j`` for value ``j``), nibbles as
  Q4_0; value ``(q - 16) * d``. Q5_1 (24 / 32) adds ``m`` after ``d``; value ``d * q + m``.
- Q4_K (144 / 256): ``d``, ``dmin``, 12 bytes of eight 6-bit scales and mins, 128 bytes of
  nibbles (chunk ``i`` of 32 bytes holds sub-block ``2i`` in its low and ``2i + 1`` in its high
  nibbles); value ``(d * sc) * q - dmin * mn``.
- Q5_K (176 / 256): as Q4_K with 32 bytes of fifth bits before the nibbles (bit ``s`` of byte
  ``j`` for value ``j`` of sub-block ``s``).
- Q6_K (210 / 256): 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales
  (one per 16 values), ``d``; value ``(d * sc) * (q - 32)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Final

import numpy as np

from .dtypes import TRAITS, DType
from .errors import DTypeError, ShapeError
from .halves import f16_round, half_to_f32
from .quants import bf16_to_f32, dequantize, f32_to_bf16

__all__ = [
    "BYTE_BITS",
    "DOT_ROUNDINGS",
    "FAST_TYPES",
    "MIN_TILE_WORK",
    "TILE_ALIGN",
    "TILE_BYTES",
    "WIDE_TILE_BYTES",
    "WeightCopies",
    "copy_bytes",
    "decode_rows",
    "dot_rounding",
    "mulmat_rows",
    "q8_0_quants",
    "q8_0_round",
    "q8_k_round",
    "row_bytes",
    "row_tiles",
    "tile_rows",
    "tile_spans",
]

#: Float32 bytes of one decoded tile (the default of :func:`tile_rows`): about the L2 cache, for
#: a one-column product (a decode step), which reads the tile once.
TILE_BYTES = 1 << 20
#: Tile bytes of a product with several columns (a prompt): the matrix kernel reuses a tile for
#: every column and runs faster on wider tiles.
WIDE_TILE_BYTES = 4 << 20

F32 = np.float32
_Q5K_BIT_SHIFT = np.arange(8, dtype=np.uint8).reshape(8, 1)


def _f16(b: np.ndarray, at: int) -> np.ndarray:
    """The f16 at byte ``at`` (even) of each block of ``b`` (uint8 ``(..., type_size)``, an
    even size), as float32 ``(..., 1)``: read through a 2-byte view of the blocks, which numpy
    gathers about 4x faster than a contiguous copy of the 2-byte slices."""
    halves = b.view(np.uint16) if b.flags.c_contiguous else np.ascontiguousarray(b).view(np.uint16)
    return half_to_f32(halves[..., at // 2 : at // 2 + 1])


def _halves(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The low and high nibbles of every byte of blocks ``b``, same shape: whole-array
    operations, several times faster than the same on each block's strided bytes."""
    return b & np.uint8(0x0F), b >> np.uint8(4)


def _nibbles(b: np.ndarray, at: int) -> np.ndarray:
    """The 16 bytes at ``at`` of each block ``b`` -> ``(..., 32)`` uint8: their low nibbles,
    then their high nibbles (split over whole blocks, then placed)."""
    lo, hi = _halves(b)
    q = np.empty((*b.shape[:-1], 32), np.uint8)
    q[..., :16] = lo[..., at : at + 16]
    q[..., 16:] = hi[..., at : at + 16]
    return q


#: The eight bits of every byte value, float32 ``(256, 8)`` (bit ``t`` in column ``t``, 0 or 1;
#: read-only): fifth-bit lookups here and in the plugins are built from it.
BYTE_BITS: Final = (np.arange(256)[:, None] >> np.arange(8) & 1).astype(F32)
BYTE_BITS.flags.writeable = False

#: Every byte value's eight bits, each shifted to 16 (0 or 16), as one uint64 (byte ``k`` is
#: bit ``k``): a little-endian word's fifth bits by lookup, 1.5x faster than ``unpackbits``.
_FIFTH_BITS: Final = (BYTE_BITS.astype(np.uint8) << 4).view(np.uint64)[:, 0]


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """``(..., 4)`` bytes of a little-endian 32-bit word -> ``(..., 32)`` bits shifted to 16."""
    bits: np.ndarray = np.take(_FIFTH_BITS, qh).view(np.uint8)
    return bits.reshape(*qh.shape[:-1], 32)


def _scaled(q: np.ndarray, d: np.ndarray, out: np.ndarray) -> None:
    """``out = q * d`` for integer ``q``: widened into ``out`` first, then multiplied in place.

    The same float32 products as ``np.multiply(q, d)`` (the widening is exact), without numpy's
    mixed-type loop, which casts a few values at a time and runs about 3x slower.
    """
    np.copyto(out, q, casting="unsafe")
    out *= d


def _q8_0(b: np.ndarray, out: np.ndarray) -> None:
    _scaled(b[..., 2:].view(np.int8), _f16(b, 0), out)


def _q4_0(b: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles(b, 2).view(np.int8)
    q -= np.int8(8)
    _scaled(q, _f16(b, 0), out)


def _q4_1(b: np.ndarray, out: np.ndarray) -> None:
    _scaled(_nibbles(b, 4), _f16(b, 0), out)
    out += _f16(b, 2)


def _q5_0(b: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles(b, 6)
    q |= _fifth_bits(b[..., 2:6])
    q = q.view(np.int8)
    q -= np.int8(16)
    _scaled(q, _f16(b, 0), out)


def _q5_1(b: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles(b, 8)
    q |= _fifth_bits(b[..., 4:8])
    _scaled(q, _f16(b, 0), out)
    out += _f16(b, 2)


def _k_scales(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 ``(d * sc, dmin * mn)``, each ``(..., 8, 1)``, of Q4_K/Q5_K super-blocks."""
    s = b[..., 4:16]
    lo, hi, mix = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = np.concatenate([lo & 0x3F, (mix & 0x0F) | ((lo >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([hi & 0x3F, (mix >> 4) | ((hi >> 2) & 0x30)], axis=-1)
    d = _f16(b, 0) * sc.astype(F32)
    dm = _f16(b, 2) * mn.astype(F32)
    return d[..., None], dm[..., None]


def _k_place(b: np.ndarray, at: int, dest: np.ndarray) -> np.ndarray:
    """Write the 128 nibble bytes at ``at`` of Q4_K/Q5_K super-blocks ``b`` into ``dest``
    (``(..., 256)`` values, any dtype) by sub-block and return it as ``(..., 8, 32)``: chunk
    ``i`` of 32 bytes holds sub-block ``2i`` in its low nibbles and ``2i + 1`` in its high."""
    lead = b.shape[:-1]
    lo, hi = _halves(b)
    chunks = dest.reshape(*lead, 4, 2, 32)
    np.copyto(chunks[..., 0, :], lo[..., at : at + 128].reshape(*lead, 4, 32), casting="unsafe")
    np.copyto(chunks[..., 1, :], hi[..., at : at + 128].reshape(*lead, 4, 32), casting="unsafe")
    return chunks.reshape(*lead, 8, 32)


def _k_scale(b: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    """``out = (d * sc) * q - dmin * mn`` for Q4_K/Q5_K super-blocks ``b`` and values ``q``."""
    d, dm = _k_scales(b)
    o = out.reshape(q.shape)
    _scaled(q, d, o)
    o -= dm


def _q4_k(b: np.ndarray, out: np.ndarray) -> None:
    # the nibbles go straight into ``out`` (no integer copy first), then as _k_scale
    o = _k_place(b, 16, out)
    d, dm = _k_scales(b)
    o *= d
    o -= dm


def _q5_k(b: np.ndarray, out: np.ndarray) -> None:
    q = _k_place(b, 48, np.empty((*b.shape[:-1], 256), np.uint8))
    qh = b[..., 16:48].reshape(*b.shape[:-1], 1, 32)
    q |= ((qh >> _Q5K_BIT_SHIFT) & np.uint8(1)) << np.uint8(4)
    _k_scale(b, q, out)


def _q6_k(b: np.ndarray, out: np.ndarray) -> None:
    # value 128h + 64j + l: low bits in nibble j of byte 64h + l, top two in bits 2c of byte
    # 128 + 32h + l mod 32 (c = 2j + l // 32); both from whole-array nibble splits
    lead = b.shape[:-1]
    lo, hi = _halves(b)
    q = np.empty((*lead, 2, 2, 64), np.uint8)
    q[..., 0, :] = lo[..., :128].reshape(*lead, 2, 64)
    q[..., 1, :] = hi[..., :128].reshape(*lead, 2, 64)
    crumbs = q.reshape(*lead, 2, 4, 32)
    for c in range(4):  # bits 2c of the byte: bits 0 or 2 of its low (c < 2) or high nibble
        nibble = (lo if c < 2 else hi)[..., 128:192].reshape(*lead, 2, 32)
        crumbs[..., c, :] |= ((nibble >> np.uint8(2) if c % 2 else nibble) & np.uint8(3)) << 4
    qs = q.view(np.int8)
    qs -= np.int8(32)
    d = _f16(b, 208) * b[..., 192:208].view(np.int8).astype(F32)
    _scaled(qs.reshape(*lead, 16, 16), d[..., None], out.reshape(*lead, 16, 16))


def _f16_rows(b: np.ndarray, out: np.ndarray) -> None:
    half_to_f32(np.ascontiguousarray(b).view(np.uint16), out)


def _bf16_rows(b: np.ndarray, out: np.ndarray) -> None:
    out.view(np.uint32)[...] = b.view("<u2").astype(np.uint32) << np.uint32(16)


_Decoder = Callable[[np.ndarray, np.ndarray], None]

#: Block decoders ``(blocks (..., type_size) uint8, out (..., block_size) f32)``.
_DECODERS: dict[DType, _Decoder] = {
    DType.Q8_0: _q8_0,
    DType.Q4_0: _q4_0,
    DType.Q4_1: _q4_1,
    DType.Q5_0: _q5_0,
    DType.Q5_1: _q5_1,
    DType.Q4_K: _q4_k,
    DType.Q5_K: _q5_k,
    DType.Q6_K: _q6_k,
    DType.F16: _f16_rows,
    DType.BF16: _bf16_rows,
}

#: Types with a vectorised decoder here (others decode through :func:`mlplug.quants.dequantize`).
FAST_TYPES: frozenset[DType] = frozenset(_DECODERS)


#: Weight types whose dot product ggml's CPU takes against Q8_0-quantised activations (Q8_1
#: for Q4_1/Q5_1, whose values round the same way).
_Q8_0_DOT: Final = frozenset(
    {DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.MXFP4}
)
#: k-quant weights: their dot product takes Q8_K activations (super-blocks of 256).
_Q8_K_DOT: Final = frozenset({DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K})


def dot_rounding(weight: DType, right: DType) -> str | None:
    """How ggml's CPU rounds the right operand of a product with ``weight`` (its
    ``vec_dot_type``): ``"f16"``, ``"bf16"``, ``"q8_0"`` or ``"q8_k"`` for an F32 right
    operand of an F16, BF16, Q8_0-dot or k-quant weight; None where it is taken as it is."""
    if right != DType.F32:
        return None
    if weight in (DType.F16, DType.BF16):
        return weight.name.lower()
    if weight in _Q8_0_DOT:
        return "q8_0"
    if weight in _Q8_K_DOT:
        return "q8_k"
    return None


def q8_0_quants(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantise float32 rows (length a multiple of 32) to Q8_0 as ggml's x86 CPU does.

    Each block of 32 is scaled by ``127 / amax`` in float32 (0 for an all-zero block) and
    rounded to the nearest integer, halves to even (the vector rounding instruction).

    :returns: the quants as float32 integers ``(..., blocks, 32)`` and the blocks' scales
        ``f16(amax / 127)`` as float32 ``(..., blocks)``.
    """
    blocks = x.astype(F32).reshape(*x.shape[:-1], -1, 32)
    amax = np.max(np.abs(blocks), axis=-1)
    safe = np.where(amax == 0, F32(1), amax)
    scale = np.where(amax == 0, F32(0), F32(127) / safe).astype(F32)
    q: np.ndarray = np.rint(blocks * scale[..., None])
    d: np.ndarray = (amax / F32(127)).astype(np.float16).astype(F32)
    return q, d


def q8_0_round(x: np.ndarray) -> np.ndarray:
    """Round float32 rows (length a multiple of 32) through Q8_0 as ggml's x86 CPU does: the
    values ``q * d`` of :func:`q8_0_quants`."""
    q, d = q8_0_quants(x)
    out: np.ndarray = (q * d[..., None]).astype(F32).reshape(x.shape)
    return out


def q8_k_round(x: np.ndarray) -> np.ndarray:
    """Round float32 rows (length a multiple of 256) through Q8_K as ggml's CPU does.

    The first value of largest magnitude ``m`` of each super-block sets ``iscale = -127 / m``;
    ``q = min(127, rint(iscale * x))`` (halves to even) and the values are ``q / iscale``.
    """
    blocks = x.astype(F32).reshape(*x.shape[:-1], -1, 256)
    pick = np.argmax(np.abs(blocks), axis=-1)[..., None]
    m = np.take_along_axis(blocks, pick, axis=-1)
    zero = m == 0
    iscale = np.where(zero, F32(0), F32(-127) / np.where(zero, F32(1), m)).astype(F32)
    q = np.minimum(np.rint(blocks * iscale), F32(127))
    d = np.where(zero, F32(0), F32(1) / np.where(zero, F32(1), iscale)).astype(F32)
    out: np.ndarray = (q * d).astype(F32).reshape(x.shape)
    return out


#: The roundings :func:`dot_rounding` names, on float32 host arrays.
DOT_ROUNDINGS: Final[dict[str, Callable[[np.ndarray], np.ndarray]]] = {
    "f16": f16_round,
    "bf16": lambda x: bf16_to_f32(f32_to_bf16(x)),
    "q8_0": q8_0_round,
    "q8_k": q8_k_round,
}


def row_bytes(dtype: DType, k: int) -> int:
    """Return the bytes of one row of ``k`` values of ``dtype``.

    :raises DTypeError: if ``dtype`` is not a block or half type.
    :raises ShapeError: if ``k`` is not a positive multiple of the block size.
    """
    tr = TRAITS[dtype]
    if not (dtype.is_quantized or dtype in (DType.F16, DType.BF16)) or not tr.type_size:
        msg = f"quantised matmul: {dtype.name} is not a block-encoded or half type"
        raise DTypeError(msg, op="mulmat", dtypes=(dtype,))
    if k <= 0 or k % tr.block_size:
        msg = f"quantised matmul: row length {k} is not a multiple of {dtype.name}'s block size"
        msg += f" {tr.block_size}"
        raise ShapeError(msg)
    return k // tr.block_size * tr.type_size


def _as_rows(raw: np.ndarray, dtype: DType, k: int) -> np.ndarray:
    """View ``raw`` (any array of a weight's rows, e.g. void blocks) as uint8 ``(rows, bytes)``."""
    nbytes = row_bytes(dtype, k)
    if raw.ndim == 0:
        msg = "quantised matmul: the weight must have at least one dimension"
        raise ShapeError(msg)
    flat = raw if raw.flags.c_contiguous else np.ascontiguousarray(raw)
    u8 = flat.reshape(-1).view(np.uint8)
    if u8.size % nbytes:
        msg = (
            f"quantised matmul: {u8.size} bytes of {dtype.name} are not whole rows of "
            f"{nbytes} bytes (K = {k})"
        )
        raise ShapeError(msg)
    return u8.reshape(-1, nbytes)


def decode_rows(raw: np.ndarray, dtype: DType, k: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode rows of ``k`` values of ``dtype`` to float32 ``(rows, k)``.

    :param raw: the rows' bytes, as any array whose bytes are whole rows in order (uint8
        ``(rows, row_bytes)``, void blocks ``(rows, n_blocks)``, float16 ``(rows, k)``...).
    :param out: optional float32 ``(rows, k)`` C-contiguous buffer to decode into.
    :returns: ``out`` (or a new array), equal bit for bit to :func:`mlplug.quants.dequantize`.
    :raises DTypeError: for a type that is not block-encoded or half.
    :raises ShapeError: for a bad row length or ``out`` of the wrong shape.
    """
    rows = _as_rows(raw, dtype, k)
    n = rows.shape[0]
    if out is None:
        out = np.empty((n, k), F32)
    elif out.shape != (n, k) or out.dtype != F32 or not out.flags.c_contiguous:
        msg = f"quantised matmul: decode buffer must be C-contiguous float32 {(n, k)}"
        msg += f", got {out.dtype} {out.shape}"
        raise ShapeError(msg)
    tr = TRAITS[dtype]
    fast = _DECODERS.get(dtype)
    with np.errstate(all="ignore"):  # IEEE results of the stored scales (inf, nan) are kept
        if fast is None:
            out[...] = dequantize(rows, dtype)
        else:
            blocks = rows.reshape(n, k // tr.block_size, tr.type_size)
            fast(blocks, out.reshape(n, k // tr.block_size, tr.block_size))
    return out


#: Tiles hold a multiple of this many rows, so that the matrix kernels split a tile's columns
#: as they split a whole weight's (same sums, bit for bit, in the products measured).
TILE_ALIGN = 64


def tile_rows(k: int, tile_bytes: int = TILE_BYTES) -> int:
    """Rows of ``k`` float32 values in one tile of about ``tile_bytes``: a multiple of 64."""
    rows = tile_bytes // (4 * max(k, 1))
    return max(TILE_ALIGN, rows - rows % TILE_ALIGN)


#: A tile of a product with more than one column holds at least this many multiply-adds
#: (rows x columns x K): BLAS libraries send small products to other kernels (OpenBLAS: below
#: about 10**6), whose sums round differently from those of the whole weight's product.
MIN_TILE_WORK = 1 << 21


def tile_spans(
    m: int, k: int, columns: int = 1, tile_bytes: int | None = None
) -> Iterator[tuple[int, int]]:
    """Yield ``(first_row, rows)`` of the tiles a product over ``m`` rows of ``k`` values uses.

    Tiles have :func:`tile_rows` rows of ``tile_bytes`` (default: :data:`TILE_BYTES` for one
    column, :data:`WIDE_TILE_BYTES` for more), more for a product of ``columns`` > 1 columns (see
    :data:`MIN_TILE_WORK`); the last tile takes the remaining rows (fewer than two tiles' worth),
    so no tile is smaller than the others. A backend decoding tiles its own way (torch on the
    CPU) uses the same spans, so its products split their sums as :func:`row_tiles`' do.
    """
    if tile_bytes is None:
        tile_bytes = TILE_BYTES if columns == 1 else WIDE_TILE_BYTES
    step = tile_rows(k, tile_bytes)
    if columns > 1:
        least = -(-MIN_TILE_WORK // (columns * k))
        step = max(step, least + (-least) % TILE_ALIGN)
    r0 = 0
    while r0 < m:
        n = m - r0 if m - r0 < 2 * step else step
        yield r0, n
        r0 += n


_local = threading.local()


def _scratch(n: int) -> np.ndarray:
    """This thread's float32 decode buffer, at least ``n`` values (grown as needed).

    A fresh buffer per product cost more in page faults than the decoding once the allocator
    hands large blocks back to the system (a Q8_0 decode step after a long prompt: 47 -> 30 ms).
    """
    buf: np.ndarray | None = getattr(_local, "buf", None)
    if buf is None or buf.size < n:
        buf = _local.buf = np.empty(n, F32)
    return buf[:n]


def row_tiles(
    raw: np.ndarray,
    dtype: DType,
    k: int,
    tile_bytes: int | None = None,
    columns: int = 1,
    *,
    reuse: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, float32 tile (n, k))`` over a weight's rows, decoded a tile at a time.

    The tiles are :func:`tile_spans`' and share one buffer: a tile is valid until the next is
    yielded. With ``reuse``, that buffer is this thread's scratch buffer, kept between calls:
    only for a caller that finishes one iteration before starting another in the same thread.

    :raises DTypeError: for a type that is not block-encoded or half.
    :raises ShapeError: for a bad row length.
    """
    rows = _as_rows(raw, dtype, k)
    spans = list(tile_spans(rows.shape[0], k, columns, tile_bytes))
    most = max((n for _, n in spans), default=0)
    buf = _scratch(most * k).reshape(most, k) if reuse else np.empty((most, k), F32)
    for r0, n in spans:
        yield r0, decode_rows(rows[r0 : r0 + n], dtype, k, buf[:n])


def mulmat_rows(
    raw: np.ndarray,
    dtype: DType,
    k: int,
    x: np.ndarray,
    out: np.ndarray | None = None,
    tile_bytes: int | None = None,
) -> np.ndarray:
    """Return ``x @ W^T`` for a weight ``W`` of ``m`` rows of ``k`` values held as raw blocks.

    :param raw: the weight's bytes, ``m`` whole rows in order (see :func:`decode_rows`).
    :param x: float32 activations ``(..., k)``.
    :param out: optional float32 ``(..., m)`` array to write the result into.
    :param tile_bytes: float32 bytes of a tile; default :data:`TILE_BYTES` for one column,
        :data:`WIDE_TILE_BYTES` for more.
    :returns: float32 ``(..., m)``; the same as ``x @ dequantize(W).T`` up to the
        summation order of the float32 matrix product.
    :raises DTypeError: for a type that is not block-encoded or half.
    :raises ShapeError: for a bad row length or mismatched ``x`` / ``out``.
    """
    rows = _as_rows(raw, dtype, k)
    m = rows.shape[0]
    if x.shape[-1:] != (k,):
        msg = f"quantised matmul: activations {x.shape} do not end in K = {k}"
        raise ShapeError(msg)
    shape = (*x.shape[:-1], m)
    if out is not None and out.shape != shape:
        msg = f"quantised matmul: output {out.shape} is not {shape}"
        raise ShapeError(msg)
    # each tile is one matmul over x's batch dimensions, shaped as a whole-weight product
    xs = np.asarray(x, F32).reshape(-1, k) if x.ndim == 1 else np.asarray(x, F32)
    direct = out is not None and out.dtype == F32 and out.flags.c_contiguous
    res = out if direct and out is not None else np.empty(xs.shape[:-1] + (m,), F32)
    res_view = res.reshape(xs.shape[:-1] + (m,))  # a view: res is C-contiguous
    if dtype in _COLUMN_PRODUCTS and xs.size == k:
        _COLUMN_PRODUCTS[dtype](rows, k, xs.reshape(k), res_view.reshape(m), tile_bytes)
        return res.reshape(shape) if out is None else _finish(out, res, shape, direct)
    part: np.ndarray | None = None  # contiguous product of one tile (BLAS writes it directly)
    for r0, tile in row_tiles(rows, dtype, k, tile_bytes, xs.shape[-2], reuse=True):
        n = tile.shape[0]
        if xs.shape[-2] == 1:
            np.matmul(xs, tile.T, out=res_view[..., r0 : r0 + n])
            continue
        if part is None or part.shape[-1] != n:
            part = np.empty((*xs.shape[:-1], n), F32)
        np.matmul(xs, tile.T, out=part)
        res_view[..., r0 : r0 + n] = part
    if out is None:
        return res.reshape(shape)
    return _finish(out, res, shape, direct)


def _finish(out: np.ndarray, res: np.ndarray, shape: tuple[int, ...], direct: bool) -> np.ndarray:
    if not direct:
        out[...] = res.reshape(shape)
    return out


def _scale_sums(sums: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[r] = sum over blocks i of d[r, i] * sums[i, r]``: a tile's block sums ``(nb, n)``
    times the f16 scales ``d`` at byte 0 of blocks ``b`` ``(n, nb, size)``, summed per row.

    The scales are gathered already transposed, so both factors run along the rows and one
    einsum multiplies and sums (a 512 x 512 Q8_0 tile: 31 -> 17 us, where a product of the
    transposed sums and a row-wise sum of 16 values each took most of it).
    """
    d = half_to_f32(np.ascontiguousarray(b.view(np.uint16)[..., 0].T))  # (nb, n)
    np.einsum("ir,ir->r", sums, d, out=out)


def _q8_0_column(
    rows: np.ndarray, k: int, x: np.ndarray, out: np.ndarray, tile_bytes: int | None
) -> None:
    """``out = W x`` for a Q8_0 weight and one column, the way ggml's CPU sums it.

    Per block, the 32 integer weights times the activations' block (one BLAS matrix-vector
    product per block position over a tile of rows), then those partial sums times the blocks'
    scales, summed over the row: no pass multiplying every weight by its scale, which is what
    a decoded tile costs most (about 2x faster on a decode step). The tile's bytes are widened
    to float32 whole, scale bytes too (a contiguous cast, where picking the 32 quants of each
    block is a strided one); the products read the quants through a strided view (a tile of
    4096 x 512: 0.71 -> 0.54 ms).
    """
    nb = k // 32
    blocks = rows.reshape(-1, nb, 34)
    xb = x.reshape(nb, 32, 1)
    spans = list(tile_spans(blocks.shape[0], k, 1, tile_bytes))
    most = max((n for _, n in spans), default=0)
    buf = _scratch(most * nb * 34).reshape(most, nb * 34)
    with np.errstate(all="ignore"):  # IEEE results of the stored scales (inf, nan) are kept
        for r0, n in spans:
            b = blocks[r0 : r0 + n]
            wide = buf[:n]
            np.copyto(wide, b.reshape(n, nb * 34).view(np.int8), casting="unsafe")
            q = wide.reshape(n, nb, 34)[..., 2:]
            partial = np.matmul(q.transpose(1, 0, 2), xb)[..., 0]  # (nb, n)
            _scale_sums(partial, b, out[r0 : r0 + n])


#: Bytes per block and the offset of the nibbles in it, of the types :func:`_nibble_column` takes.
_NIBBLE_LAYOUT: Final = {DType.Q4_0: (18, 2), DType.Q5_0: (22, 6)}


def _nibble_column(
    rows: np.ndarray,
    k: int,
    x: np.ndarray,
    out: np.ndarray,
    tile_bytes: int | None,
    dtype: DType,
) -> None:
    """``out = W x`` for a Q4_0 or Q5_0 weight and one column, block by block (as Q8_0's).

    A tile's bytes are split into low and high nibbles with whole-row operations (the fast
    ones: picking a block's 16 nibble bytes first is a strided pass, 40x slower), shifted by
    the type's offset (8; Q5_0: 16) and widened to float32 whole. Value ``j`` of a block is the
    low nibble of its byte ``j`` and value ``j + 16`` the high one, so each block's sum is two
    products over strided views, plus, for Q5_0, 16 times the sum of the activations whose
    fifth bit is set: per-column tables give each byte of fifth bits its sum (four lookups a
    block, on the word of fifth bits read whole). The values are the decoder's; only the
    grouping of the sums differs (a 2048 x 640 Q5_0 product: 3.9 -> 2.0 ms; Q4_0: 2.6 -> 1.2).
    """
    size, head = _NIBBLE_LAYOUT[dtype]
    offset = np.int8(16 if dtype == DType.Q5_0 else 8)
    nb = k // 32
    blocks = rows.reshape(-1, nb, size)
    xb = x.reshape(nb, 32)
    x_lo, x_hi = xb[:, :16, None], xb[:, 16:, None]
    tables = None
    if dtype == DType.Q5_0:
        # tables[i][b, y]: the sum of activations 8i + t of block b over the set bits t of y
        sums = (xb.reshape(nb, 4, 8) @ BYTE_BITS.T).transpose(1, 0, 2)  # (4, nb, 256)
        tables = [np.ascontiguousarray(t).reshape(-1) for t in sums]
        base = (np.arange(nb, dtype=np.uint32) * np.uint32(256))[None, :]
    spans = list(tile_spans(blocks.shape[0], k, 1, tile_bytes))
    most = max((n for _, n in spans), default=0)
    buf = _scratch(2 * most * nb * size).reshape(2, most, nb * size)
    with np.errstate(all="ignore"):  # IEEE results of the stored scales (inf, nan) are kept
        for r0, n in spans:
            b = blocks[r0 : r0 + n]
            flat = b.reshape(n, nb * size)
            parts: list[np.ndarray] = []
            for j, (half, xh) in enumerate(zip(_halves(flat), (x_lo, x_hi), strict=True)):
                q = half.view(np.int8)
                q -= offset
                wide: np.ndarray = buf[j][:n]
                np.copyto(wide, q, casting="unsafe")
                view = wide.reshape(n, nb, size)[..., head:]
                parts.append(np.matmul(view.transpose(1, 0, 2), xh)[..., 0])  # (nb, n)
            sums = parts[0] + parts[1]
            if tables is not None:
                # the fifth bits as one 32-bit word per block, looked up a byte at a time
                word = np.ascontiguousarray(b[..., 2:6]).view(np.uint32)[..., 0]  # (n, nb)
                bits = np.zeros((n, nb), F32)
                for i, table in enumerate(tables):
                    idx = (word >> np.uint32(8 * i)) & np.uint32(0xFF)
                    idx += base
                    bits += np.take(table, idx)
                sums += np.float32(16) * bits.T
            _scale_sums(sums, b, out[r0 : r0 + n])


#: One-column products that sum block by block instead of decoding the weight.
_COLUMN_PRODUCTS: Final[dict[DType, Callable[..., None]]] = {
    DType.Q8_0: _q8_0_column,
    DType.Q4_0: partial(_nibble_column, dtype=DType.Q4_0),
    DType.Q5_0: partial(_nibble_column, dtype=DType.Q5_0),
}


# -- opt-in dequantised copies (BackendParams.dequantize) ------------------------------------
def copy_bytes(dtype: DType, n_elements: int) -> int:
    """Bytes of the float32 copy a weight of ``dtype`` gets when copies are on (0: none)."""
    return 4 * n_elements if dtype in FAST_TYPES else 0


class WeightCopies:
    """Float32 copies of block-encoded weights, made once after loading, keyed by tensor.

    A backend that supports :class:`~mlplug.params.DequantizeMode` ``f32`` keeps one of these:
    :meth:`make` decodes a weight's bytes once; kernels read :meth:`get`; the backend's
    allocation size adds :meth:`nbytes`, so the held memory matches the plan's estimate.
    """

    def __init__(self) -> None:
        self._copies: dict[int, np.ndarray] = {}

    def make(self, key: object, raw: np.ndarray, dtype: DType, ne: tuple[int, ...]) -> np.ndarray:
        """Decode ``raw`` (the weight's bytes; shape ``ne``, dim 0 fastest) and keep it.

        :returns: float32 ``ne[::-1]`` (C order).
        :raises DTypeError: for a type without a copy (see :func:`copy_bytes`).
        """
        if dtype not in FAST_TYPES:
            msg = f"no dequantised copy of {dtype.name} weights"
            raise DTypeError(msg, op="dequantize", dtypes=(dtype,))
        copy = decode_rows(raw, dtype, ne[0]).reshape(tuple(reversed(ne)))
        self._copies[id(key)] = copy
        return copy

    def get(self, key: object) -> np.ndarray | None:
        """Return the copy of ``key``'s weight, or None."""
        return self._copies.get(id(key))

    def nbytes(self, key: object) -> int:
        """Bytes of ``key``'s copy (0: none)."""
        copy = self._copies.get(id(key))
        return 0 if copy is None else copy.nbytes

    def discard(self, key: object) -> None:
        """Forget ``key``'s copy (its weight is freed)."""
        self._copies.pop(id(key), None)

    def clear(self) -> None:
        """Free every copy."""
        self._copies.clear()

    def __len__(self) -> int:
        return len(self._copies)
