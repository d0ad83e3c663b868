"""Llama: a decoder-only transformer (RMSNorm, RoPE, grouped-query attention, SwiGLU).

Built only from the public Tensor API, so it runs on every backend. Weights and
hyper-parameters follow llama.cpp's GGUF names; RoPE is the NORMAL mode (adjacent pairs),
which matches the q/k row permutation llama.cpp's converter applies. The KV cache follows
``backend.cache_config()``: capacity and history window padded to ``cache_padding``, V stored
transposed when ``permuted_v``, and the mask in ``mask_dtype``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

import numpy as np

from ..dtypes import DType
from ..errors import ModelFileError, ShapeError
from .base import Model

if TYPE_CHECKING:
    from ..backend import Backend
    from ..context import Context
    from ..tensor import Tensor

__all__ = ["KVCache", "Llama", "LlamaOptions"]

#: Cache positions when neither the caller nor the file says (and the most by default).
DEFAULT_NUM_CTX: Final = 2048


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class LlamaOptions:
    """Llama hyper-parameters, read from the model's metadata."""

    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    eps: float
    rope_base: float
    rope_scale: float
    rope_dim: int
    context_length: int
    vocab_size: int

    @classmethod
    def from_backend(cls, backend: Backend) -> LlamaOptions:
        """Read the options from ``backend.config()`` (vocab size from token_embd if absent)."""
        cfg = backend.config()
        d = cfg.uint("embedding_length")
        heads = cfg.uint("attention.head_count")
        if d < 1 or heads < 1 or d % heads:
            msg = f"embedding_length {d} must be a positive multiple of head_count {heads}"
            raise ModelFileError(str(backend.model_path), msg, key="attention.head_count")
        head_dim = cfg.uint("attention.key_length", d // heads)
        embd = backend.get("token_embd.weight")
        vocab = cfg.uint("vocab_size", embd.dim(1) if embd is not None else 0)
        scaling = cfg.float("rope.scaling.factor", 1.0)
        linear = cfg.string("rope.scaling.type", "linear") == "linear"
        return cls(
            block_count=cfg.block_count(),
            embedding_length=d,
            head_count=heads,
            head_count_kv=cfg.uint("attention.head_count_kv", heads),
            head_dim=head_dim,
            eps=cfg.float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base=cfg.float("rope.freq_base", 10000.0),
            rope_scale=1.0 / scaling if linear and scaling > 0 else 1.0,
            rope_dim=cfg.uint("rope.dimension_count", head_dim),
            context_length=cfg.uint("context_length", DEFAULT_NUM_CTX),
            vocab_size=vocab,
        )


class KVCache:
    """Keys and values of one sequence, one pair of cache tensors per layer.

    Keys are ``[head_dim * H_kv, cells]``; values the same, or ``[cells, head_dim * H_kv]``
    (transposed) when the backend's cache config has ``permuted_v``.
    """

    def __init__(self, backend: Backend, opts: LlamaOptions, num_ctx: int, dtype: DType) -> None:
        cfg = backend.cache_config()
        self.padding = max(cfg.cache_padding, 1)
        self.permuted_v = cfg.permuted_v
        self.mask_dtype = cfg.mask_dtype
        self.cells = _round_up(num_ctx, self.padding)
        self.h_kv = opts.head_count_kv
        self.head_dim = opts.head_dim
        #: Which cells hold a position already (a cell's index is its position).
        self.filled = np.zeros(self.cells, dtype=bool)
        self._contexts: list[Context] = []
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        row = opts.head_dim * opts.head_count_kv
        for i in range(opts.block_count):
            ctx = backend.new_context_size(2).layer(i)
            self._contexts.append(ctx)
            self.keys.append(ctx.zeros(dtype, row, self.cells))
            v_shape = (self.cells, row) if self.permuted_v else (row, self.cells)
            self.values.append(ctx.zeros(dtype, *v_shape))

    def window(self, positions: Sequence[int]) -> int:
        """Return the history length ``L_k`` a batch ending at ``max(positions)`` reads."""
        return min(self.cells, _round_up(max(positions) + 1, self.padding))

    def store(
        self, ctx: Context, layer: int, k: Tensor, v: Tensor, pos: Tensor, n_kv: int
    ) -> tuple[Tensor, Tensor]:
        """Write ``k``/``v`` ``[head_dim, H_kv, T]`` at cells ``pos``; return the history.

        The history views are taken on the writes' results, so they are ordered after them.
        :returns: keys ``[head_dim, H_kv, n_kv]`` and values in the same shape, or
            ``[n_kv, head_dim, H_kv]`` when ``permuted_v``.
        """
        d, h, t = self.head_dim, self.h_kv, k.dim(2)
        keys = self.keys[layer].set_rows(ctx, k.reshape(ctx, d * h, t), pos)
        k_row = keys.stride(1) // h
        k_hist = keys.view(ctx, 0, d, k_row, h, keys.stride(1), n_kv)
        cache_v = self.values[layer]
        if not self.permuted_v:
            values = cache_v.set_rows(ctx, v.reshape(ctx, d * h, t), pos)
            v_hist = values.view(ctx, 0, d, k_row, h, values.stride(1), n_kv)
        else:
            src = v.reshape(ctx, d * h, 1, t).permute(ctx, 2, 0, 1, 3)  # [1, T, d * H_kv]
            dst = cache_v.reshape(ctx, 1, self.cells, d * h)
            values = dst.set_rows(ctx, src, pos)
            esize = cache_v.stride(0)
            cells = self.cells * esize
            v_hist = values.view(ctx, 0, n_kv, cells, d, cells * d, h)
        ctx.forward(keys, values)
        return k_hist, v_hist

    def mask(self, ctx: Context, positions: Sequence[int], n_kv: int) -> Tensor:
        """Return the causal mask ``[n_kv, T]``: 0 where token n may see cell j, else -inf."""
        cells = np.arange(n_kv)
        pos = np.asarray(positions)
        visible = (cells[None, :] <= pos[:, None]) & self.filled[None, :n_kv]
        values = np.where(visible, 0.0, -np.inf).astype(np.float32)
        mask = ctx.input().from_floats(values)
        if self.mask_dtype not in (DType.OTHER, DType.F32):
            mask = mask.cast(ctx, self.mask_dtype)
        return mask

    def close(self) -> None:
        """Free every layer's cache tensors."""
        for ctx in self._contexts:
            ctx.close()
        self._contexts.clear()


class Llama(Model):
    """A llama model on a loaded backend; see the module docstring.

    :param num_ctx: positions the KV cache holds (default the file's context length, at most
        2048).
    :param cache_dtype: dtype of the KV cache (F32 by default; F16 like ollama).
    """

    architecture: ClassVar[str] = "llama"

    def __init__(
        self, backend: Backend, *, num_ctx: int | None = None, cache_dtype: DType = DType.F32
    ) -> None:
        super().__init__(backend)
        self.opts = LlamaOptions.from_backend(backend)
        self._w("token_embd.weight")  # fail early on a file without weights
        if num_ctx is None:
            num_ctx = min(self.opts.context_length, DEFAULT_NUM_CTX)
        self.cache = KVCache(backend, self.opts, max(num_ctx, 1), cache_dtype)

    @property
    def vocab_size(self) -> int:
        """Number of logits per output position."""
        return self.opts.vocab_size

    @property
    def capacity(self) -> int:
        """Number of positions the KV cache holds."""
        return self.cache.cells

    def _w(self, name: str) -> Tensor:
        t = self.backend.get(name)
        if t is None:
            msg = f"llama needs tensor {name!r}, the file has none"
            raise ModelFileError(str(self.backend.model_path), msg, key=name)
        return t

    def reset(self) -> None:
        """Forget every cached position."""
        self.cache.filled[:] = False

    def close(self) -> None:
        """Free the KV cache."""
        self.cache.close()

    def _attention(self, ctx: Context, i: int, h: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        o, t = self.opts, h.dim(1)
        factors = self.backend.get(f"blk.{i}.rope_freqs.weight")

        def project(name: str, heads: int) -> Tensor:
            x = self._w(f"blk.{i}.{name}.weight").mulmat(ctx, h)
            return x.reshape(ctx, o.head_dim, heads, t)

        def rope(x: Tensor) -> Tensor:
            return x.rope(ctx, pos, o.rope_dim, o.rope_base, o.rope_scale, factors=factors)

        q = rope(project("attn_q", o.head_count))
        k = rope(project("attn_k", o.head_count_kv))
        v = project("attn_v", o.head_count_kv)
        k_hist, v_hist = self.cache.store(ctx, i, k, v, pos, mask.dim(0))
        scale = 1.0 / math.sqrt(o.head_dim)
        out = q.scaled_dot_product_attention(ctx, k_hist, v_hist, mask, None, None, scale, True)
        out = out.reshape(ctx, o.head_dim * o.head_count, t)
        return self._w(f"blk.{i}.attn_output.weight").mulmat(ctx, out)

    def _ffn(self, ctx: Context, i: int, h: Tensor) -> Tensor:
        gate = self._w(f"blk.{i}.ffn_gate.weight").mulmat(ctx, h)
        up = self._w(f"blk.{i}.ffn_up.weight").mulmat(ctx, h)
        return self._w(f"blk.{i}.ffn_down.weight").mulmat(ctx, gate.silu(ctx, up))

    def forward(
        self,
        tokens: Sequence[int],
        positions: Sequence[int],
        outputs: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Run ``tokens`` at ``positions``, writing their keys and values to the cache.

        Builds the graph in a fresh context, computes it, and frees it.

        :param outputs: indices into ``tokens`` whose logits to return (default: the last).
        :returns: float32 logits ``(len(outputs), vocab_size)``.
        :raises ShapeError: empty input, mismatched lengths, or a position outside the cache.
        """
        o, n = self.opts, len(tokens)
        if n == 0 or len(positions) != n:
            msg = f"forward needs as many positions as tokens (> 0), got {n} and {len(positions)}"
            raise ShapeError(msg, op="forward")
        if min(positions) < 0 or max(positions) >= self.cache.cells:
            msg = f"positions must lie in [0, {self.cache.cells}), got {list(positions)}"
            raise ShapeError(msg, op="forward")
        rows = [n - 1] if outputs is None else list(outputs)
        self.cache.filled[list(positions)] = True
        with self.backend.new_context() as ctx:
            inputs = ctx.input()
            ids = inputs.from_ints(np.asarray(tokens), n)
            pos = inputs.from_ints(np.asarray(positions), n)
            out_ids = inputs.from_ints(np.asarray(rows), len(rows))
            mask = self.cache.mask(ctx, positions, self.cache.window(positions))
            x = self._w("token_embd.weight").rows(ctx, ids)
            for i in range(o.block_count):
                h = x.rms_norm(ctx, self._w(f"blk.{i}.attn_norm.weight"), o.eps)
                x = x.add(ctx, self._attention(ctx, i, h, pos, mask))
                h = x.rms_norm(ctx, self._w(f"blk.{i}.ffn_norm.weight"), o.eps)
                x = x.add(ctx, self._ffn(ctx, i, h))
            x = x.rows(ctx, out_ids).rms_norm(ctx, self._w("output_norm.weight"), o.eps)
            logits = self._w("output.weight").mulmat(ctx, x)
            ctx.forward(logits).compute(logits)
            values = logits.floats()
        if values is None:  # pragma: no cover - compute always fills the output
            msg = "the logits were not computed"
            raise ShapeError(msg, op="forward")
        result: np.ndarray = values.reshape(len(rows), -1).copy()
        return result
