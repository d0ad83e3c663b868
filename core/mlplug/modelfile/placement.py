"""Tensor placement and weight accounting at backend creation.

The rules (input embeddings, tied output, output tensors, ...) are written down in
docs/models-and-memory.md, section 'Layer assignment and the placement rules'.

Pure and backend-neutral: :func:`plan_placement` decides, for every tensor of a model file, which
tensors to create (name, dtype, shape), on which device and for which layer, and sums the weight
bytes per device and layer. A backend then allocates what the plan says. Device index ``-1`` is
the CPU (inputs always go there); ``0..n-1`` index the ``gpus`` sequence.

The plan is sized by counts from the file, so they are checked first and the plan stays linear
in the file's size: ``block_count`` may not exceed the number of tensors, every layer index in a
tensor name must be below it, and rope tensors (copied once per block) get at most three copies
per tensor in the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeAlias

from ..dtypes import TRAITS, DType, align_up, nbytes_of
from ..errors import ModelFileError
from ..quantmm import copy_bytes
from .reader import _MXFP4_OLLAMA_ID, TensorInfo

__all__ = [
    "CPU",
    "DeviceRef",
    "LayerAssignment",
    "Layer",
    "PlacementPlan",
    "PlannedTensor",
    "assign_layer",
    "gets_copy",
    "group_key",
    "group_layers",
    "plan_placement",
]

CPU: Final = -1
"""Device index of the CPU (and of the input buffer type)."""

Layer: TypeAlias = "int | Literal['input', 'output']"
"""A repeating layer index, ``"input"`` (kept in CPU memory) or ``"output"`` (index block_count)."""

_INPUT_PARTS: Final = frozenset({"position_embd", "token_embd", "token_norm_embd", "token_types"})
_OUTPUT_PARTS: Final = frozenset(
    {
        "cls",
        "output",
        "output_norm",
        "altup_proj",
        "altup_unembd_proj",
        "per_layer_token_embd",
        "per_layer_model_proj",
        "per_layer_proj_norm",
    }
)
_ROPE_PARTS: Final = frozenset({"rope_freqs", "rope_factors_long", "rope_factors_short"})
_VISION_PREFIXES: Final = ("v.", "mm.", "s.")
_DIGITS: Final = re.compile(r"[0-9]+")


class DeviceRef(Protocol):
    """A GPU as the plan sees it: its id and library (a DeviceID or DeviceInfo fits)."""

    @property
    def id(self) -> str: ...

    @property
    def library(self) -> str: ...


class LayerAssignment(DeviceRef, Protocol):
    """One entry of a GPU layer assignment (a GPULayers fits): a device and its layer indices."""

    @property
    def layers(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor the backend must create.

    :param source: the file tensor whose data fills it.
    :param name: the created name (``output.weight`` for a tied embedding,
        ``blk.3.rope_freqs.weight`` for a per-layer rope copy).
    :param dtype: the created dtype (MXFP4 for file type 4; F32 for BF16 ``*_exps.bias``).
    :param ne: ggml shape, innermost first.
    :param device: ``-1`` for the CPU, else an index into the plan's GPUs.
    :param layer: layer index, ``"input"`` or ``"output"``.
    :param nbytes: byte size of the created tensor.
    :param size: ``nbytes`` rounded up to the device's alignment, as accounted.
    """

    source: TensorInfo
    name: str
    dtype: DType
    ne: tuple[int, ...]
    device: int
    layer: Layer
    nbytes: int
    size: int

    @property
    def conversion(self) -> Literal["mxfp4_reorder", "bf16_to_f32"] | None:
        """Return what loading does to the bytes: MXFP4 re-interleave, BF16 widening, or None."""
        if self.source.ggml_type == _MXFP4_OLLAMA_ID:
            return "mxfp4_reorder"
        if self.source.dtype is DType.BF16 and self.dtype is DType.F32:
            return "bf16_to_f32"
        return None


@dataclass
class PlacementPlan:
    """Where every tensor goes and how many weight bytes each device holds per layer.

    ``cpu_weights`` and each ``gpu_weights[g]`` have ``block_count + 1`` entries; the last is the
    output layer. ``input_weights`` is not part of ``cpu_weights``.
    """

    block_count: int
    tensors: list[PlannedTensor] = field(default_factory=list)
    """Created tensors in creation order (a name reused on the same device appears once)."""
    targets: dict[str, list[str]] = field(default_factory=dict)
    """File tensor name -> created names its data is written to."""
    input_weights: int = 0
    cpu_weights: list[int] = field(default_factory=list)
    gpu_weights: list[list[int]] = field(default_factory=list)
    layer_devices: list[int] = field(default_factory=list)
    """Device of layers ``0..block_count``; index ``block_count`` is the output device."""
    names: dict[str, PlannedTensor] = field(default_factory=dict)
    """Name table for ``get``: created name -> tensor (the last one created under that name)."""
    weight_copies: bool = False
    """Whether weights :func:`gets_copy` picks are sized with their float32 copies."""

    @property
    def output_device(self) -> int:
        """Device of the output layer."""
        return self.layer_devices[self.block_count]

    @property
    def used_gpus(self) -> list[int]:
        """Indices of GPUs that hold at least one weight tensor, ascending."""
        return sorted({t.device for t in self.tensors if t.device != CPU})

    def get(self, name: str) -> PlannedTensor | None:
        """Return the created tensor called ``name``, or ``None``."""
        return self.names.get(name)

    def weights(self, device: int) -> list[int]:
        """Return the per-layer weight bytes of ``device`` (``-1``: the CPU)."""
        return self.cpu_weights if device == CPU else self.gpu_weights[device]


def assign_layer(
    layer: int, gpus: Sequence[DeviceRef], gpu_layers: Iterable[LayerAssignment]
) -> int:
    """Return the device of ``layer``: the first entry listing it decides.

    That entry's GPU (equal id *and* library) if it exists, else the CPU; no entry -> the CPU.
    """
    for entry in gpu_layers:
        if layer in entry.layers:
            for index, gpu in enumerate(gpus):
                if gpu.id == entry.id and gpu.library == entry.library:
                    return index
            return CPU
    return CPU


def group_key(name: str) -> tuple[str, str]:
    """Split a tensor name into its group and the rest (``blk.0.attn_q.weight`` -> ``blk.0``).

    The first ``blk`` or ``mm`` part followed by at least two parts is joined with everything
    before it and its number.
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in ("blk", "mm"):
            if len(parts) > i + 2:
                parts = [".".join(parts[: i + 2]), *parts[i + 2 :]]
            break
    return parts[0], ".".join(parts[1:])


def group_layers(tensors: Iterable[TensorInfo]) -> dict[str, dict[str, TensorInfo]]:
    """Group tensors by :func:`group_key`: ``{"blk.0": {"attn_q.weight": info}, ...}``."""
    groups: dict[str, dict[str, TensorInfo]] = {}
    for t in tensors:
        group, rest = group_key(t.name)
        groups.setdefault(group, {})[rest] = t
    return groups


def _target_dtype(t: TensorInfo) -> DType:
    if t.dtype is DType.BF16 and t.name.endswith("_exps.bias"):
        return DType.F32
    return t.dtype


_Rule: TypeAlias = "tuple[Literal['input', 'output', 'rope', 'layer', 'other'], int]"


def _rule(t: TensorInfo, block_count: int, path: str) -> _Rule:
    """Classify one tensor by the placement rules; ``(kind, layer index or -1)``.

    The first matching rule wins: input embeddings, output tensors (vision and projector tensors
    included), per-layer rope factors, numbered layer tensors, other inputs.

    :raises ModelFileError: a type no backend can create, or a layer index >= ``block_count``.
    """
    if t.dtype is DType.OTHER:
        message = f'tensor "{t.name}" has type {t.ggml_type}, which mlplug cannot create'
        raise ModelFileError(path, message, offset=t.info_offset)
    parts = t.name.split(".")
    if any(p in _INPUT_PARTS for p in parts):  # input embeddings
        return "input", -1
    if any(p in _OUTPUT_PARTS for p in parts) or t.name.startswith(_VISION_PREFIXES):
        return "output", -1  # output tensors; vision and projector tensors
    if any(p in _ROPE_PARTS for p in parts):  # per-layer rope factors
        return "rope", -1
    m = _DIGITS.search(t.name)
    if m is None:  # other inputs
        return "other", -1
    digits = m.group().lstrip("0") or "0"  # numbered layer tensors
    index = int(digits) if len(digits) < 19 else -1  # -1: too long to be a layer
    if not 0 <= index < block_count:
        message = (
            f'tensor "{t.name}" has layer index {digits[:30]} but block_count is {block_count}'
        )
        raise ModelFileError(path, message, offset=t.info_offset)
    return "layer", index


def _classify(tensors: Sequence[TensorInfo], block_count: int, path: str, key: str) -> list[_Rule]:
    """Check every count the plan is sized by, then classify each tensor (nothing sized yet).

    ``block_count`` sizes the per-layer lists, so it may not exceed the number of tensors (each
    block holds at least one). Rope tensors are copied once per block; their copies may not
    exceed three times the tensor count (one of each of the three rope kinds per block always
    fits), which keeps the plan linear in the file's size.
    """
    n = len(tensors)
    if block_count > n:
        message = (
            f"{key} = {block_count} exceeds the number of tensors in the file ({n}); "
            "every block holds at least one tensor"
        )
        raise ModelFileError(path, message, key=key)
    rules = [_rule(t, block_count, path) for t in tensors]
    budget = len(_ROPE_PARTS) * n
    copies = 0
    for t, (kind, _) in zip(tensors, rules):
        if kind == "rope":
            copies += block_count
            if copies > budget:
                message = (
                    f'rope tensor "{t.name}" brings the per-block copies of rope tensors to '
                    f"{copies} ({key} = {block_count}), more than {budget} "
                    f"({len(_ROPE_PARTS)} per tensor in the file, {n} tensors)"
                )
                raise ModelFileError(path, message, offset=t.info_offset, key=key)
    return rules


def gets_copy(dtype: DType, device: int, layer: Layer) -> bool:
    """Whether a weight gets a float32 copy when dequantised copies are on.

    Block-encoded and half weights on the CPU do (:func:`mlplug.quantmm.copy_bytes`), except the
    input layer's (token embeddings are read a few rows at a time, never multiplied whole).
    """
    return device == CPU and layer != "input" and copy_bytes(dtype, 1) > 0


def plan_placement(
    tensors: Sequence[TensorInfo],
    block_count: int,
    *,
    path: str = "<model>",
    block_count_key: str = "block_count",
    gpus: Sequence[DeviceRef] = (),
    gpu_layers: Sequence[LayerAssignment] = (),
    alignment: int = 32,
    gpu_alignment: Mapping[int, int] | None = None,
    weight_copies: bool = False,
) -> PlacementPlan:
    """Decide the device and layer of every tensor and sum weight bytes (the placement rules).

    Every count the plan is sized by is checked against the file first: ``block_count`` may not
    exceed the number of tensors, a tensor's layer index (the first run of digits in its name,
    e.g. ``blk.7.`` -> 7) must be below ``block_count``, and the per-block copies of rope tensors
    may not exceed three per tensor in the file. A layer index out of range is an error, not a
    tensor placed elsewhere, because no layer exists to hold it.

    :param tensors: the file's tensor infos in file order.
    :param block_count: the number of repeating layers (``Config.block_count()``).
    :param path: the model path, for error messages.
    :param block_count_key: the metadata key ``block_count`` was read from, for error messages.
    :param gpus: the backend's GPUs in enumeration order; their positions are device indices.
    :param gpu_layers: the requested assignment (GPULayers-like entries), first match wins.
    :param alignment: CPU buffer alignment; sizes are rounded up to it.
    :param gpu_alignment: alignment per GPU index where it differs from ``alignment``.
    :param weight_copies: the backend keeps a float32 copy of each weight :func:`gets_copy`
        picks (``BackendParams.dequantize``); its bytes are added to the weight's size.
    :returns: the plan.
    :raises ModelFileError: ``block_count`` beyond the tensor count, a layer index >=
        ``block_count``, too many rope copies, or a type no backend can create.
    """
    rules = _classify(tensors, block_count, path, block_count_key)
    plan = PlacementPlan(block_count=block_count, weight_copies=weight_copies)
    plan.cpu_weights = [0] * (block_count + 1)
    plan.gpu_weights = [[0] * (block_count + 1) for _ in gpus]
    plan.layer_devices = [assign_layer(i, gpus, gpu_layers) for i in range(block_count + 1)]
    aligns = dict(gpu_alignment or {})
    created: set[tuple[int, str]] = set()
    has_output_group = any(group_key(t.name)[0] == "output" for t in tensors)

    def create(src: TensorInfo, name: str, device: int, layer: Layer) -> None:
        plan.targets.setdefault(src.name, []).append(name)
        if (device, name) in created:
            return  # the buffer type already holds a tensor of that name: reused, no memory
        created.add((device, name))
        dtype = _target_dtype(src)
        nbytes = nbytes_of(dtype, src.ne) if src.ne else TRAITS[dtype].type_size
        align = alignment if device == CPU else aligns.get(device, alignment)
        size = align_up(nbytes, align)
        if weight_copies and gets_copy(dtype, device, layer):
            size += align_up(copy_bytes(dtype, math.prod(src.ne or (1,))), align)
        planned = PlannedTensor(src, name, dtype, src.ne, device, layer, nbytes, size)
        plan.tensors.append(planned)
        plan.names[name] = planned
        if layer == "input":
            plan.input_weights += size
        else:
            index = block_count if layer == "output" else int(layer)
            plan.weights(device)[index] += size

    output_device = plan.layer_devices[block_count]
    for t, (kind, index) in zip(tensors, rules):
        if kind == "input":  # input embeddings
            create(t, t.name, CPU, "input")
            if t.name == "token_embd.weight" and not has_output_group:  # tied output
                create(t, "output.weight", output_device, "output")
        elif kind == "output":  # output tensors; vision and projector tensors
            create(t, t.name, output_device, "output")
        elif kind == "rope":  # per-layer rope factors
            for i in range(block_count):
                create(t, f"blk.{i}.{t.name}", plan.layer_devices[i], i)
            plan.targets.setdefault(t.name, [])
        elif kind == "layer":  # numbered layer tensors
            create(t, t.name, plan.layer_devices[index], index)
        else:  # other inputs
            create(t, t.name, CPU, "input")
    return plan
