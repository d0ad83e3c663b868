"""Entry point of the cpu_numpy plugin: hook implementations only, no heavy imports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.plugin_api import hookimpl

if TYPE_CHECKING:
    from mlplug import Backend, BackendParams, DeviceInfo
    from mlplug.plugin_api import Register


def _factory(model_path: str | None, params: BackendParams) -> Backend:
    from .backend import CpuNumpyBackend

    return CpuNumpyBackend(model_path, params)


def _devices() -> list[DeviceInfo]:
    from .device import devices

    return devices()


@hookimpl
def mlplug_register_backends(register: Register) -> None:
    """Register the ``cpu_numpy`` backend (low priority: a portable reference)."""
    register("cpu_numpy", _factory, priority=10, devices=_devices)
