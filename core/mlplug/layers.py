"""GPU layer assignment: which layer indices go to which device (GPULayers, GPULayersList)."""

from __future__ import annotations

import hashlib
import re
import struct
import sys
from collections.abc import Iterable
from typing import Annotated, Any, Final

from pydantic import Field, GetCoreSchemaHandler, field_validator
from pydantic_core import CoreSchema, core_schema

from .device import DeviceID

__all__ = ["GPULayers", "GPULayersList", "parse_gpu_layers"]

_INT64_MAX: Final = 2**63 - 1

_Layer = Annotated[int, Field(ge=0, le=_INT64_MAX)]


class GPULayers(DeviceID):
    """The layer indices assigned to one device (``id`` + ``library``).

    The record is frozen, but ``layers`` is a list that :meth:`__str__` sorts in place, as the
    reference does (which changes a later :meth:`GPULayersList.hash`).
    """

    layers: list[_Layer] = Field(
        default_factory=list, validation_alias="Layers", serialization_alias="Layers"
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        return [] if value is None else value

    def first_layer(self) -> int:
        """Return the smallest layer index, or ``sys.maxsize`` when there are none."""
        return min(self.layers, default=sys.maxsize)

    def __str__(self) -> str:
        """Sort ``layers`` in place and return ``ID:<id> Layers:<n>(<first>..<last>)``.

        Non-contiguous layers print as ``ID:<id> Layers:<n>[<l0> <l1> ...]``; no layers print as
        ``""``. The library is never printed.
        """
        layers = self.layers
        if not layers:
            return ""
        layers.sort()
        count = len(layers)
        if all(layer == layers[0] + i for i, layer in enumerate(layers)):
            return f"ID:{self.id} Layers:{count}({layers[0]}..{layers[-1]})"
        listed = " ".join(str(layer) for layer in layers)
        return f"ID:{self.id} Layers:{count}[{listed}]"


class GPULayersList(list[GPULayers]):
    """A list of :class:`GPULayers`: the whole layer assignment of a backend."""

    def __init__(self, entries: Iterable[GPULayers] = ()) -> None:
        """Create the list.

        :param entries: the per-device assignments.
        :raises TypeError: if an entry is not a GPULayers.
        """
        super().__init__(entries)
        for entry in self:
            if not isinstance(entry, GPULayers):
                msg = f"GPULayersList holds GPULayers, got {type(entry).__name__}"
                raise TypeError(msg)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """Validate as a list of GPULayers, then wrap it in this class."""
        return core_schema.no_info_after_validator_function(
            cls, handler.generate_schema(list[GPULayers])
        )

    def sum(self) -> int:
        """Return the number of layer entries across all devices (repeats counted)."""
        return sum(len(g.layers) for g in self)

    def less(self, i: int, j: int) -> bool:
        """Return whether entry ``i`` sorts before entry ``j`` (smaller first layer; empty last).

        :param i: an index.
        :param j: an index.
        """
        return self[i].first_layer() < self[j].first_layer()

    def swap(self, i: int, j: int) -> None:
        """Exchange entries ``i`` and ``j``.

        :param i: an index.
        :param j: an index.
        """
        self[i], self[j] = self[j], self[i]

    def sorted_by_first_layer(self) -> GPULayersList:
        """Return a new list ordered by first layer (stable; entries without layers last)."""
        return GPULayersList(sorted(self, key=GPULayers.first_layer))

    def hash(self) -> int:
        """Return a 64-bit identifier of the assignment, for equality checks within a process.

        Hashed, in list order, for each entry with layers: the UTF-8 bytes of ``id + library``,
        then each layer as a little-endian signed 64-bit integer in its current order.
        """
        h = hashlib.blake2b(digest_size=8)
        for g in self:
            if g.layers:
                h.update((g.id + g.library).encode())
                h.update(struct.pack(f"<{len(g.layers)}q", *g.layers))
        return int.from_bytes(h.digest(), "little")

    def __str__(self) -> str:
        """Return ``<sum>[<entry> <entry> ...]`` (``[...]`` alone when the sum is 0).

        Sorts each entry's layers in place (see :meth:`GPULayers.__str__`).
        """
        total = self.sum()
        inner = " ".join(str(g) for g in self)
        return f"{total}[{inner}]" if total > 0 else f"[{inner}]"

    def __repr__(self) -> str:
        """Return ``GPULayersList([...])``."""
        return f"GPULayersList({list.__repr__(self)})"


_ENTRY: Final = re.compile(r"^(?P<lib>[^:=]*):(?P<id>[^=]+)=(?P<ranges>.*)$")
_RANGE: Final = re.compile(r"^(?P<lo>[0-9]+)(?:-(?P<hi>[0-9]+))?$")
#: Layer indices the parser accepts are below this (models have at most a few hundred layers).
MAX_PARSED_LAYER: Final = 65536


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"invalid --gpu-layers {spec!r}: {why} (expected LIB:ID=RANGES[;...])")


def parse_gpu_layers(spec: str) -> GPULayersList:
    """Parse a ``--gpu-layers`` value such as ``CUDA:0=0-11,32;CUDA:1=12-31``.

    Entries are separated by ``;``. Each is ``LIB:ID=RANGES``: the device's library (may be empty)
    and id, then comma-separated layer indices or inclusive ranges ``A-B``. The output layer of a
    model with ``block_count`` N has index N; indices must be below :data:`MAX_PARSED_LAYER`.
    Spaces around parts are ignored; an empty spec is an empty list. A layer given twice, or a
    device given twice, is an error.

    :param spec: the flag value.
    :returns: one GPULayers per entry, in the order given.
    :raises ValueError: if the text does not follow the format.
    """
    result = GPULayersList()
    seen_layers: set[int] = set()
    seen_devices: set[tuple[str, str]] = set()
    for raw in spec.split(";"):
        part = raw.strip()
        if not part:
            continue
        m = _ENTRY.match(part)
        if m is None:
            raise _bad(spec, f"entry {part!r} is not LIB:ID=RANGES")
        lib, dev_id = m["lib"].strip(), m["id"].strip()
        if not dev_id:
            raise _bad(spec, f"entry {part!r} has no device id")
        if (lib, dev_id) in seen_devices:
            raise _bad(spec, f"device {lib}:{dev_id} is given twice")
        seen_devices.add((lib, dev_id))
        layers: list[int] = []
        for item in m["ranges"].split(","):
            r = _RANGE.match(item.strip())
            if r is None:
                raise _bad(spec, f"{item.strip()!r} is not a layer index or range A-B")
            lo = int(r["lo"])
            hi = lo if r["hi"] is None else int(r["hi"])
            if hi < lo:
                raise _bad(spec, f"range {lo}-{hi} is empty")
            if hi >= MAX_PARSED_LAYER:
                raise _bad(spec, f"layer {hi} is not below {MAX_PARSED_LAYER}")
            for layer in range(lo, hi + 1):
                if layer in seen_layers:
                    raise _bad(spec, f"layer {layer} is assigned twice")
                seen_layers.add(layer)
                layers.append(layer)
        result.append(GPULayers(id=dev_id, library=lib, layers=layers))
    return result
