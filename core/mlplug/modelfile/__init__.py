"""GGUF model files: read-only decoding, typed metadata (Config) and tensor placement."""

from __future__ import annotations

from .config import Config
from .placement import (
    CPU,
    DeviceRef,
    Layer,
    LayerAssignment,
    PlacementPlan,
    PlannedTensor,
    assign_layer,
    group_key,
    group_layers,
    plan_placement,
)
from .reader import (
    DEFAULT_ALIGNMENT,
    KV,
    GGUFFile,
    GGUFValueType,
    MetadataValue,
    TensorInfo,
    tensor_type_size,
)

__all__ = [
    "CPU",
    "DEFAULT_ALIGNMENT",
    "KV",
    "Config",
    "DeviceRef",
    "GGUFFile",
    "GGUFValueType",
    "Layer",
    "LayerAssignment",
    "MetadataValue",
    "PlacementPlan",
    "PlannedTensor",
    "TensorInfo",
    "assign_layer",
    "group_key",
    "group_layers",
    "plan_placement",
    "tensor_type_size",
]
