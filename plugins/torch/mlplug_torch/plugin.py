"""Entry point of the torch plugin: hook implementations only, no heavy imports.

Importing this module must not import torch; the factory and the device enumerator do it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.plugin_api import hookimpl

if TYPE_CHECKING:
    from mlplug import Backend, BackendParams, DeviceInfo
    from mlplug.plugin_api import Register


def _factory(model_path: str | None, params: BackendParams) -> Backend:
    from .backend import TorchBackend

    return TorchBackend(model_path, params)


def _devices() -> list[DeviceInfo]:
    from .device import devices

    return devices()


@hookimpl
def mlplug_register_backends(register: Register) -> None:
    """Register the ``torch`` backend (priority 50: above cpu_numpy, below ggml)."""
    register("torch", _factory, priority=50, devices=_devices)
