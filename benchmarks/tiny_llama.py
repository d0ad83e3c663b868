"""Write the benchmarks' tiny llama: random weights, a real-sized vocabulary, any matrix type.

The shape is the one the speed figures of the project quote: vocabulary 32000, width 512, 8
layers, 8 heads (8 key/value heads), feed-forward 1280, untied output — 56.9M parameters. The
file carries a SentencePiece vocabulary (3 control tokens, the 256 byte tokens, then filler
pieces) so that llama.cpp loads it too. Matrices are ``f32``, ``f16`` or ``q8_0`` (quantised
with the ``gguf`` package); norms stay f32, as converters write them.

Usage::

    python benchmarks/tiny_llama.py OUT.gguf [--type f32|f16|q8_0] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, quantize

VOCAB = 32000
WIDTH = 512
LAYERS = 8
HEADS = 8
FFN = 1280
TYPES = ("f32", "f16", "q8_0")


def _vocabulary(w: GGUFWriter) -> None:
    control = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    filler = [f"\u2581t{i}" for i in range(VOCAB - len(control) - len(byte_tokens))]
    tokens = control + byte_tokens + filler
    types = [2, 3, 3] + [6] * len(byte_tokens) + [1] * len(filler)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(VOCAB)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)


def write_tiny_llama(path: Path, kind: str = "f32", seed: int = 0) -> Path:
    """Write the tiny llama to ``path`` with ``kind`` matrices; return ``path``."""
    if kind not in TYPES:
        msg = f"matrix type must be one of {', '.join(TYPES)}, got {kind!r}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(4096)
    w.add_embedding_length(WIDTH)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(WIDTH // HEADS)
    w.add_file_type({"f32": 0, "f16": 1, "q8_0": 7}[kind])
    _vocabulary(w)

    def matrix(name: str, rows: int, cols: int) -> None:
        a = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        if kind == "f16":
            w.add_tensor(name, a.astype(np.float16))
        elif kind == "q8_0":
            q8 = GGMLQuantizationType.Q8_0
            w.add_tensor(name, quantize(a, q8), raw_dtype=q8)
        else:
            w.add_tensor(name, a)

    def norm(name: str) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(WIDTH)).astype(np.float32))

    matrix("token_embd.weight", VOCAB, WIDTH)
    for i in range(LAYERS):
        b = f"blk.{i}."
        norm(b + "attn_norm.weight")
        for part in ("q", "k", "v", "output"):
            matrix(f"{b}attn_{part}.weight", WIDTH, WIDTH)
        norm(b + "ffn_norm.weight")
        matrix(b + "ffn_gate.weight", FFN, WIDTH)
        matrix(b + "ffn_up.weight", FFN, WIDTH)
        matrix(b + "ffn_down.weight", WIDTH, FFN)
    norm("output_norm.weight")
    matrix("output.weight", VOCAB, WIDTH)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main(argv: list[str] | None = None) -> int:
    """Write one file from the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out", type=Path, help="the GGUF file to write")
    parser.add_argument("--type", choices=TYPES, default="f32", help="matrix type (default f32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights (default 0)")
    args = parser.parse_args(argv)
    print(write_tiny_llama(args.out, args.type, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
