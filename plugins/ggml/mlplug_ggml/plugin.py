"""pluggy hook implementations of the ``ggml`` backend (entry point ``mlplug: ggml``).

Kept light on purpose: importing this module must not open the ggml libraries; hooks reach the
backend lazily, when they are called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.plugin_api import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlplug import Backend, BackendParams, DeviceInfo
    from mlplug.plugin_api import BuildInfo, Register

__all__ = ["mlplug_register_backends"]


def _factory(model_path: str | None, params: BackendParams) -> Backend:
    from .backend import GGMLBackend

    return GGMLBackend(model_path, params)


def _devices() -> list[DeviceInfo]:
    """Every ggml device, the remote ones of ``$MLPLUG_RPC_SERVERS`` included."""
    from mlplug.plugin_api import env_endpoints

    from .device import device_infos, load_backends
    from .rpc import add_servers

    endpoints = env_endpoints()
    if endpoints:
        add_servers(load_backends(), endpoints)
    return device_infos()


def _build() -> BuildInfo:
    from .build import describe

    return describe()


def _serve(
    host: str, port: int, device: str | None, threads: int, ready: Callable[[int], None]
) -> None:
    from .rpc import serve

    serve(host, port, device, threads, ready)


@hookimpl
def mlplug_register_backends(register: Register) -> None:
    """Register the ``ggml`` backend (priority 100: preferred when it loads); it serves its
    devices to remote clients through ggml's RPC server (``mlplug serve``)."""
    register("ggml", _factory, priority=100, devices=_devices, build=_build, serve=_serve)
