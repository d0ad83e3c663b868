"""The one device of the numpy backend: the host CPU, with real memory figures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.plugin_api import cpu_device_info

if TYPE_CHECKING:
    from mlplug.plugin_api import DeviceInfo


def devices() -> list[DeviceInfo]:
    """Return the host CPU as a DeviceInfo with total and currently available memory."""
    return [cpu_device_info()]
