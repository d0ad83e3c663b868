"""Llama: a decoder-only transformer (RMSNorm, RoPE, grouped-query attention, SwiGLU).

Built from :mod:`mlplug.nn` on the public Tensor API, so it runs on every backend. Weights and
hyper-parameters follow llama.cpp's GGUF names; RoPE is the NORMAL mode (adjacent pairs), which
matches the q/k row permutation llama.cpp's converter applies, with the file's ``rope_freqs``
when it has them. Optional q/k/v biases (qwen2-style files) are applied; a file without
``output.weight`` ties the output to the embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..dtypes import DType
from ..errors import ModelFileError
from ..kvcache import DEFAULT_HISTORY_BUCKET, CausalCache
from ..nn import ROPE_NORMAL, Linear, RMSNorm, RoPE, attention
from .decoder import Decoder, Weights, check_heads

if TYPE_CHECKING:
    from ..backend import Backend
    from ..context import Context
    from ..tensor import Tensor

__all__ = ["Llama", "LlamaOptions"]


@dataclass(frozen=True)
class LlamaOptions:
    """Llama hyper-parameters, read from the model's metadata."""

    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    value_dim: int
    eps: float
    rope_base: float
    rope_scale: float
    rope_dim: int
    context_length: int

    @classmethod
    def from_backend(cls, backend: Backend) -> LlamaOptions:
        """Read the options from ``backend.config()``.

        :raises ModelFileError: the head counts contradict the width, or the file is a
            mixture-of-experts llama (unsupported), naming the key.
        """
        cfg = backend.config()
        d = cfg.uint("embedding_length")
        heads = cfg.uint("attention.head_count")
        heads_kv = cfg.uint("attention.head_count_kv", heads)
        check_heads(backend, d, heads, heads_kv)
        if cfg.uint("expert_count") > 0:
            msg = "mixture-of-experts llama files (expert_count > 0) are not supported"
            raise ModelFileError(str(backend.model_path), msg, key="expert_count")
        head_dim = cfg.uint("attention.key_length", d // heads)
        scaling = cfg.float("rope.scaling.factor", 1.0)
        linear = cfg.string("rope.scaling.type", "linear") == "linear"
        return cls(
            block_count=cfg.block_count(),
            embedding_length=d,
            head_count=heads,
            head_count_kv=heads_kv,
            head_dim=head_dim,
            value_dim=cfg.uint("attention.value_length", head_dim),
            eps=cfg.float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base=cfg.float("rope.freq_base", 10000.0),
            rope_scale=1.0 / scaling if linear and scaling > 0 else 1.0,
            rope_dim=cfg.uint("rope.dimension_count", head_dim),
            context_length=cfg.uint("context_length"),
        )


@dataclass(frozen=True)
class _Block:
    attn_norm: RMSNorm
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    rope: RoPE
    ffn_norm: RMSNorm
    gate: Linear
    up: Linear
    down: Linear


class Llama(Decoder):
    """A llama model on a loaded backend; see the module docstring.

    :param num_ctx: positions the KV cache holds (default the file's context length, at most
        2048).
    :param kv_dtype: dtype of the KV cache, ``"f16"`` (default) or ``"f32"``.
    :param max_batch: most tokens per forward pass (longer inputs are split).
    :param history_bucket: cells by which the history a pass reads grows (see
        :class:`~mlplug.kvcache.CausalCache`); decode steps within one bucket reuse one graph.
    :raises ModelFileError: a missing tensor or one whose shape contradicts the
        hyper-parameters (checked for every weight here, before any compute).
    """

    architecture: ClassVar[str] = "llama"

    def __init__(
        self,
        backend: Backend,
        *,
        num_ctx: int | None = None,
        kv_dtype: DType | str = DType.F16,
        max_batch: int = 512,
        history_bucket: int = DEFAULT_HISTORY_BUCKET,
    ) -> None:
        super().__init__(backend)
        o = self.opts = LlamaOptions.from_backend(backend)
        w = Weights(backend, self.architecture)
        d, hd, vd = o.embedding_length, o.head_dim, o.value_dim
        self.read_embedding(w, d)
        if o.rope_dim % 2 or o.rope_dim > hd:
            msg = f"rope.dimension_count {o.rope_dim} must be even and at most the head dim {hd}"
            raise ModelFileError(str(backend.model_path), msg, key="rope.dimension_count")
        self.blocks: list[_Block] = []
        for i in range(o.block_count):
            p = f"blk.{i}."
            ff = w.dim(p + "ffn_gate.weight", 1)

            def lin(name: str, n_in: int, n_out: int, p: str = p) -> Linear:
                weight = w.need(f"{p}{name}.weight", n_in, n_out)
                return Linear(weight, w.maybe(f"{p}{name}.bias", n_out))

            factors = w.maybe(p + "rope_freqs.weight", o.rope_dim // 2)
            self.blocks.append(
                _Block(
                    attn_norm=RMSNorm(w.need(p + "attn_norm.weight", d), o.eps),
                    q=lin("attn_q", d, hd * o.head_count),
                    k=lin("attn_k", d, hd * o.head_count_kv),
                    v=lin("attn_v", d, vd * o.head_count_kv),
                    o=lin("attn_output", vd * o.head_count, d),
                    rope=RoPE(o.rope_dim, o.rope_base, o.rope_scale, ROPE_NORMAL, factors),
                    ffn_norm=RMSNorm(w.need(p + "ffn_norm.weight", d), o.eps),
                    gate=lin("ffn_gate", d, ff),
                    up=lin("ffn_up", d, ff),
                    down=lin("ffn_down", ff, d),
                )
            )
        self.read_head(w, d, o.eps)
        if vd != hd:
            msg = f"attention.value_length {vd} must equal attention.key_length {hd}"
            raise ModelFileError(str(backend.model_path), msg, key="attention.value_length")
        self.cache = CausalCache(
            backend,
            range(o.block_count),
            head_dim=hd,
            head_count_kv=o.head_count_kv,
            num_ctx=self.default_ctx(num_ctx, o.context_length),
            dtype=self.kv_type(kv_dtype),
            max_batch=max_batch,
            history_bucket=history_bucket,
        )

    def build(self, ctx: Context, ids: Tensor, pos: Tensor, out_ids: Tensor) -> Tensor:
        """Return the logits ``[vocab, len(out_ids)]`` of one pass."""
        o = self.opts
        x = self.embed.forward(ctx, ids)
        scale = 1.0 / math.sqrt(o.head_dim)
        last = len(self.blocks) - 1
        for i, b in enumerate(self.blocks):
            h = b.attn_norm.forward(ctx, x)
            t = h.dim(1)
            q = b.q.forward(ctx, h).reshape(ctx, o.head_dim, o.head_count, t)
            k = b.k.forward(ctx, h).reshape(ctx, o.head_dim, o.head_count_kv, t)
            v = b.v.forward(ctx, h).reshape(ctx, o.value_dim, o.head_count_kv, t)
            q, k = b.rope.forward(ctx, q, pos), b.rope.forward(ctx, k, pos)
            a = attention(ctx, q, k, v, scale, self.cache, i)
            if i == last:  # only the wanted positions go on
                a, x = a.rows(ctx, out_ids), x.rows(ctx, out_ids)
            x = x.add(ctx, b.o.forward(ctx, a))
            h = b.ffn_norm.forward(ctx, x)
            h = b.gate.forward(ctx, h).silu(ctx, b.up.forward(ctx, h))
            x = x.add(ctx, b.down.forward(ctx, h))
        return self.head(ctx, x, out_ids)
