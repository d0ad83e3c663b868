"""Backend parameters and small enums: BackendParams, CacheConfig, FlashAttentionType, ..."""

from __future__ import annotations

import enum
import os
from typing import Final, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator

from .dtypes import DType
from .endpoints import parse_endpoints
from .errors import ConfigError
from .layers import GPULayersList

__all__ = [
    "BackendCacheConfig",
    "BackendParams",
    "CacheConfig",
    "DEQUANTIZE_ENV",
    "DequantizeMode",
    "FlashAttentionType",
    "SamplingMode",
    "dequantize_mode",
    "flash_attention_type_string",
]

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_FLASH_ATTENTION_NAMES = {-1: "Auto", 0: "Disabled", 1: "Enabled"}


def flash_attention_type_string(value: int) -> str:
    """Return the reference's text for a flash-attention setting: ``Auto``, ``Disabled``, ...

    :param value: any integer.
    :returns: ``Auto`` (-1), ``Disabled`` (0), ``Enabled`` (1), else ``unknown``.
    """
    return _FLASH_ATTENTION_NAMES.get(value, "unknown")


class FlashAttentionType(enum.IntEnum):
    """Whether to use flash attention; values match llama.cpp.

    Any other 32-bit integer is accepted as an unnamed value that prints as ``unknown``
    (``FlashAttentionType(7)``), as the reference's int32 type allows.
    """

    AUTO = -1
    DISABLED = 0
    ENABLED = 1

    @classmethod
    def _missing_(cls, value: object) -> FlashAttentionType | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        if not _INT32_MIN <= value <= _INT32_MAX:
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value}"
        member._value_ = value
        return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]

    def string(self) -> str:
        """Return ``Auto``, ``Disabled``, ``Enabled`` or ``unknown`` (Go's ``String``)."""
        return flash_attention_type_string(int(self))

    def log_value(self) -> str:
        """Return the text logs show (the same as :meth:`string`)."""
        return self.string()

    def __str__(self) -> str:
        """Return :meth:`string`."""
        return self.string()

    def __format__(self, spec: str) -> str:
        """Format as :meth:`string` with an empty spec, else as the integer."""
        return format(self.string(), spec) if not spec else format(int(self), spec)


class DequantizeMode(str, enum.Enum):
    """Whether a backend keeps a dequantised copy of block-encoded weights (made once at load).

    ``off`` (the default): products decode a tile of a weight's rows at a time, so a quantised
    model takes the memory of its file. ``f32``: backends that support it (cpu_numpy, torch on
    the CPU) also hold every Q*/F16/BF16 weight as float32, made once after loading and counted
    in :meth:`~mlplug.Backend.backend_memory`: faster products for up to 8x the weights' memory.
    The values are those of the tiled products (the same dequantisation), so the outputs agree.
    """

    OFF = "off"
    F32 = "f32"


#: Environment variable giving :attr:`BackendParams.dequantize` when that is None.
DEQUANTIZE_ENV: Final = "MLPLUG_DEQUANTIZE"


class SamplingMode(enum.IntEnum):
    """Interpolation used by ``interpolate``."""

    NEAREST = 0
    BILINEAR = 1


class CacheConfig(BaseModel):
    """What a backend needs from the KV cache: padding, V layout and mask dtype."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The cache history length (and capacity) is rounded up to a multiple of this.
    cache_padding: NonNegativeInt = 0
    #: V is stored permuted (axes 1, 2, 0, 3) and returned that way.
    permuted_v: bool = False
    #: Dtype of the attention mask; ``DType.OTHER`` (unset) means F32.
    mask_dtype: DType = DType.OTHER


@runtime_checkable
class BackendCacheConfig(Protocol):
    """Optional backend capability: the cache layout it wants."""

    def cache_config(self) -> CacheConfig:
        """Return the cache layout this backend wants."""
        ...


class BackendParams(BaseModel):
    """Parameters for creating a backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``False`` is a dry run for memory sizing: allocations are measured, none is made, and the
    #: backend cannot ``load``. A compute-only backend (no model) ignores it.
    alloc_memory: bool = False
    #: CPU thread count, passed unchanged to the CPU device (0: the backend's default).
    num_threads: NonNegativeInt = 0
    #: Which layer indices go to which GPU; unlisted layers stay on the CPU.
    gpu_layers: GPULayersList = Field(default_factory=GPULayersList)
    #: Flash attention setting.
    flash_attention: FlashAttentionType = FlashAttentionType.DISABLED
    #: Dequantised weight copies (:class:`DequantizeMode`); None: ``$MLPLUG_DEQUANTIZE``, else
    #: off (see :func:`dequantize_mode`).
    dequantize: DequantizeMode | None = None
    #: Remote-device servers (``host:port``) whose devices the backend adds, in order; a
    #: comma-separated string is accepted. Empty: ``$MLPLUG_RPC_SERVERS`` (see
    #: :mod:`mlplug.endpoints`). Backends without remote devices ignore it.
    rpc_servers: tuple[str, ...] = ()

    @field_validator("rpc_servers", mode="before")
    @classmethod
    def _check_rpc_servers(cls, value: object) -> object:
        """Split a comma-separated string; normalise every entry to ``host:port``.

        :raises RemoteDeviceError: an entry is malformed (pydantic passes it through).
        """
        if isinstance(value, str):
            value = (value,)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(str(e) for e in parse_endpoints(",".join(value)))
        return value


def dequantize_mode(params: BackendParams) -> DequantizeMode:
    """Return the effective :class:`DequantizeMode`: the parameter, else ``$MLPLUG_DEQUANTIZE``.

    :raises ConfigError: ``MLPLUG_DEQUANTIZE`` is set to something other than ``off``/``f32``.
    """
    if params.dequantize is not None:
        return params.dequantize
    value = os.environ.get(DEQUANTIZE_ENV, "").strip()
    if not value:
        return DequantizeMode.OFF
    try:
        return DequantizeMode(value.lower())
    except ValueError:
        raise ConfigError(DEQUANTIZE_ENV, value, "off or f32") from None
