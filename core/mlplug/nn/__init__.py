"""Layers shared by model architectures, written on the public Tensor API.

Each layer holds its weights (backend tensors) and has a ``forward(ctx, x)``; they build graph
nodes and never compute, so an architecture composes them into one graph per forward pass.
"""

from __future__ import annotations

from .attention import attention
from .linear import Embedding, Linear
from .norm import LayerNorm, RMSNorm
from .rope import ROPE_NEOX, ROPE_NORMAL, RoPE

__all__ = [
    "ROPE_NEOX",
    "ROPE_NORMAL",
    "Embedding",
    "LayerNorm",
    "Linear",
    "RMSNorm",
    "RoPE",
    "attention",
]
