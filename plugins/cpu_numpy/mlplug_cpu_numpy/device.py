"""The one device of the numpy backend: the host CPU, with real memory figures."""

from __future__ import annotations

import os

from mlplug.device import DeviceInfo
from mlplug.sysinfo import cpu_description, host_memory


def devices() -> list[DeviceInfo]:
    """Return the host CPU as a DeviceInfo with total and currently available memory."""
    total, free = host_memory()
    return [
        DeviceInfo(
            id="0",
            library="cpu",
            name="CPU",
            description=cpu_description(),
            total_memory=total,
            free_memory=free,
            compute_major=-1,
            compute_minor=-1,
        )
    ]


def thread_count() -> int:
    """Number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
