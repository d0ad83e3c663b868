"""Small GGUF files for tests: llama-like models written with `gguf.GGUFWriter`, and raw builders.

``write_llama_gguf`` writes a valid model with real metadata and tensors in a mix of ggml types,
returning the path and the float32 values each tensor decodes to (via `gguf.quants.dequantize`).
``RawGGUF`` assembles header, key/values and tensor infos byte by byte, for malformed inputs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFEndian, GGUFValueType, GGUFWriter
from gguf.quants import dequantize, quantize

__all__ = [
    "ALL_TYPES",
    "K_TYPES",
    "LlamaModel",
    "RawGGUF",
    "find_tensor_info",
    "gguf_string",
    "retype_tensor",
    "write_llama_gguf",
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
