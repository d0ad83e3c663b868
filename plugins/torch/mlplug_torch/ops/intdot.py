"""One-column products with Q8_0, Q4_0 and Q5_0 weights taken in integers, as ggml's CPU does.

A decode step multiplies every weight by one activation column. ggml's CPU quantises that
column to Q8_0 and, per 32-value block, scales the integer dot product of the weight's quants
and the column's quants by both blocks' scales: ``y[r] = sum_b (dw[r, b] * dx[b]) * S[r, b]``.

Here one ``torch._int_mm`` (int8 in, int32 out; VNNI on x86) gives every ``S[r, b]`` of a tile
of rows at once: the column's quants are laid out block-diagonally, ``X[(b, i), b] = qx[b, i]``,
so ``W @ X`` is ``S``. For Q8_0, ``W`` is the weight's own bytes: each block's two scale bytes
meet zero rows of ``X``, so no decoded copy of the weight is ever made. Q4_0 and Q5_0 tiles are
unpacked to their unsigned quants (int8) first, and their offset (8 or 16 times the block's
sum of ``qx``) is taken off ``S``. A block-diagonal ``X`` costs one multiply-add per weight per
block of its row chunk, so rows are cut into chunks of :data:`CHUNK_BLOCKS` blocks.

Compared with decoding a tile to float32 and multiplying, this reads each weight byte once and
writes nothing per weight (tiny llama q8_0 decode: see the issue-10 note for figures).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch

from mlplug.plugin_api import DType

__all__ = ["CHUNK_BLOCKS", "INT_DOT_TYPES", "Column", "int_column", "int_mm_works", "q8_0_quants"]

#: Weight types whose one-column products run here.
INT_DOT_TYPES: Final = frozenset({DType.Q8_0, DType.Q4_0, DType.Q5_0})

#: Blocks per row chunk of one ``_int_mm`` (its X has this many columns).
CHUNK_BLOCKS: Final = 16

#: Rows decoded (Q4_0/Q5_0) and reduced per tile: their int32 sums stay in cache.
TILE_ROWS: Final = 2048

_BLOCK_BYTES: Final = {DType.Q8_0: 34, DType.Q4_0: 18, DType.Q5_0: 22}
_OFFSET: Final = {DType.Q8_0: 0, DType.Q4_0: 8, DType.Q5_0: 16}
_BIT = torch.arange(8, dtype=torch.uint8)

_works: bool | None = None


def int_mm_works() -> bool:
    """Whether this torch has a CPU ``torch._int_mm`` (2.4 and later; probed once)."""
    global _works
    if _works is None:
        try:
            a = torch.ones((2, 32), dtype=torch.int8)
            _works = bool(torch._int_mm(a, a.t().contiguous())[0, 0] == 32)
        except (AttributeError, RuntimeError, NotImplementedError):
            _works = False
    return _works


def q8_0_quants(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantise a float32 column (length a multiple of 32) to Q8_0 as ggml's x86 CPU does.

    Returns the quants (float32 integers in -127..127, ``(blocks, 32)``) and the blocks'
    scales ``f16(amax / 127)`` as float32 ``(blocks,)``. Each block is scaled by ``127 / amax``
    (one correctly rounded float32 division) and rounded to the nearest integer, halves to
    even. numpy, not torch: on a column of a few thousand values numpy's per-call cost is a
    few times smaller, and these are the same IEEE float32 operations.
    """
    blocks = x.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1)
    scale = np.zeros_like(amax)
    np.divide(np.float32(127.0), amax, out=scale, where=amax > 0)
    q = np.rint(blocks * scale[:, None])
    return q, (amax / np.float32(127.0)).astype(np.float16).astype(np.float32)


class Column:
    """One activation column, quantised once and laid out for the products that share it.

    :param x: the float32 column ``(K,)`` (K a multiple of 32).
    """

    def __init__(self, x: np.ndarray) -> None:
        q, d = q8_0_quants(x)
        self.quants = q
        #: The blocks' scales ``(blocks,)``.
        self.scales = torch.from_numpy(d)
        #: Each block's sum of quants ``(blocks,)`` (the Q4_0/Q5_0 offsets' factor).
        self.sums = torch.from_numpy(q.sum(axis=1))
        self._layouts: dict[int, torch.Tensor] = {}

    def layout(self, stride: int) -> torch.Tensor:
        """Block-diagonal X of every chunk, ``(blocks, stride, C)`` int8 (``C``: blocks per
        chunk): block ``b``'s quants at its last 32 of ``stride`` rows, column ``b % C``."""
        xs = self._layouts.get(stride)
        if xs is None:
            nb = self.quants.shape[0]
            chunk = min(nb, CHUNK_BLOCKS)
            host = np.zeros((nb, stride, chunk), dtype=np.int8)
            b = np.arange(nb)
            host[b, stride - 32 :, b % chunk] = self.quants
            xs = self._layouts[stride] = torch.from_numpy(host)
        return xs


def _unpack(raw: torch.Tensor, dtype: DType, out: torch.Tensor) -> torch.Tensor:
    """Unsigned quants (0..15 or 0..31) of Q4_0/Q5_0 blocks ``(n, nb, bytes)`` as int8
    ``(n, nb, 32)`` in ``out``: byte ``j`` holds value ``j`` (low nibble) and ``j + 16``."""
    at = 2 if dtype == DType.Q4_0 else 6
    qs = raw[..., at:]
    lo, hi = out[..., :16].view(torch.uint8), out[..., 16:].view(torch.uint8)
    torch.bitwise_and(qs, 0x0F, out=lo)
    torch.bitwise_right_shift(qs, 4, out=hi)
    if dtype == DType.Q5_0:  # bit j of the 32-bit word at bytes 2..5: value j's fifth bit
        fifth = ((raw[..., 2:6].unsqueeze(-1) >> _BIT) & 1).flatten(-2) << 4
        out.view(torch.uint8).bitwise_or_(fifth)
    return out


def int_column(raw: torch.Tensor, dtype: DType, x: Column) -> torch.Tensor:
    """``W @ x`` for one column ``x`` and weight blocks ``raw`` ``(M, nb, bytes)`` (uint8,
    CPU) of a type in :data:`INT_DOT_TYPES`; returns float32 ``(M,)``."""
    m, nb, size = raw.shape
    dx = x.scales
    q8 = dtype == DType.Q8_0
    step = size if q8 else 32
    xs = x.layout(step)
    bias = x.sums * _OFFSET[dtype] if not q8 else None  # (nb,)
    wd = raw.view(torch.int16)[..., 0].view(torch.float16)  # (M, nb) scale halves
    out = torch.empty(m, dtype=torch.float32)
    tile = None if q8 else torch.empty((min(m, TILE_ROWS), nb, 32), dtype=torch.int8)
    whole = xs.view(nb * step, nb) if nb <= CHUNK_BLOCKS else None
    for r0 in range(0, m, TILE_ROWS):
        rows = min(TILE_ROWS, m - r0)
        block_rows = raw[r0 : r0 + rows]
        if q8:
            w = block_rows.view(torch.int8).view(rows, nb * size)
        else:
            assert tile is not None
            w = _unpack(block_rows, dtype, tile[:rows]).view(rows, nb * 32)
        if whole is not None:
            s = torch._int_mm(w, whole)
        else:
            s = torch.empty((rows, nb), dtype=torch.int32)
            for c0 in range(0, nb, CHUNK_BLOCKS):
                c1 = min(c0 + CHUNK_BLOCKS, nb)
                chunk = xs[c0:c1, :, : c1 - c0].reshape((c1 - c0) * step, c1 - c0)
                s[:, c0:c1] = torch._int_mm(w[:, c0 * step : c1 * step], chunk)
        f = s.float()
        if bias is not None:
            f.sub_(bias)
        torch.mv(f.mul_(wd[r0 : r0 + rows].float()), dx, out=out[r0 : r0 + rows])
    return out
