"""The op catalogue: every Tensor method and the primitive graph ops backends implement.

Tensor methods validate their operands (same error on every backend), then build graph nodes
out of a small set of primitive ops; composite methods (``variance``, ``conv_2d``, ``stack``, ...)
are written once here from primitives. A backend implements each primitive it supports in its
``kernels`` table; building a node whose primitive has no kernel raises ``NotSupportedError``.

The op table (:mod:`mlplug.ops.table`) lists every op once; the parameter records nodes carry
are in :mod:`mlplug.ops.records`.
"""

from __future__ import annotations

from .table import (
    CONTEXT_CONSTRUCTORS,
    OPS,
    PRIMITIVES,
    TENSOR_METHODS,
    UNARY_METHODS,
    UNARY_PRIMITIVES,
    VIEW_OPS,
    WRITE_OPS,
    Op,
    OpKind,
    OpSpec,
)

__all__ = [
    "CONTEXT_CONSTRUCTORS",
    "OPS",
    "PRIMITIVES",
    "TENSOR_METHODS",
    "UNARY_METHODS",
    "UNARY_PRIMITIVES",
    "VIEW_OPS",
    "WRITE_OPS",
    "Op",
    "OpKind",
    "OpSpec",
]
