"""Weight writers: how the model loader hands file bytes to a backend's tensor storage.

A backend returns one from :meth:`mlplug.Backend.hook_weight_writer` for each weight tensor; the
loader calls :meth:`WeightWriter.write` with consecutive pieces of the tensor's bytes and
:meth:`WeightWriter.finish` once at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .tensor import Tensor

__all__ = ["HostWriter", "StagedWriter", "WeightWriter"]


class WeightWriter(Protocol):
    """Writes one weight tensor's bytes in pieces; :meth:`finish` is called once at the end."""

    def write(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at byte ``offset`` of the tensor's storage."""
        ...

    def finish(self) -> None:
        """Complete the tensor (flush a staging buffer); called after the last write."""
        ...


class HostWriter:
    """Writes into a writable host view of the tensor's storage (numpy-like backends)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view

    def write(self, offset: int, data: memoryview) -> None:
        """Copy ``data`` into the storage at ``offset``."""
        self._view[offset : offset + len(data)] = data

    def finish(self) -> None:
        """Nothing to do: the data is already in place."""


class StagedWriter:
    """Collects the whole tensor in host memory, then hands it over with ``Tensor.from_bytes``.

    The fallback for backends that expose neither host storage nor partial writes.
    """

    def __init__(self, t: Tensor) -> None:
        self._t = t
        self._stage = bytearray(t.nbytes)

    def write(self, offset: int, data: memoryview) -> None:
        """Copy ``data`` into the staging buffer at ``offset``."""
        self._stage[offset : offset + len(data)] = data

    def finish(self) -> None:
        """Write the staged bytes to the tensor and drop the staging buffer."""
        stage, self._stage = self._stage, bytearray()
        self._t.from_bytes(memoryview(stage))
