"""One-column products with Q8_0, Q4_0 and Q5_0 weights taken in integers, as ggml's CPU does.

A decode step multiplies every weight by one activation column. ggml's CPU quantises that
column to Q8_0 and, per 32-value block, scales the integer dot product of the weight's quants
and the column's quants by both blocks' scales: ``y[r] = sum_b (dw[r, b] * dx[b]) * S[r, b]``.

Here one ``torch._int_mm`` (int8 in, int32 out; VNNI on x86) gives every ``S[r, b]`` of a tile
of rows at once: the column's quants are laid out block-diagonally, ``X[(b, i), b] = qx[b, i]``,
so ``W @ X`` is ``S``. For Q8_0, ``W`` is the weight's own bytes: each block's two scale bytes
meet zero rows of ``X``, so no decoded copy of the weight is ever made. Q4_0 and Q5_0 rows are
split into low and high nibbles (whole rows, flat ops), Q5_0's fifth bits are looked up per
column, and their offset (8 or 16 times the block's
sum of ``qx``) is taken off ``S``. A block-diagonal ``X`` costs one multiply-add per weight per
block of its row chunk, so rows are cut into chunks of :data:`CHUNK_BLOCKS` blocks.

Compared with decoding a tile to float32 and multiplying, this reads each weight byte once and
writes nothing per weight (tiny llama q8_0 decode: see the issue-10 note for figures).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch

from mlplug.plugin_api import BYTE_BITS, DType, q8_0_quants

from ..quant import split_nibbles

__all__ = ["CHUNK_BLOCKS", "INT_DOT_TYPES", "Column", "int_column", "int_mm_works"]

#: Weight types whose one-column products run here.
INT_DOT_TYPES: Final = frozenset({DType.Q8_0, DType.Q4_0, DType.Q5_0})

#: Blocks per row chunk of one ``_int_mm`` (its X has this many columns).
CHUNK_BLOCKS: Final = 16

#: Rows per tile: a tile's block sums, nibbles and scales stay in cache.
TILE_ROWS: Final = 2048

_OFFSET: Final = {DType.Q4_0: 8, DType.Q5_0: 16}

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


class Column:
    """One activation column, quantised once and laid out for the products that share it.

    :param x: the float32 column ``(K,)`` (K a multiple of 32).
    """

    def __init__(self, x: np.ndarray) -> None:
        q, d = q8_0_quants(x)
        self.quants = q
        #: The quants as a torch tensor (the same memory).
        self.quants_t = torch.from_numpy(q)
        #: The blocks' scales ``(blocks,)``.
        self.scales = torch.from_numpy(d)
        #: Each block's sum of quants ``(blocks,)`` (the Q4_0/Q5_0 offsets' factor).
        self.sums = torch.from_numpy(q.sum(axis=1))
        self._layouts: dict[tuple[int, int, int], torch.Tensor] = {}
        self._bits: torch.Tensor | None = None

    def layout(self, stride: int, first: int = 0, count: int = 32) -> torch.Tensor:
        """Block-diagonal X of every chunk, ``(blocks, stride, C)`` int8 (``C``: blocks per
        chunk): block ``b``'s quants ``first..first+count`` at the last ``count`` of its
        ``stride`` rows (where a weight block's quants lie), in column ``b % C``."""
        key = (stride, first, count)
        xs = self._layouts.get(key)
        if xs is None:
            nb = self.quants.shape[0]
            chunk = min(nb, CHUNK_BLOCKS)
            host = np.zeros((nb, stride, chunk), dtype=np.int8)
            b = np.arange(nb)
            host[b, stride - count :, b % chunk] = self.quants[:, first : first + count]
            xs = self._layouts[key] = torch.from_numpy(host)
        return xs

    def bit_table(self) -> torch.Tensor:
        """``T[4b + i, y]``: the sum of block ``b``'s quants ``8i + k`` over the set bits ``k``
        of byte value ``y`` (int32 ``(blocks * 4, 256)``): Q5_0's fifth bits by lookup."""
        if self._bits is None:
            # (blocks * 4, 8) @ (8, 256): sums of at most 8 quants, exact in float32
            table = self.quants.reshape(-1, 8) @ BYTE_BITS.T
            self._bits = torch.from_numpy(table.astype(np.int32))
        return self._bits


def _block_dots(w: torch.Tensor, xs: torch.Tensor, step: int) -> torch.Tensor:
    """``S[r, b]``: the integer dot product of row ``r``'s block ``b`` (``step`` int8 columns
    of ``w`` each) with the column's block, against the layout ``xs`` (chunk by chunk)."""
    rows = w.shape[0]
    nb = xs.shape[0]
    if nb <= CHUNK_BLOCKS:
        return torch._int_mm(w, xs.view(nb * step, nb))
    s = torch.empty((rows, nb), dtype=torch.int32)
    for c0 in range(0, nb, CHUNK_BLOCKS):
        c1 = min(c0 + CHUNK_BLOCKS, nb)
        chunk = xs[c0:c1, :, : c1 - c0].reshape((c1 - c0) * step, c1 - c0)
        s[:, c0:c1] = torch._int_mm(w[:, c0 * step : c1 * step], chunk)
    return s


def _fifth_bits(block_rows: torch.Tensor, x: Column) -> torch.Tensor:
    """``sum_j bit_j * qx_j`` per row and block of Q5_0 blocks (bit ``j`` of the 32-bit word
    at bytes 2..5 is value ``j``'s fifth bit), through :meth:`Column.bit_table`."""
    rows, nb, _ = block_rows.shape
    table = x.bit_table()  # (nb * 4, 256)
    idx = block_rows[..., 2:6].reshape(rows, nb * 4, 1).long()
    picked = torch.gather(table.expand(rows, nb * 4, 256), 2, idx)
    return picked.view(rows, nb, 4).sum(-1, dtype=torch.int32)


def int_column(raw: torch.Tensor, dtype: DType, x: Column) -> torch.Tensor:
    """``W @ x`` for one column ``x`` and weight blocks ``raw`` ``(M, nb, bytes)`` (uint8,
    CPU) of a type in :data:`INT_DOT_TYPES`; returns float32 ``(M,)``.

    Q8_0 rows are their own int8 bytes. Q4_0/Q5_0 byte ``j`` holds value ``j`` (low nibble)
    and ``j + 16`` (high): the low nibbles of whole rows meet quants ``0..15``, the high ones
    ``16..31``, and Q5_0 adds 16 times its fifth bits' sums; the offset (8 or 16 times the
    block's quant sum) is taken off last.
    """
    m, nb, size = raw.shape
    rows_per_tile = min(m, TILE_ROWS)
    out = torch.empty(m, dtype=torch.float32)
    wd = raw.view(torch.int16)[..., 0].view(torch.float16)  # (M, nb) scale halves
    q8 = dtype == DType.Q8_0
    if q8:
        xs = x.layout(size)
    else:
        xs, x_hi = x.layout(size, 0, 16), x.layout(size, 16, 16)
        bias = x.sums * _OFFSET[dtype]  # (nb,)
    for r0 in range(0, m, rows_per_tile):
        rows = min(rows_per_tile, m - r0)
        block_rows = raw[r0 : r0 + rows]
        flat = block_rows.view(rows, nb * size)
        if q8:
            f = _block_dots(flat.view(torch.int8), xs, size).float()
        else:
            # whole rows split (scale bytes too: flat ops are the fast ones, and the layouts give
            # those bytes zero weight), as int8 values 0..15
            lo, hi = (h.view(rows, nb * size).view(torch.int8) for h in split_nibbles(block_rows))
            s = _block_dots(lo, xs, size).add_(_block_dots(hi, x_hi, size))
            if dtype == DType.Q5_0:
                s.add_(_fifth_bits(block_rows, x), alpha=16)
            f = s.float().sub_(bias)
        torch.mv(f.mul_(wd[r0 : r0 + rows].float()), x.scales, out=out[r0 : r0 + rows])
    return out
