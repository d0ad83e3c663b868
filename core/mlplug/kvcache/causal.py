"""A causal KV cache, optionally limited to a sliding window of recent positions."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError
from .base import KVCache

if TYPE_CHECKING:
    from ..backend import Backend
    from ..context import Context
    from ..tensor import Tensor

__all__ = ["DEFAULT_HISTORY_BUCKET", "CausalCache"]

#: Cells by which the history a pass reads grows (rounded up to the backend's ``cache_padding``).
DEFAULT_HISTORY_BUCKET: Final = 256


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class CausalCache(KVCache):
    """Per layer, keys ``[hd·H_kv, cells]`` and values alike (or transposed, ``permuted_v``).

    Without a window, position ``p`` lives in cell ``p`` and the cache holds ``num_ctx``
    positions. With ``window=W`` it is a ring of ``W + max_batch`` cells (position ``p`` in cell
    ``p mod cells``): a query at ``p`` sees the keys at ``p-W+1 … p`` only, so older cells can be
    reused. Cells are padded to the backend's ``cache_padding``; writes go through ``set_rows``
    at an I32 index tensor and the history is a view of the first ``L`` cells.

    ``L`` covers every cell in use, rounded up to ``history_bucket`` cells (itself rounded up to
    a multiple of ``cache_padding``) and capped at the cell count, so a decode step's graph has
    the same shape for ``history_bucket`` tokens in a row and a built pass can be run again
    (:meth:`prepare` returns ``L``). The cells past the last one in use are hidden by the mask
    (-inf) and hold zeros (the cache is zero-filled when made, and only ever written with
    computed keys and values), so they add exactly nothing to the attention.

    :param layers: the model layers this cache serves.
    :param dtype: ``DType.F16`` (default) or ``DType.F32``.
    :param history_bucket: growth step of the history length in cells (1: grow by the padding).
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
        history_bucket: int = DEFAULT_HISTORY_BUCKET,
    ) -> None:
        if dtype not in (DType.F16, DType.F32):
            msg = f"KV cache dtype must be f16 or f32, got {dtype.name.lower()}"
            raise ShapeError(msg, op="kvcache")
        if num_ctx < 1 or max_batch < 1 or (window is not None and window < 1):
            msg = f"KV cache sizes must be positive: num_ctx {num_ctx}, window {window}"
            raise ShapeError(msg, op="kvcache")
        if history_bucket < 1:
            msg = f"history_bucket must be at least 1, got {history_bucket}"
            raise ShapeError(msg, op="kvcache")
        cfg = backend.cache_config()
        self.padding = max(cfg.cache_padding, 1)
        #: Cells by which the history view grows: a multiple of the padding.
        self.history_step = _round_up(history_bucket, self.padding)
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
        #: The prepared pass's cell indices (I32) and mask ``(T, L)`` (F32, 0 or -inf).
        self._cells_in = np.zeros(0, dtype=np.int32)
        self._mask_in = np.zeros((0, 0), dtype=np.float32)

    @property
    def capacity(self) -> int:
        """Positions the cache can hold: its cells (unbounded with a sliding window)."""
        return self.cells if self.window is None else sys.maxsize

    def _cells_for(self, positions: np.ndarray) -> np.ndarray:
        if self.window is None:
            return positions
        return positions % self.cells

    def prepare(self, positions: Sequence[int]) -> int:
        """Assign cells to ``positions`` and compute this pass's inputs; return the history length.

        :raises ShapeError: too many tokens for one pass, a position outside the cache, or two
            positions sharing a cell of the window.
        """
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
        self._n_kv = min(self.cells, _round_up(used, self.history_step))
        held = self.cell_pos[: self._n_kv]
        visible = (held[None, :] >= 0) & (held[None, :] <= pos[:, None])
        if self.window is not None:
            visible &= held[None, :] > pos[:, None] - self.window
        self._cells_in = cells.astype(np.int32)
        self._mask_in = np.where(visible, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)
        return self._n_kv

    def inputs(self) -> list[np.ndarray]:
        """Return the prepared cell indices and mask (the order of :meth:`bind`)."""
        return [self._cells_in, self._mask_in]

    def bind(self, ctx: Context) -> list[Tensor]:
        """Create the prepared pass's index and mask tensors in ``ctx`` and return them."""
        inputs = ctx.input()
        idx = inputs.from_ints(self._cells_in, self._cells_in.size)
        mask_in = inputs.from_floats(self._mask_in)
        mask = mask_in
        if self.mask_dtype not in (DType.OTHER, DType.F32):
            mask = mask.cast(ctx, self.mask_dtype)
        self._idx, self._mask = idx, mask
        return [idx, mask_in]

    def begin(self, ctx: Context, positions: Sequence[int]) -> None:
        """Assign cells to ``positions`` and build the index tensor and the mask in ``ctx``."""
        self.prepare(positions)
        self.bind(ctx)

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
