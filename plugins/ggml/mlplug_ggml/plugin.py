"""pluggy hook implementations of the ``ggml`` backend (entry point ``mlplug: ggml``).

Kept light on purpose: importing this module must not open the ggml libraries; hooks reach the
backend lazily, when they are called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.plugin_api import hookimpl

if TYPE_CHECKING:
    from mlplug import Backend, BackendParams, DeviceInfo
    from mlplug.plugin_api import BuildInfo, Register

__all__ = ["mlplug_register_backends"]


def _factory(model_path: str | None, params: BackendParams) -> Backend:
    from .backend import GGMLBackend

    return GGMLBackend(model_path, params)


def _devices() -> list[DeviceInfo]:
    from .device import device_infos

    return device_infos()


def _build() -> BuildInfo:
    from .build import describe

    return describe()


@hookimpl
def mlplug_register_backends(register: Register) -> None:
    """Register the ``ggml`` backend (priority 100: preferred when it loads)."""
    register("ggml", _factory, priority=100, devices=_devices, build=_build)
