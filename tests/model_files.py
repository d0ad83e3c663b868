"""Tiny llama and gemma3 GGUF files written with ``gguf.GGUFWriter``, and float64 references.

The references are written independently of mlplug, in numpy (orientation ``(out, in)``), from
the architectures' published math.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize, quantize


@dataclass
class TinyModel:
    """A tiny model file, its hyper-parameters, and the float64 weights it holds."""

    path: Path
    arch: str
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    layers: int = 2
    d: int = 64
    heads: int = 4
    heads_kv: int = 2
    head_dim: int = 16
    vocab: int = 32
    ff: int = 96
    eps: float = 1e-5
    base: float = 10000.0
    local_base: float = 10000.0
    window: int = 0
    softcap: float = 0.0
    bias: bool = False
    freqs: bool = False


@dataclass(frozen=True)
class Damage:
    """What to get wrong on purpose when writing a tiny file (for the bad-input tests)."""

    #: Tensors to leave out.
    drop: tuple[str, ...] = ()
    #: Tensors to write with another (rows, cols) shape (numpy orientation).
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: A head count to write in place of the real one.
    head_count: int | None = None


class _Writer:
    def __init__(self, t: TinyModel, kind: str, seed: int, damage: Damage | None = None) -> None:
        self.t, self.kind = t, kind
        self.damage = damage or Damage()
        self.rng = np.random.default_rng(seed)
        self.w = GGUFWriter(str(t.path), t.arch)

    def matrix(self, name: str, rows: int, cols: int) -> None:
        rows, cols = self.damage.shapes.get(name, (rows, cols))
        a = (self.rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        if name in self.damage.drop:
            return
        if self.kind == "f16":
            self.w.add_tensor(name, a.astype(np.float16))
            self.t.weights[name] = a.astype(np.float16).astype(np.float64)
        elif self.kind == "q8_0":
            q = quantize(a, GGMLQuantizationType.Q8_0)
            self.w.add_tensor(name, q, raw_dtype=GGMLQuantizationType.Q8_0)
            self.t.weights[name] = dequantize(q, GGMLQuantizationType.Q8_0).astype(np.float64)
        else:
            self.w.add_tensor(name, a)
            self.t.weights[name] = a.astype(np.float64)

    def vector(self, name: str, n: int, mean: float, spread: float) -> None:
        a = (mean + spread * self.rng.standard_normal(n)).astype(np.float32)
        if name in self.damage.drop:
            return
        self.w.add_tensor(name, a)
        self.t.weights[name] = a.astype(np.float64)

    def close(self) -> None:
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()


def write_llama(
    path: Path,
    kind: str = "f32",
    *,
    arch: str = "llama",
    seed: int = 0,
    bias: bool = False,
    freqs: bool = False,
    tied: bool = True,
    damage: Damage | None = None,
) -> TinyModel:
    """Write a random 2-layer llama (d 64, 4 heads, 2 kv heads, vocab 32) with ``kind`` matrices.

    :param bias: give q/k/v biases (as qwen2 files have).
    :param freqs: give a ``rope_freqs.weight`` (llama 3 style frequency divisors).
    :param tied: leave ``output.weight`` out (the output is the embedding).
    :param damage: what to get wrong on purpose.
    """
    t = TinyModel(path, arch, bias=bias, freqs=freqs)
    wr = _Writer(t, kind, seed, damage)
    w = wr.w
    w.add_block_count(t.layers)
    w.add_embedding_length(t.d)
    w.add_head_count(wr.damage.head_count or t.heads)
    w.add_head_count_kv(t.heads_kv)
    w.add_layer_norm_rms_eps(t.eps)
    w.add_rope_freq_base(t.base)
    w.add_rope_dimension_count(t.head_dim)
    w.add_context_length(128)
    w.add_feed_forward_length(t.ff)
    hd = t.head_dim
    wr.matrix("token_embd.weight", t.vocab, t.d)
    if freqs:
        a = (1.0 + 3.0 * wr.rng.random(hd // 2)).astype(np.float32)
        w.add_tensor("rope_freqs.weight", a)
        t.weights["rope_freqs.weight"] = a.astype(np.float64)
    for i in range(t.layers):
        b = f"blk.{i}."
        wr.vector(b + "attn_norm.weight", t.d, 1.0, 0.1)
        wr.matrix(b + "attn_q.weight", t.heads * hd, t.d)
        wr.matrix(b + "attn_k.weight", t.heads_kv * hd, t.d)
        wr.matrix(b + "attn_v.weight", t.heads_kv * hd, t.d)
        if bias:
            wr.vector(b + "attn_q.bias", t.heads * hd, 0.0, 0.5)
            wr.vector(b + "attn_k.bias", t.heads_kv * hd, 0.0, 0.5)
            wr.vector(b + "attn_v.bias", t.heads_kv * hd, 0.0, 0.5)
        wr.matrix(b + "attn_output.weight", t.d, t.heads * hd)
        wr.vector(b + "ffn_norm.weight", t.d, 1.0, 0.1)
        wr.matrix(b + "ffn_gate.weight", t.ff, t.d)
        wr.matrix(b + "ffn_up.weight", t.ff, t.d)
        wr.matrix(b + "ffn_down.weight", t.d, t.ff)
    wr.vector("output_norm.weight", t.d, 1.0, 0.0)
    if not tied:
        wr.matrix("output.weight", t.vocab, t.d)
    wr.close()
    return t


def write_gemma3(
    path: Path,
    kind: str = "f32",
    *,
    seed: int = 0,
    layers: int = 7,
    softcap: float = 0.0,
    damage: Damage | None = None,
) -> TinyModel:
    """Write a random gemma3 (d 32, 4 heads of 16, 2 kv heads, window 4, vocab 48).

    With 7 layers, layer 5 is global and the rest slide; the output is tied.
    """
    t = TinyModel(
        path,
        "gemma3",
        layers=layers,
        d=32,
        heads=4,
        heads_kv=2,
        head_dim=16,
        vocab=48,
        ff=40,
        eps=1e-6,
        base=1e6,
        local_base=1e4,
        window=4,
        softcap=softcap,
    )
    wr = _Writer(t, kind, seed, damage)
    w = wr.w
    w.add_block_count(t.layers)
    w.add_embedding_length(t.d)
    w.add_head_count(wr.damage.head_count or t.heads)
    w.add_head_count_kv(t.heads_kv)
    w.add_key_length(t.head_dim)
    w.add_value_length(t.head_dim)
    w.add_layer_norm_rms_eps(t.eps)
    w.add_rope_freq_base(t.base)
    w.add_float32("gemma3.rope.local.freq_base", t.local_base)
    w.add_sliding_window(t.window)
    w.add_context_length(256)
    w.add_feed_forward_length(t.ff)
    if softcap:
        w.add_final_logit_softcapping(softcap)
    hd = t.head_dim
    wr.matrix("token_embd.weight", t.vocab, t.d)
    for i in range(t.layers):
        b = f"blk.{i}."
        wr.vector(b + "attn_norm.weight", t.d, 1.0, 0.1)
        wr.matrix(b + "attn_q.weight", t.heads * hd, t.d)
        wr.vector(b + "attn_q_norm.weight", hd, 1.0, 0.1)
        wr.matrix(b + "attn_k.weight", t.heads_kv * hd, t.d)
        wr.vector(b + "attn_k_norm.weight", hd, 1.0, 0.1)
        wr.matrix(b + "attn_v.weight", t.heads_kv * hd, t.d)
        wr.matrix(b + "attn_output.weight", t.d, t.heads * hd)
        wr.vector(b + "post_attention_norm.weight", t.d, 1.0, 0.1)
        wr.vector(b + "ffn_norm.weight", t.d, 1.0, 0.1)
        wr.matrix(b + "ffn_gate.weight", t.ff, t.d)
        wr.matrix(b + "ffn_up.weight", t.ff, t.d)
        wr.matrix(b + "ffn_down.weight", t.d, t.ff)
        wr.vector(b + "post_ffw_norm.weight", t.d, 1.0, 0.1)
    wr.vector("output_norm.weight", t.d, 1.0, 0.1)
    wr.close()
    return t


def _rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    out: np.ndarray = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight
    return out


def _angles(pos: np.ndarray, hd: int, base: float, factors: np.ndarray | None) -> np.ndarray:
    inv = base ** (-np.arange(0, hd, 2) / hd)
    if factors is not None:
        inv = inv / factors
    out: np.ndarray = pos[:, None] * inv[None, :]
    return out[:, None, :]  # (n, 1, hd/2)


def _rope_normal(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    cos, sin = np.cos(theta), np.sin(theta)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def _rope_neox(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    cos, sin = np.cos(theta), np.sin(theta)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def _attend(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, pos: np.ndarray, window: int
) -> np.ndarray:
    n, heads, _ = q.shape
    seen = pos[None, :] <= pos[:, None]
    if window:
        seen &= pos[None, :] > pos[:, None] - window
    bias = np.where(seen, 0.0, -np.inf)
    group = heads // k.shape[1]
    out = np.empty((n, heads, v.shape[-1]))
    for h in range(heads):
        s = q[:, h] @ k[:, h // group].T * scale + bias
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        out[:, h] = (p / p.sum(axis=-1, keepdims=True)) @ v[:, h // group]
    return out.reshape(n, -1)


def llama_logits(t: TinyModel, tokens: list[int]) -> np.ndarray:
    """Return float64 logits ``(len(tokens), vocab)`` of llama's math at positions 0…n-1."""
    w, hd, n = t.weights, t.head_dim, len(tokens)
    pos = np.arange(n, dtype=np.float64)
    theta = _angles(pos, hd, t.base, w.get("rope_freqs.weight"))
    x = w["token_embd.weight"][tokens]
    for i in range(t.layers):
        b = f"blk.{i}."

        def proj(name: str, heads: int, h: np.ndarray, b: str = b) -> np.ndarray:
            y = h @ w[f"{b}{name}.weight"].T
            if f"{b}{name}.bias" in w:
                y = y + w[f"{b}{name}.bias"]
            return y.reshape(n, heads, hd)

        h = _rms(x, w[b + "attn_norm.weight"], t.eps)
        q = _rope_normal(proj("attn_q", t.heads, h), theta)
        k = _rope_normal(proj("attn_k", t.heads_kv, h), theta)
        v = proj("attn_v", t.heads_kv, h)
        x = x + _attend(q, k, v, 1 / np.sqrt(hd), pos, 0) @ w[b + "attn_output.weight"].T
        h = _rms(x, w[b + "ffn_norm.weight"], t.eps)
        gate = h @ w[b + "ffn_gate.weight"].T
        up = h @ w[b + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[b + "ffn_down.weight"].T
    out_w = w.get("output.weight", w["token_embd.weight"])
    out: np.ndarray = _rms(x, w["output_norm.weight"], t.eps) @ out_w.T
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form, as ggml's CPU evaluates it: through an f16 table of f16 inputs."""
    x16 = x.astype(np.float16).astype(np.float64)
    y = 0.5 * x16 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x16 + 0.044715 * x16**3)))
    y = y.astype(np.float32).astype(np.float16).astype(np.float64)
    out: np.ndarray = np.where(x > 10, x, np.where(x < -10, 0.0, y))
    return out


def gemma3_logits(t: TinyModel, tokens: list[int]) -> np.ndarray:
    """Return float64 logits ``(len(tokens), vocab)`` of Gemma 3's math at positions 0…n-1."""
    w, hd, n, eps = t.weights, t.head_dim, len(tokens), t.eps
    pos = np.arange(n, dtype=np.float64)
    x = w["token_embd.weight"][tokens] * np.sqrt(t.d)
    for i in range(t.layers):
        b = f"blk.{i}."
        glob = (i + 1) % 6 == 0
        theta = _angles(pos, hd, t.base if glob else t.local_base, None)
        h = _rms(x, w[b + "attn_norm.weight"], eps)
        q = (h @ w[b + "attn_q.weight"].T).reshape(n, t.heads, hd)
        q = _rope_neox(_rms(q, w[b + "attn_q_norm.weight"], eps), theta)
        k = (h @ w[b + "attn_k.weight"].T).reshape(n, t.heads_kv, hd)
        k = _rope_neox(_rms(k, w[b + "attn_k_norm.weight"], eps), theta)
        v = (h @ w[b + "attn_v.weight"].T).reshape(n, t.heads_kv, hd)
        a = _attend(q, k, v, 1 / np.sqrt(hd), pos, 0 if glob else t.window)
        a = _rms(a @ w[b + "attn_output.weight"].T, w[b + "post_attention_norm.weight"], eps)
        x = x + a
        h = _rms(x, w[b + "ffn_norm.weight"], eps)
        h = gelu_tanh(h @ w[b + "ffn_gate.weight"].T) * (h @ w[b + "ffn_up.weight"].T)
        x = x + _rms(h @ w[b + "ffn_down.weight"].T, w[b + "post_ffw_norm.weight"], eps)
    out: np.ndarray = _rms(x, w["output_norm.weight"], eps) @ w["token_embd.weight"].T
    if t.softcap > 0:
        out = t.softcap * np.tanh(out / t.softcap)
    return out
