"""Devices torch can use (the host CPU, CUDA/ROCm GPUs, Apple MPS) and the backend's choice.

The CPU record is :func:`mlplug.host.cpu_device_info`, as in the other plugins, so every plugin's
host CPU is recognised as one physical device. GPUs carry their PCI address where torch
reports it, for the same reason.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any

from mlplug.plugin_api import BackendLoadError, DeviceInfo, cpu_device_info, host_memory

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICE_ENV", "devices", "select_device"]

_log = logging.getLogger(__name__)

#: Environment variable naming the device the backend computes on (``cpu``, ``cuda:1``, ``mps``).
DEVICE_ENV = "MLPLUG_TORCH_DEVICE"


def _version_pair(text: str | None) -> tuple[int, int]:
    """Parse ``"12.8"`` (or ``"6.2.41133-..."``) into ``(12, 8)``; ``(0, 0)`` if unknown."""
    m = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _driver_version(hip: bool) -> tuple[int, int]:
    """Return the GPU driver's CUDA version where NVML says it, else torch's runtime version."""
    import torch

    if not hip:
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            v = int(pynvml.nvmlSystemGetCudaDriverVersion())
            return v // 1000, (v % 1000) // 10
        except Exception:  # NVML is optional: fall back to the runtime version
            pass
        return _version_pair(torch.version.cuda)
    return _version_pair(torch.version.hip)


def _pci_id(props: Any) -> str:
    bus = getattr(props, "pci_bus_id", None)
    dev = getattr(props, "pci_device_id", None)
    if bus is None or dev is None:
        return ""
    domain = getattr(props, "pci_domain_id", 0) or 0
    return f"{int(domain):04x}:{int(bus):02x}:{int(dev):02x}.0"


def _rocm_arch(props: Any) -> tuple[int, int]:
    """Return ``gfx90a`` as ``(0x9, 0x0a)`` (the form DeviceInfo.compute prints back)."""
    m = re.match(r"gfx([0-9a-fA-F]+)", str(getattr(props, "gcnArchName", "")))
    if not m or len(m.group(1)) < 3:
        return int(getattr(props, "major", 0)), int(getattr(props, "minor", 0))
    digits = m.group(1)
    return int(digits[:-2], 16), int(digits[-2:], 16)


def _gpu(i: int, hip: bool, driver: tuple[int, int]) -> DeviceInfo:
    import torch

    props = torch.cuda.get_device_properties(i)
    free, total = torch.cuda.mem_get_info(i)
    uuid = getattr(props, "uuid", None)
    library = "ROCm" if hip else "CUDA"
    major, minor = _rocm_arch(props) if hip else (int(props.major), int(props.minor))
    return DeviceInfo(
        id=f"GPU-{uuid}" if uuid and not hip else str(i),
        library=library,
        name=f"{library}{i}",
        description=str(props.name),
        pci_id=_pci_id(props),
        integrated=bool(getattr(props, "is_integrated", False)),
        total_memory=int(total),
        free_memory=int(free),
        compute_major=major,
        compute_minor=minor,
        driver_major=driver[0],
        driver_minor=driver[1],
    )


def _mps() -> DeviceInfo:
    import platform

    import torch

    total = int(getattr(torch.mps, "recommended_max_memory", lambda: host_memory()[0])())
    used = int(getattr(torch.mps, "driver_allocated_memory", lambda: 0)())
    return DeviceInfo(
        id="0",
        library="Metal",
        name="Metal",
        description=platform.processor() or "Apple GPU",
        integrated=True,
        total_memory=total,
        free_memory=max(0, total - used),
    )


def devices() -> list[DeviceInfo]:
    """Return the host CPU, then every CUDA/ROCm GPU, then the MPS device where present.

    Loads no model; querying a GPU's free memory initialises torch's CUDA runtime. A GPU
    that cannot be queried is logged and left out.
    """
    import torch

    out = [cpu_device_info()]
    if torch.cuda.is_available():
        hip = torch.version.hip is not None
        driver = _driver_version(hip)
        for i in range(torch.cuda.device_count()):
            try:
                out.append(_gpu(i, hip, driver))
            except Exception as exc:  # one broken GPU must not hide the others
                _log.warning("torch: cannot query GPU %d: %s", i, exc)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append(_mps())
    return out


def select_device(spec: str | None = None) -> torch.device:
    """Return the device the backend computes on.

    ``spec`` (else the ``MLPLUG_TORCH_DEVICE`` environment variable) names it as torch does
    (``cpu``, ``cuda``, ``cuda:1``, ``mps``); by default the current CUDA (or ROCm) GPU when
    one is available, else the CPU. MPS is used only when asked for.

    :raises BackendLoadError: if the named device does not exist or is not available.
    """
    import torch

    text = spec if spec is not None else os.environ.get(DEVICE_ENV, "")
    text = text.strip()
    if not text:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        msg = f"torch: invalid device {text!r} ({DEVICE_ENV}): {exc}"
        raise BackendLoadError(msg, backend="torch") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            msg = f"torch: device {text!r} asked for, but torch sees no CUDA/ROCm GPU"
            raise BackendLoadError(msg, backend="torch")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            msg = f"torch: no GPU {index}: torch sees {torch.cuda.device_count()}"
            raise BackendLoadError(msg, backend="torch")
        return torch.device("cuda", index)
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            msg = f"torch: device {text!r} asked for, but MPS is not available"
            raise BackendLoadError(msg, backend="torch")
        return torch.device("mps", 0)
    if dev.type != "cpu":
        msg = f"torch: unsupported device type {dev.type!r} (cpu, cuda or mps)"
        raise BackendLoadError(msg, backend="torch")
    return torch.device("cpu")
