"""Memory accounting records: DeviceMemory per device and BackendMemory for a whole backend."""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator

from .device import DeviceID

__all__ = ["BackendMemory", "DeviceMemory", "human_bytes2"]

_KIB: Final = 1024
_MIB: Final = 1024 * _KIB
_GIB: Final = 1024 * _MIB
_MUTABLE: Final = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


def human_bytes2(n: int) -> str:
    """Return a byte count in binary units with one decimal (``1.5 KiB``) or as ``512 B``.

    :param n: the byte count.
    """
    for unit, size in (("GiB", _GIB), ("MiB", _MIB), ("KiB", _KIB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _go_list(values: list[int]) -> str:
    return "[" + " ".join(str(v) for v in values) + "]"


class DeviceMemory(BaseModel):
    """Bytes one device holds: weights and KV cache per layer, and the compute graph.

    ``weights`` and ``cache`` are indexed by layer; index ``block_count`` is the output layer.
    The record is mutable: a backend fills it in while it allocates.
    """

    model_config = _MUTABLE

    id: str = ""
    library: str = Field(default="", validation_alias="backend", serialization_alias="backend")
    name: str = Field(default="", validation_alias="Name", serialization_alias="Name")
    weights: list[NonNegativeInt] = Field(
        default_factory=list, validation_alias="Weights", serialization_alias="Weights"
    )
    cache: list[NonNegativeInt] = Field(
        default_factory=list, validation_alias="Cache", serialization_alias="Cache"
    )
    graph: NonNegativeInt = Field(default=0, validation_alias="Graph", serialization_alias="Graph")

    @field_validator("weights", "cache", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        return [] if value is None else value

    @property
    def device_id(self) -> DeviceID:
        """The device this memory is on."""
        return DeviceID(id=self.id, library=self.library)

    def size(self) -> int:
        """Return the total bytes: all weights, all cache and the graph."""
        return sum(self.weights) + sum(self.cache) + self.graph

    def log_value(self) -> dict[str, Any]:
        """Return the structured-log view: ``ID``, ``Weights``, ``Cache``, ``Graph`` when present.

        A list is present when any element is non-zero, ``Graph`` when non-zero, and ``ID`` only
        when it is non-empty and something else is present. All zero gives ``{}``.
        """
        attrs: dict[str, Any] = {}
        if any(self.weights):
            attrs["Weights"] = list(self.weights)
        if any(self.cache):
            attrs["Cache"] = list(self.cache)
        if self.graph:
            attrs["Graph"] = self.graph
        if attrs and self.id:
            attrs = {"ID": self.id, **attrs}
        return attrs

    def go_repr(self) -> str:
        """Return Go's ``%+v`` text of the record."""
        return (
            f"{{DeviceID:{{ID:{self.id} Library:{self.library}}} Name:{self.name} "
            f"Weights:{_go_list(self.weights)} Cache:{_go_list(self.cache)} Graph:{self.graph}}}"
        )

    def go_json(self) -> dict[str, Any]:
        """Return the record under the reference's JSON keys (``id``, ``backend``, ``Name``...)."""
        out = self.model_dump(mode="json", by_alias=True)
        if not out["backend"]:
            del out["backend"]
        return out


def _slog_text(value: str) -> str:
    """Quote a value the way Go's slog text handler does when it needs quoting."""
    if value and all(c.isprintable() and c not in ' ="' for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)


class BackendMemory(BaseModel):
    """Bytes a backend needs on every device; the last (possibly failed) allocation included."""

    model_config = _MUTABLE

    #: Weights that always stay in CPU memory (token embeddings and other non-layer inputs).
    input_weights: NonNegativeInt = Field(
        default=0, validation_alias="InputWeights", serialization_alias="InputWeights"
    )
    #: System memory (not counting unified memory allocated through a GPU).
    cpu: DeviceMemory = Field(
        default_factory=lambda: DeviceMemory(), validation_alias="CPU", serialization_alias="CPU"
    )
    #: One entry per GPU the backend enumerated, in enumeration order.
    gpus: list[DeviceMemory] = Field(
        default_factory=list, validation_alias="GPUs", serialization_alias="GPUs"
    )

    @field_validator("gpus", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        return [] if value is None else value

    def log_value(self) -> dict[str, Any]:
        """Return the structured-log view: ``InputWeights``, then each device's group by name.

        Devices whose group is empty are left out (as slog does); a device with an empty name has
        its attributes inlined.
        """
        attrs: dict[str, Any] = {}
        if self.input_weights:
            attrs["InputWeights"] = self.input_weights
        for device in [self.cpu, *self.gpus]:
            group = device.log_value()
            if not group:
                continue
            if device.name:
                attrs[device.name] = group
            else:
                attrs.update(group)
        return attrs

    def log_records(self) -> list[tuple[str, dict[str, str]]]:
        """Return the messages :meth:`log` emits, in order, as ``(message, attributes)``."""
        records: list[tuple[str, dict[str, str]]] = []
        total = 0

        def add(message: str, device: DeviceMemory, size: int) -> None:
            nonlocal total
            if size > 0:
                records.append((message, {"device": device.name, "size": human_bytes2(size)}))
                total += size

        for gpu in self.gpus:
            add("model weights", gpu, sum(gpu.weights))
        add("model weights", self.cpu, self.input_weights + sum(self.cpu.weights))
        for gpu in self.gpus:
            add("kv cache", gpu, sum(gpu.cache))
        add("kv cache", self.cpu, sum(self.cpu.cache))
        for gpu in self.gpus:
            add("compute graph", gpu, gpu.graph)
        add("compute graph", self.cpu, self.cpu.graph)
        if total > 0:
            records.append(("total memory", {"size": human_bytes2(total)}))
        return records

    def log(self, level: int, logger: logging.Logger | None = None) -> None:
        """Log weights, KV cache and graph sizes per device, then the total.

        Each line reads like Go's slog text: ``model weights device=CUDA0 size="1.5 GiB"``.

        :param level: the :mod:`logging` level.
        :param logger: where to log; default the ``mlplug.memory`` logger.
        """
        out = logging.getLogger(__name__) if logger is None else logger
        for message, attrs in self.log_records():
            text = message + "".join(f" {k}={_slog_text(v)}" for k, v in attrs.items())
            out.log(level, text)

    def go_repr(self) -> str:
        """Return Go's ``%+v`` text of the record (the tail of ErrNoMem's message)."""
        gpus = " ".join(g.go_repr() for g in self.gpus)
        return f"{{InputWeights:{self.input_weights} CPU:{self.cpu.go_repr()} GPUs:[{gpus}]}}"

    def go_json(self) -> dict[str, Any]:
        """Return the record under the reference's JSON keys (``InputWeights``, ``CPU``...)."""
        return {
            "InputWeights": self.input_weights,
            "CPU": self.cpu.go_json(),
            "GPUs": [g.go_json() for g in self.gpus],
        }
