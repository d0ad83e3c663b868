"""Device enumeration through ggml's backend registry, without a model and without a backend.

The first call loads the libraries (:func:`mlplug_ggml._lib.load`) and then, once per process,
every dynamically loadable backend found next to them (``ggml_backend_load_all_from_path``), so a
``GGML_BACKEND_DL`` build with CUDA/Vulkan modules shows its GPUs too.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from mlplug.plugin_api import BackendLoadError, DeviceInfo, host_memory

from . import _lib

if TYPE_CHECKING:
    from ._lib import Lib

__all__ = [
    "ENV_DEVICE",
    "GGMLDevice",
    "compute_device",
    "cpu_device",
    "device_infos",
    "device_memory",
    "devices",
    "load_backends",
    "system_memory",
    "to_device_info",
]

#: Environment variable naming the ggml device to compute on (``CPU``, ``CUDA0``, ...).
ENV_DEVICE: Final = "MLPLUG_GGML_DEVICE"

#: DeviceInfo.library of ggml's CPU device (lower case, as ollama reports it; docs/devices.md).
CPU_LIBRARY: Final = "cpu"
#: DeviceInfo.library of devices served by ggml RPC servers (``mlplug serve``).
REMOTE_LIBRARY: Final = "RPC"

_BACKENDS_LOADED = False
_BACKENDS_LOCK = threading.Lock()


@dataclass
class GGMLDevice:
    """One ggml device: the DeviceInfo fields, the ggml device type and the raw device pointer."""

    id: str
    library: str
    name: str
    description: str = ""
    filter_id: str = ""
    integrated: bool = False
    pci_id: str = ""
    total_memory: int = 0
    free_memory: int = 0
    compute_major: int = 0
    compute_minor: int = 0
    driver_major: int = 0
    driver_minor: int = 0
    library_path: list[str] = field(default_factory=list)
    #: "CPU", "GPU", "IGPU", "ACCEL" (or "META" for ggml's multi-device wrapper).
    type: str = "CPU"
    #: ``ggml_backend_dev_t``; valid for the life of the process.
    dev: int = 0

    @property
    def remote(self) -> bool:
        """Whether the device is served by a ggml RPC server (library ``RPC``)."""
        return self.library == REMOTE_LIBRARY


def load_backends() -> Lib:
    """Load the libraries and, once per process, the dynamic backends beside them.

    Calling ``ggml_backend_load_all_from_path`` twice would register dynamic backends twice, so
    this is guarded. A build whose backends are linked in registers them statically; the search
    then finds nothing new (release builds skip non-module libraries silently).

    :raises BackendLoadError: see :func:`mlplug_ggml._lib.load`.
    """
    global _BACKENDS_LOADED
    lib = _lib.load()
    if not _BACKENDS_LOADED:
        with _BACKENDS_LOCK:
            if not _BACKENDS_LOADED:
                lib.ggml_backend_load_all_from_path(str(lib.directory).encode())
                _BACKENDS_LOADED = True
    return lib


def system_memory() -> tuple[int, int]:
    """Return ``(free, total)`` bytes of host memory from /proc/meminfo (0, 0 if unreadable)."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values.get("MemAvailable", 0), values.get("MemTotal", 0)


def device_memory(dev: int) -> tuple[int, int]:
    """Return ``(free, total)`` bytes of a device now, as ggml reports them.

    For a CPU device that reports 0 total (some builds and platforms do), the host's
    MemAvailable/MemTotal from /proc/meminfo stand in.

    :param dev: a ``ggml_backend_dev_t`` (:attr:`GGMLDevice.dev`).
    """
    lib = load_backends()
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
    if total.value == 0 and lib.ggml_backend_dev_type(dev) == _lib.GGML_BACKEND_DEVICE_TYPE_CPU:
        # ggml gave nothing for host memory: fall back to the kernel's numbers.
        return system_memory()
    return free.value, total.value


def _text(raw: bytes | None) -> str:
    return raw.decode(errors="replace") if raw else ""


def _describe(lib: Lib, dev: int, index_in_reg: int) -> GGMLDevice:
    props = _lib.GGMLBackendDevProps()
    lib.ggml_backend_dev_get_props(dev, ctypes.byref(props))
    type_id = int(props.type)
    type_name = _lib.DEVICE_TYPE_NAMES.get(type_id, str(type_id))
    reg = lib.ggml_backend_dev_backend_reg(dev)
    reg_name = _text(lib.ggml_backend_reg_name(reg)) if reg else ""
    is_cpu = type_id == _lib.GGML_BACKEND_DEVICE_TYPE_CPU
    free, total = int(props.memory_free), int(props.memory_total)
    if is_cpu and total == 0:
        # ggml gave nothing for host memory: fall back to /proc/meminfo.
        free, total = system_memory()
    gpu_like = type_id in (_lib.GGML_BACKEND_DEVICE_TYPE_GPU, _lib.GGML_BACKEND_DEVICE_TYPE_IGPU)
    return GGMLDevice(
        id=str(index_in_reg),
        library=CPU_LIBRARY if is_cpu else reg_name,
        name=_text(props.name) or _text(lib.ggml_backend_dev_name(dev)),
        description=_text(props.description) or _text(lib.ggml_backend_dev_description(dev)),
        integrated=type_id == _lib.GGML_BACKEND_DEVICE_TYPE_IGPU,
        pci_id=_text(props.device_id),
        total_memory=total,
        free_memory=free,
        # Upstream ggml does not report compute capability or driver version: -1 = unknown.
        compute_major=-1 if gpu_like else 0,
        compute_minor=-1 if gpu_like else 0,
        library_path=[str(lib.directory)],
        type=type_name,
        dev=int(dev),
    )


def devices() -> list[GGMLDevice]:
    """Enumerate every registered ggml device (CPU, GPU, IGPU, ACCEL) in registry order.

    ``id`` is the device's index within its backend registry (``"0"``, ``"1"``, ... per library).
    Memory is queried now. Works without a model and creates no backend.

    :raises BackendLoadError: the library could not be loaded.
    """
    lib = load_backends()
    index_in_reg: dict[int, int] = {}
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if not dev:
            continue
        reg = lib.ggml_backend_dev_backend_reg(dev) or 0
        n = index_in_reg.get(reg, 0)
        index_in_reg[reg] = n + 1
        out.append(_describe(lib, dev, n))
    return out


def cpu_device() -> GGMLDevice:
    """Return the first CPU device (the only one the backend keeps).

    :raises BackendLoadError: the build has no CPU device.
    """
    for d in devices():
        if d.type == "CPU":
            return d
    msg = f"ggml build in {_lib.load().directory} has no CPU device"
    raise BackendLoadError(msg, backend=_lib.BACKEND)


def to_device_info(d: GGMLDevice) -> DeviceInfo:
    """Convert a ggml device record to mlplug's :class:`~mlplug.DeviceInfo`.

    The CPU is reported with library ``cpu`` and name ``CPU`` (ollama's spelling) and ggml's
    description; when ggml reports no memory for it, the host's figures stand in. GPUs keep
    their registry name as library (``CUDA``, ``Vulkan``, ...) and ggml's name and PCI id.
    """
    total, free = d.total_memory, d.free_memory
    name = d.name
    if d.type == "CPU":
        name = "CPU"
        if total == 0:
            total, free = host_memory()
    return DeviceInfo(
        id=d.id,
        library=d.library,
        name=name,
        description=d.description,
        filter_id=d.filter_id,
        integrated=d.integrated,
        pci_id=d.pci_id,
        total_memory=total,
        free_memory=free,
        compute_major=d.compute_major if d.type != "CPU" else -1,
        compute_minor=d.compute_minor if d.type != "CPU" else -1,
        driver_major=d.driver_major,
        driver_minor=d.driver_minor,
        library_path=list(d.library_path),
    )


def device_infos() -> list[DeviceInfo]:
    """Return every device of the loaded ggml build as DeviceInfo (CPU first, as ggml lists).

    :raises BackendLoadError: the library could not be loaded.
    """
    return [to_device_info(d) for d in devices() if d.type != "META"]


_TYPE_RANK: Final[dict[str, int]] = {"GPU": 0, "IGPU": 1, "ACCEL": 2, "CPU": 3}


def compute_device() -> GGMLDevice:
    """Pick the device graphs run on: ``$MLPLUG_GGML_DEVICE`` if set, else the best GPU.

    "Best" is a discrete GPU before an integrated one, then the most free memory, then
    registry order; with no GPU the CPU is used. Accelerator devices (BLAS, AMX) and remote
    devices (RPC) are never picked automatically: accelerators run a subset of ops, remote
    devices hold the layers placed there (``RPC:0=0-4``); ``MLPLUG_GGML_DEVICE=RPC0`` computes
    everything remotely.

    :raises BackendLoadError: the named device does not exist, or the build has no CPU.
    """
    devs = [d for d in devices() if d.type in _TYPE_RANK]
    wanted = os.environ.get(ENV_DEVICE, "").strip()
    if wanted:
        for d in devs:
            if wanted.lower() in (d.name.lower(), f"{d.library}{d.id}".lower()):
                return d
        names = ", ".join(d.name for d in devs) or "none"
        msg = f"{ENV_DEVICE}={wanted!r}: no such ggml device (available: {names})"
        raise BackendLoadError(msg, backend=_lib.BACKEND)
    gpus = [d for d in devs if d.type in ("GPU", "IGPU") and not d.remote]
    if gpus:
        return min(gpus, key=lambda d: (_TYPE_RANK[d.type], -d.free_memory, devs.index(d)))
    return cpu_device()
