"""mlplug: ML models written once against abstract Backend/Context/Tensor, run on any plugin.

>>> import mlplug as ml
>>> with ml.new_backend(None, backend="cpu_numpy") as be, be.new_context() as ctx:
...     a = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2)
...     b = ctx.from_floats([1, 0, 1, 0, 1, 0], 3, 2)
...     c = a.mulmat(ctx, b)
...     ctx.compute(c)
...     c.shape, c.floats().tolist()
((2, 2), [4.0, 10.0, 2.0, 5.0])
"""

from __future__ import annotations

from .backend import Backend
from .context import Context
from .device import (
    DeviceComparison,
    DeviceID,
    DeviceInfo,
    SystemInfo,
    by_free_memory_key,
    by_library,
    by_performance,
    flash_attention_supported,
    get_visible_devices_env,
    library_paths,
    sort_by_free_memory,
)
from .dtypes import DType
from .dump import dump
from .errors import (
    BackendAlreadyRegisteredError,
    BackendLoadError,
    DTypeError,
    ErrNoMem,
    GraphError,
    MlplugError,
    ModelFileError,
    NotSupportedError,
    OutOfRangeError,
    RemoteDeviceError,
    ShapeError,
)
from .layers import GPULayers, GPULayersList
from .memory import BackendMemory, DeviceMemory
from .params import (
    BackendCacheConfig,
    BackendParams,
    CacheConfig,
    FlashAttentionType,
    SamplingMode,
)
from .paths import lib_path
from .registry import new_backend, register_backend
from .runner import BaseRunner, FilteredRunnerDiscovery, RunnerDiscovery, get_devices_from_runner
from .tensor import ScaledDotProductAttention, Tensor

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendAlreadyRegisteredError",
    "BackendCacheConfig",
    "BackendLoadError",
    "BackendMemory",
    "BackendParams",
    "BaseRunner",
    "CacheConfig",
    "Context",
    "DType",
    "DTypeError",
    "DeviceComparison",
    "DeviceID",
    "DeviceInfo",
    "DeviceMemory",
    "ErrNoMem",
    "FilteredRunnerDiscovery",
    "FlashAttentionType",
    "GPULayers",
    "GPULayersList",
    "GraphError",
    "MlplugError",
    "ModelFileError",
    "NotSupportedError",
    "OutOfRangeError",
    "RemoteDeviceError",
    "RunnerDiscovery",
    "SamplingMode",
    "ScaledDotProductAttention",
    "ShapeError",
    "SystemInfo",
    "Tensor",
    "__version__",
    "by_free_memory_key",
    "by_library",
    "by_performance",
    "dump",
    "flash_attention_supported",
    "get_devices_from_runner",
    "get_visible_devices_env",
    "lib_path",
    "library_paths",
    "new_backend",
    "register_backend",
    "sort_by_free_memory",
]
