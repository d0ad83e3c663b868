"""Gemma 3 (text): sliding-window and global attention layers, q/k norms, GELU-gated FFN.

Layer ``i`` is global when ``(i + 1) % 6 == 0`` (RoPE base ``rope.freq_base``, a causal cache
over the whole context) and local otherwise (RoPE base ``rope.local.freq_base``, a
sliding-window cache of ``attention.sliding_window`` keys). RoPE is the NeoX mode. The embedding
is scaled by ``sqrt(embedding_length)``, every sub-block has a norm before and after it, and the
output is tied to the embedding unless the file has ``output.weight``; an optional
``final_logit_softcapping`` bounds the logits. Norm weights are used as stored (the GGUF
converter already added the 1 the original model adds at run time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from ..dtypes import DType
from ..errors import ModelFileError
from ..kvcache import DEFAULT_HISTORY_BUCKET, CausalCache, WrapperCache
from ..nn import ROPE_NEOX, Linear, RMSNorm, RoPE, attention
from .decoder import Decoder, Weights, check_heads

if TYPE_CHECKING:
    from ..backend import Backend
    from ..context import Context
    from ..tensor import Tensor

__all__ = ["Gemma3", "Gemma3Options"]

#: Every GLOBAL_EVERY-th layer attends globally; the others through the sliding window.
GLOBAL_EVERY: Final = 6


def is_global(layer: int) -> bool:
    """Return whether ``layer`` attends to the whole context (else the sliding window)."""
    return (layer + 1) % GLOBAL_EVERY == 0


@dataclass(frozen=True)
class Gemma3Options:
    """Gemma 3 hyper-parameters, read from the model's metadata."""

    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    eps: float
    rope_global_base: float
    rope_local_base: float
    rope_global_scale: float
    sliding_window: int
    softcap: float
    context_length: int

    @classmethod
    def from_backend(cls, backend: Backend) -> Gemma3Options:
        """Read the options from ``backend.config()``.

        :raises ModelFileError: the head counts contradict the width, or the sliding window is
            missing or zero, naming the key.
        """
        cfg = backend.config()
        d = cfg.uint("embedding_length")
        heads = cfg.uint("attention.head_count")
        heads_kv = cfg.uint("attention.head_count_kv", heads)
        check_heads(backend, d, heads, heads_kv)
        window = cfg.uint("attention.sliding_window")
        if window < 1:
            msg = "gemma3 needs a positive attention.sliding_window"
            raise ModelFileError(str(backend.model_path), msg, key="attention.sliding_window")
        scaling = cfg.float("rope.scaling.factor", 1.0)
        return cls(
            block_count=cfg.block_count(),
            embedding_length=d,
            head_count=heads,
            head_count_kv=heads_kv,
            key_length=cfg.uint("attention.key_length", 256),
            value_length=cfg.uint("attention.value_length", 256),
            eps=cfg.float("attention.layer_norm_rms_epsilon", 1e-6),
            rope_global_base=cfg.float("rope.freq_base", 1e6),
            rope_local_base=cfg.float("rope.local.freq_base", 1e4),
            rope_global_scale=1.0 / scaling if scaling > 0 else 1.0,
            sliding_window=window,
            softcap=cfg.float("final_logit_softcapping", 0.0),
            context_length=cfg.uint("context_length"),
        )


@dataclass(frozen=True)
class _Block:
    attn_norm: RMSNorm
    q: Linear
    q_norm: RMSNorm
    k: Linear
    k_norm: RMSNorm
    v: Linear
    o: Linear
    post_attn_norm: RMSNorm
    rope: RoPE
    ffn_norm: RMSNorm
    gate: Linear
    up: Linear
    down: Linear
    post_ffn_norm: RMSNorm


class Gemma3(Decoder):
    """A Gemma 3 text model on a loaded backend; see the module docstring.

    :param num_ctx: positions the global layers' cache holds (default the file's context
        length, at most 2048).
    :param kv_dtype: dtype of the KV caches, ``"f16"`` (default) or ``"f32"``.
    :param max_batch: most tokens per forward pass (longer inputs are split); the
        sliding-window cache holds ``window + max_batch`` cells.
    :param history_bucket: cells by which the history a pass reads grows (see
        :class:`~mlplug.kvcache.CausalCache`); decode steps within one bucket reuse one graph.
    :raises ModelFileError: a missing tensor or one whose shape contradicts the
        hyper-parameters (checked for every weight here, before any compute).
    """

    architecture: ClassVar[str] = "gemma3"

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
        o = self.opts = Gemma3Options.from_backend(backend)
        w = Weights(backend, self.architecture)
        d, hk, hv, eps = o.embedding_length, o.key_length, o.value_length, o.eps
        if hk != hv:
            msg = f"attention.value_length {hv} must equal attention.key_length {hk}"
            raise ModelFileError(str(backend.model_path), msg, key="attention.value_length")
        self.read_embedding(w, d)
        self.blocks: list[_Block] = []
        for i in range(o.block_count):
            p = f"blk.{i}."
            ff = w.dim(p + "ffn_gate.weight", 1)

            def lin(name: str, n_in: int, n_out: int, p: str = p) -> Linear:
                return Linear(w.need(f"{p}{name}.weight", n_in, n_out))

            def norm(name: str, n: int, p: str = p) -> RMSNorm:
                return RMSNorm(w.need(f"{p}{name}.weight", n), eps)

            if is_global(i):
                rope = RoPE(hk, o.rope_global_base, o.rope_global_scale, ROPE_NEOX)
            else:
                rope = RoPE(hk, o.rope_local_base, 1.0, ROPE_NEOX)
            self.blocks.append(
                _Block(
                    attn_norm=norm("attn_norm", d),
                    q=lin("attn_q", d, hk * o.head_count),
                    q_norm=norm("attn_q_norm", hk),
                    k=lin("attn_k", d, hk * o.head_count_kv),
                    k_norm=norm("attn_k_norm", hk),
                    v=lin("attn_v", d, hv * o.head_count_kv),
                    o=lin("attn_output", hv * o.head_count, d),
                    post_attn_norm=norm("post_attention_norm", d),
                    rope=rope,
                    ffn_norm=norm("ffn_norm", d),
                    gate=lin("ffn_gate", d, ff),
                    up=lin("ffn_up", d, ff),
                    down=lin("ffn_down", ff, d),
                    post_ffn_norm=norm("post_ffw_norm", d),
                )
            )
        self.read_head(w, d, eps)
        dtype = self.kv_type(kv_dtype)
        n_ctx = self.default_ctx(num_ctx, o.context_length)
        layers = range(o.block_count)
        common = {"head_dim": hk, "head_count_kv": o.head_count_kv, "dtype": dtype}
        local = CausalCache(
            backend,
            [i for i in layers if not is_global(i)],
            num_ctx=n_ctx,
            window=o.sliding_window,
            max_batch=max_batch,
            history_bucket=history_bucket,
            **common,  # type: ignore[arg-type]
        )
        full = CausalCache(
            backend,
            [i for i in layers if is_global(i)],
            num_ctx=n_ctx,
            max_batch=max_batch,
            history_bucket=history_bucket,
            **common,  # type: ignore[arg-type]
        )
        self.cache = WrapperCache([local, full], lambda i: 1 if is_global(i) else 0)

    def build(self, ctx: Context, ids: Tensor, pos: Tensor, out_ids: Tensor) -> Tensor:
        """Return the logits ``[vocab, len(out_ids)]`` of one pass."""
        o = self.opts
        x = self.embed.forward(ctx, ids).scale(ctx, math.sqrt(o.embedding_length))
        q_scale = 1.0 / math.sqrt(o.key_length)
        last = len(self.blocks) - 1
        for i, b in enumerate(self.blocks):
            h = b.attn_norm.forward(ctx, x)
            t = h.dim(1)
            q = b.q.forward(ctx, h).reshape(ctx, o.key_length, o.head_count, t)
            q = b.rope.forward(ctx, b.q_norm.forward(ctx, q), pos).scale(ctx, q_scale)
            k = b.k.forward(ctx, h).reshape(ctx, o.key_length, o.head_count_kv, t)
            k = b.rope.forward(ctx, b.k_norm.forward(ctx, k), pos)
            v = b.v.forward(ctx, h).reshape(ctx, o.value_length, o.head_count_kv, t)
            a = attention(ctx, q, k, v, 1.0, self.cache, i)
            if i == last:  # only the wanted positions go on
                a, x = a.rows(ctx, out_ids), x.rows(ctx, out_ids)
            a = b.post_attn_norm.forward(ctx, b.o.forward(ctx, a))
            x = x.add(ctx, a)
            h = b.ffn_norm.forward(ctx, x)
            h = b.gate.forward(ctx, h).gelu(ctx, b.up.forward(ctx, h))
            h = b.post_ffn_norm.forward(ctx, b.down.forward(ctx, h))
            x = x.add(ctx, h)
        logits = self.head(ctx, x, out_ids)
        if o.softcap > 0:
            logits = logits.scale(ctx, 1.0 / o.softcap).tanh(ctx).scale(ctx, o.softcap)
        return logits
