"""A 6-layer llama file with every tensor the llama model reads, for the RPC split tests.

(Imported by the client processes the tests start; not a test module.)
"""

from __future__ import annotations

from pathlib import Path

from gguf import GGMLQuantizationType as Q
from model_files import LlamaModel, write_llama_gguf

N_EMBD = 32
N_FF = 64
N_KV = 16  # 2 of 4 heads of 8


def write_full_llama(path: str | Path, layers: int = 6) -> LlamaModel:
    """Write a small llama with ``layers`` blocks (attention and gated feed-forward)."""
    extra = []
    for i in range(layers):
        extra += [
            (f"blk.{i}.attn_v.weight", (N_EMBD, N_KV), Q.F32),
            (f"blk.{i}.attn_output.weight", (N_EMBD, N_EMBD), Q.F32),
            (f"blk.{i}.ffn_norm.weight", (N_EMBD,), Q.F32),
            (f"blk.{i}.ffn_gate.weight", (N_EMBD, N_FF), Q.F32),
        ]
    return write_llama_gguf(
        Path(path),
        block_count=layers,
        n_embd=N_EMBD,
        n_ff=N_FF,
        n_vocab=64,
        n_head=4,
        n_head_kv=2,
        extra_tensors=extra,
    )
