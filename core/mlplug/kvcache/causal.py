"""A causal KV cache, optionally limited to a sliding window of recent positions."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError
from .base import KVCache

if TYPE_CHECKING:
    from ..backend import Backend
    from ..context import Context
    from ..tensor import Tensor

__all__ = ["CausalCache"]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class CausalCache(KVCache):
    """Per layer, keys ``[hd·H_kv, cells]`` and values alike (or transposed, ``permuted_v``).

    Without a window, position ``p`` lives in cell ``p`` and the cache holds ``num_ctx``
    positions. With ``window=W`` it is a ring of ``W + max_batch`` cells (position ``p`` in cell
    ``p mod cells``): a query at ``p`` sees the keys at ``p-W+1 … p`` only, so older cells can be
    reused. Cells are padded to the backend's ``cache_padding``; writes go through ``set_rows``
    at an I32 index tensor and the history is a view of the first ``L`` cells in use.

    :param layers: the model layers this cache serves.
    :param dtype: ``DType.F16`` (default) or ``DType.F32``.
    """

    def __init__(
        self,
        backend: Backend,
        layers: Sequence[int],
        *,
        head_dim: int,
        head_count_kv: int,
        num_ctx: int,
        dtype: DType = DType.F16,
        window: int | None = None,
        max_batch: int = 512,
    ) -> None:
        if dtype not in (DType.F16, DType.F32):
            msg = f"KV cache dtype must be f16 or f32, got {dtype.name.lower()}"
            raise ShapeError(msg, op="kvcache")
        if num_ctx < 1 or max_batch < 1 or (window is not None and window < 1):
            msg = f"KV cache sizes must be positive: num_ctx {num_ctx}, window {window}"
            raise ShapeError(msg, op="kvcache")
        cfg = backend.cache_config()
        self.padding = max(cfg.cache_padding, 1)
        self.permuted_v = cfg.permuted_v
        self.mask_dtype = cfg.mask_dtype
        self.window = window
        self.max_batch = max_batch
        wanted = num_ctx if window is None else min(num_ctx, window + max_batch)
        self.cells = _round_up(wanted, self.padding)
        self.head_dim = head_dim
        self.h_kv = head_count_kv
        self.dtype = dtype
        #: Position held by each cell (-1: empty).
        self.cell_pos = np.full(self.cells, -1, dtype=np.int64)
        self._slot = {layer: n for n, layer in enumerate(layers)}
        self._contexts: list[Context] = []
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        row = head_dim * head_count_kv
        for layer in layers:
            ctx = backend.new_context_size(2).layer(layer)
            self._contexts.append(ctx)
            self.keys.append(ctx.zeros(dtype, row, self.cells))
            v_shape = (self.cells, row) if self.permuted_v else (row, self.cells)
            self.values.append(ctx.zeros(dtype, *v_shape))
        self._idx: Tensor | None = None
        self._mask: Tensor | None = None
        self._n_kv = 0

    @property
    def capacity(self) -> int:
        """Positions the cache can hold: its cells (unbounded with a sliding window)."""
        return self.cells if self.window is None else sys.maxsize

    def _cells_for(self, positions: np.ndarray) -> np.ndarray:
        if self.window is None:
            return positions
        return positions % self.cells

    def begin(self, ctx: Context, positions: Sequence[int]) -> None:
        """Assign cells to ``positions`` and build the index tensor and the mask in ``ctx``."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size == 0 or pos.size > self.max_batch:
            msg = f"a forward pass carries 1 to {self.max_batch} tokens, got {pos.size}"
            raise ShapeError(msg, op="kvcache")
        if pos.min() < 0 or pos.max() >= self.capacity:
            msg = f"positions must lie in [0, {self.capacity}), got {pos.min()}..{pos.max()}"
            raise ShapeError(msg, op="kvcache")
        cells = self._cells_for(pos)
        if self.window is not None and np.unique(cells).size != cells.size:
            msg = f"positions {pos.min()}..{pos.max()} collide in a {self.cells}-cell window"
            raise ShapeError(msg, op="kvcache")
        self.cell_pos[cells] = pos
        used = int(np.flatnonzero(self.cell_pos >= 0).max()) + 1
        self._n_kv = min(self.cells, _round_up(used, self.padding))
        held = self.cell_pos[: self._n_kv]
        visible = (held[None, :] >= 0) & (held[None, :] <= pos[:, None])
        if self.window is not None:
            visible &= held[None, :] > pos[:, None] - self.window
        inputs = ctx.input()
        self._idx = inputs.from_ints(cells, cells.size)
        mask = inputs.from_floats(np.where(visible, 0.0, -np.inf).astype(np.float32))
        if self.mask_dtype not in (DType.OTHER, DType.F32):
            mask = mask.cast(ctx, self.mask_dtype)
        self._mask = mask

    def put(self, ctx: Context, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Write ``k``/``v`` of ``layer`` at this pass's cells; return the history and mask."""
        if self._idx is None or self._mask is None:
            msg = "KV cache put() before begin()"
            raise ShapeError(msg, op="kvcache")
        n = self._slot[layer]
        d, h, t, n_kv = self.head_dim, self.h_kv, k.dim(2), self._n_kv
        keys = self.keys[n].set_rows(ctx, k.reshape(ctx, d * h, t), self._idx)
        k_row = keys.stride(1) // h
        k_hist = keys.view(ctx, 0, d, k_row, h, keys.stride(1), n_kv)
        cache_v = self.values[n]
        if not self.permuted_v:
            values = cache_v.set_rows(ctx, v.reshape(ctx, d * h, t), self._idx)
            v_hist = values.view(ctx, 0, d, k_row, h, values.stride(1), n_kv)
        else:
            src = v.reshape(ctx, d * h, 1, t).permute(ctx, 2, 0, 1, 3)  # [1, T, d * H_kv]
            dst = cache_v.reshape(ctx, 1, self.cells, d * h)
            values = dst.set_rows(ctx, src, self._idx)
            cells = self.cells * cache_v.stride(0)
            v_hist = values.view(ctx, 0, n_kv, cells, d, cells * d, h)
        ctx.forward(keys, values)
        return k_hist, v_hist, self._mask

    def reset(self) -> None:
        """Forget every cached position."""
        self.cell_pos[:] = -1

    def close(self) -> None:
        """Free every layer's cache tensors."""
        for ctx in self._contexts:
            ctx.close()
        self._contexts.clear()
