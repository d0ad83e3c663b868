"""Host facts every plugin needs: memory of the machine and a CPU description."""

from __future__ import annotations

import os
import platform

__all__ = ["cpu_description", "host_memory"]


def host_memory() -> tuple[int, int]:
    """Return ``(total, available)`` bytes of system memory (0, 0 if unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = {}
            for line in f:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        return info.get("MemTotal", 0), info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        avail = os.sysconf("SC_AVPHYS_PAGES")
        return pages * size, avail * size
    except (ValueError, OSError, AttributeError):
        return 0, 0


def cpu_description() -> str:
    """Return the CPU model name (from /proc/cpuinfo where available)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"
