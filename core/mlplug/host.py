"""What the host offers every backend plugin: its CPU as a device record, its quantisers.

Plugins that compute on (or also list) the host CPU return :func:`cpu_device_info`, so every
plugin's CPU record is identical and recognised as one physical device when devices are merged.
Plugins that quantise through :mod:`mlplug.quants` ask :func:`can_quantize` which types it can
produce.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .device import DeviceInfo
from .dtypes import TRAITS, DType
from .errors import DTypeError
from .sysinfo import cpu_description, host_memory

__all__ = ["can_quantize", "cpu_device_info"]


def cpu_device_info() -> DeviceInfo:
    """Return the host CPU (id ``"0"``, library ``cpu``) with its total and available memory."""
    total, free = host_memory()
    return DeviceInfo(
        id="0",
        library="cpu",
        name="CPU",
        description=cpu_description(),
        total_memory=total,
        free_memory=free,
        compute_major=-1,
        compute_minor=-1,
    )


@cache
def can_quantize(dtype: DType) -> bool:
    """Return whether :func:`mlplug.quants.quantize` can produce ``dtype`` (every quantised
    dtype mlplug knows today: the ``gguf`` codecs and :mod:`mlplug.kquants`)."""
    from . import quants  # imports the gguf package: only when a backend asks

    try:
        quants.quantize(np.zeros((1, TRAITS[dtype].block_size), np.float32), dtype)
    except DTypeError:
        return False
    return True
