"""Device records (DeviceID, DeviceInfo, SystemInfo) and the helpers that sort and group them."""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Callable, Hashable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator

from .paths import lib_path

__all__ = [
    "DeviceComparison",
    "DeviceID",
    "DeviceInfo",
    "SystemInfo",
    "by_free_memory_key",
    "by_library",
    "by_performance",
    "flash_attention_supported",
    "get_visible_devices_env",
    "library_paths",
    "physical_device_key",
    "sort_by_free_memory",
]

_log = logging.getLogger(__name__)

_MIB: Final = 1024 * 1024
_RECORD: Final = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

_K = TypeVar("_K", bound=Hashable)
_R = TypeVar("_R", bound="_GoJSON")


def _go_field(default: Any, key: str) -> Any:
    """Return a field whose JSON key (in and out) is the Go name ``key``."""
    return Field(default, validation_alias=key, serialization_alias=key)


class DeviceComparison(enum.IntEnum):
    """How two DeviceInfo records relate (the result of :meth:`DeviceInfo.compare`)."""

    UNIQUE_DEVICE = 0
    SAME_BACKEND_DEVICE = 1
    DUPLICATE_DEVICE = 2


class _GoJSON(BaseModel):
    """Go-style JSON in and out: omitempty keys, case-insensitive keys, unknown keys ignored."""

    model_config = _RECORD

    #: Go keys left out of :meth:`to_json_dict` when their value is the zero value.
    _omitempty: ClassVar[frozenset[str]] = frozenset()

    def to_json_dict(self) -> dict[str, Any]:
        """Return the record as Go's ``encoding/json`` writes it (Go keys, ``omitempty`` honoured).

        :returns: a JSON-ready dict.
        """
        out = self.model_dump(mode="json", by_alias=True)
        return {k: v for k, v in out.items() if v or k not in self._omitempty}

    @classmethod
    def from_json_dict(cls: type[_R], data: Mapping[str, Any]) -> _R:
        """Decode a JSON object the way Go does: exact or case-insensitive keys, others ignored.

        A ``null`` value leaves the field at its default.

        :param data: the decoded JSON object.
        :returns: the record.
        :raises pydantic.ValidationError: if a value has the wrong type or range.
        """
        keys = {
            (field.serialization_alias or name).casefold(): field.serialization_alias or name
            for name, field in cls.model_fields.items()
        }
        picked: dict[str, Any] = {}
        for key, value in data.items():
            go_key = keys.get(key.casefold())
            if go_key is not None and value is not None:
                picked[go_key] = value
        return cls.model_validate(picked)


class DeviceID(_GoJSON):
    """Identify a device: ``id`` is unique only within one ``library`` (``CUDA``, ``ROCm``, ...)."""

    _omitempty = frozenset({"backend"})

    id: str = ""
    library: str = _go_field("", "backend")

    @property
    def device_id(self) -> DeviceID:
        """The plain DeviceID part of this record (Go's embedded ``DeviceID``)."""
        return DeviceID(id=self.id, library=self.library)


class DeviceInfo(DeviceID):
    """Describe one device as a backend library sees it (identity, memory, versions, paths)."""

    _omitempty = frozenset(
        {
            "backend",
            "filter_id",
            "integration",
            "pci_id",
            "free_memory",
            "driver_major",
            "driver_minor",
        }
    )

    name: str = ""
    description: str = ""
    filter_id: str = ""
    integrated: bool = _go_field(False, "integration")
    pci_id: str = ""
    total_memory: NonNegativeInt = 0
    free_memory: NonNegativeInt = 0
    compute_major: int = _go_field(0, "ComputeMajor")
    compute_minor: int = _go_field(0, "ComputeMinor")
    driver_major: int = 0
    driver_minor: int = 0
    library_path: list[str] = Field(
        default_factory=list, validation_alias="LibraryPath", serialization_alias="LibraryPath"
    )

    @field_validator("library_path", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        return [] if value is None else value

    def compute(self) -> str:
        """Return the compute capability: ``gfx90a`` style for ROCm, ``major.minor`` otherwise."""
        if self.library.casefold() == "rocm":
            return f"gfx{self.compute_major:x}{self.compute_minor:02x}"
        return f"{self.compute_major}.{self.compute_minor}"

    def driver(self) -> str:
        """Return the driver version as ``major.minor``."""
        return f"{self.driver_major}.{self.driver_minor}"

    def minimum_memory(self) -> int:
        """Return the bytes reserved as overhead on this device (512 MiB on Metal, else 457 MiB)."""
        return 512 * _MIB if self.library == "Metal" else 457 * _MIB

    def needs_init_validation(self) -> bool:
        """Return whether discovery must re-probe this device with deep init (CUDA and ROCm)."""
        return self.library in ("ROCm", "CUDA")

    def add_init_validation(self, env: MutableMapping[str, str]) -> None:
        """Set ``GGML_CUDA_INIT=1`` in ``env`` to force deep device initialisation.

        :param env: the environment of the discovery runner; updated in place.
        :raises TypeError: if ``env`` is not a mutable mapping.
        """
        if not isinstance(env, MutableMapping):
            msg = f"add_init_validation needs a dict, got {type(env).__name__}"
            raise TypeError(msg)
        env["GGML_CUDA_INIT"] = "1"

    def preferred_library(self, other: DeviceInfo) -> bool:
        """Return whether this device's library wins over a duplicate's (CUDA and ROCm do).

        :param other: the duplicate; ignored.
        """
        return self.library in ("CUDA", "ROCm")

    def compare(self, other: DeviceInfo) -> DeviceComparison:
        """Return whether ``other`` is this physical device, through this or another library.

        :param other: the device to compare with.
        """
        if self.pci_id != other.pci_id:
            return DeviceComparison.UNIQUE_DEVICE
        if self.pci_id == "" and self.device_id != other.device_id:
            return DeviceComparison.UNIQUE_DEVICE
        if self.library == other.library:
            return DeviceComparison.SAME_BACKEND_DEVICE
        return DeviceComparison.DUPLICATE_DEVICE

    def is_better(self, other: DeviceInfo) -> bool:
        """Return whether ``other``'s library build is newer (``cuda_v13`` over ``cuda_v12``).

        The suffixes after the first ``_`` of the last library paths compare as plain strings.

        :param other: a device of the same backend.
        :raises IndexError: if either device has an empty ``library_path``.
        """
        if not self.library_path or not other.library_path:
            msg = "is_better needs both devices to have a library_path"
            raise IndexError(msg)
        mine, theirs = self.library_path[-1], other.library_path[-1]
        if mine == theirs:
            return False
        my_prefix, sep1, my_suffix = mine.partition("_")
        their_prefix, sep2, their_suffix = theirs.partition("_")
        if not sep1 or not sep2:
            return False
        if my_prefix != their_prefix:
            _log.debug("unexpected libraries a=%s b=%s", mine, theirs)
            return False
        return their_suffix > my_suffix


class SystemInfo(_GoJSON):
    """Describe the host: thread count and system memory (all zero when unknown)."""

    _omitempty = frozenset({"threads", "total_memory", "free_memory", "free_swap"})

    thread_count: NonNegativeInt = _go_field(0, "threads")
    total_memory: NonNegativeInt = 0
    free_memory: NonNegativeInt = 0
    free_swap: NonNegativeInt = 0


def by_free_memory_key(device: DeviceInfo) -> tuple[bool, int]:
    """Return the ByFreeMemory sort key: integrated devices first, then less free memory first.

    :param device: the device.
    """
    return (not device.integrated, device.free_memory)


def sort_by_free_memory(devices: Iterable[DeviceInfo], reverse: bool = False) -> list[DeviceInfo]:
    """Return ``devices`` sorted by :func:`by_free_memory_key`.

    :param devices: the devices.
    :param reverse: ``True`` gives the scheduling order: the discrete GPU with most free memory
        first.
    """
    return sorted(devices, key=by_free_memory_key, reverse=reverse)


def _group(
    devices: Iterable[DeviceInfo], key: Callable[[DeviceInfo], _K]
) -> list[list[DeviceInfo]]:
    groups: dict[_K, list[DeviceInfo]] = {}
    for device in devices:
        groups.setdefault(key(device), []).append(device)
    return list(groups.values())


def by_performance(devices: Iterable[DeviceInfo]) -> list[list[DeviceInfo]]:
    """Group devices into discrete and integrated ones, groups in order of first appearance.

    :param devices: the devices; their order is kept inside each group.
    """
    return _group(devices, lambda d: d.integrated)


def by_library(devices: Iterable[DeviceInfo]) -> list[list[DeviceInfo]]:
    """Group devices by their exact ``library``, groups in order of first appearance.

    :param devices: the devices; their order is kept inside each group.
    """
    return _group(devices, lambda d: d.library)


def library_paths(devices: Iterable[DeviceInfo], base: Sequence[str] | None = None) -> list[str]:
    """Return the library directories a runner for ``devices`` needs, without repeats.

    :param devices: the devices whose ``library_path`` entries are appended in order.
    :param base: the leading entries; default :func:`mlplug.paths.lib_path` (the reference's
        ``LibOllamaPath`` role).
    """
    result: list[str] = []
    for path in lib_path() if base is None else base:
        if path not in result:
            result.append(path)
    for device in devices:
        for path in device.library_path:
            if path not in result:
                result.append(path)
    return result


def _supports_flash_attention(d: DeviceInfo) -> bool:
    if d.library in ("cpu", "Metal", "ROCm", "Vulkan") or d.name == "Metal":
        return True
    # ollama v0.17.5 tests the *driver* major version here, not the compute capability.
    return (
        d.library == "CUDA"
        and d.driver_major >= 7
        and not (d.compute_major == 7 and d.compute_minor == 2)
    )


def flash_attention_supported(devices: Iterable[DeviceInfo]) -> bool:
    """Return whether every device can run flash attention (``True`` for no devices).

    :param devices: the devices.
    """
    return all(_supports_flash_attention(d) for d in devices)


def get_visible_devices_env(
    devices: Sequence[DeviceInfo] | None, must_filter: bool, os_name: str | None = None
) -> dict[str, str] | None:
    """Return the environment variables that make a runner see only ``devices``.

    ROCm devices set ``ROCR_VISIBLE_DEVICES`` on Linux and ``HIP_VISIBLE_DEVICES`` elsewhere;
    CUDA devices set ``CUDA_VISIBLE_DEVICES`` only when ``must_filter``; other libraries set
    nothing. Values are ``filter_id`` (or ``id``) joined with commas in device order.

    :param devices: the devices to expose.
    :param must_filter: whether CUDA devices must be filtered too.
    :param os_name: ``linux``, ``windows``, ``darwin``...; default the running platform.
    :returns: ``None`` for no devices, else the variables (possibly an empty dict).
    """
    if not devices:
        return None
    is_linux = (sys.platform if os_name is None else os_name).startswith("linux")
    env: dict[str, str] = {}
    for d in devices:
        if d.library == "ROCm":
            var = "ROCR_VISIBLE_DEVICES" if is_linux else "HIP_VISIBLE_DEVICES"
        elif d.library == "CUDA" and must_filter:
            var = "CUDA_VISIBLE_DEVICES"
        else:
            continue
        value = d.filter_id or d.id
        env[var] = f"{env[var]},{value}" if var in env else value
    return env


def _normal_pci_id(pci_id: str) -> str:
    domain_bus_dev, _, function = pci_id.rpartition(".")
    parts = domain_bus_dev.split(":")
    try:
        if len(parts) == 3:
            domain, bus, dev = (int(p, 16) for p in parts)
        elif len(parts) == 2:
            domain, bus, dev = 0, int(parts[0], 16), int(parts[1], 16)
        else:
            return pci_id.casefold()
        return f"{domain:04x}:{bus:02x}:{dev:02x}.{int(function, 16):x}"
    except ValueError:
        return pci_id.casefold()


def physical_device_key(device: DeviceInfo) -> str:
    """Return a key that is equal for records of one physical device seen by several plugins.

    - a CPU (library ``cpu`` in any case, or no library and name ``CPU``): ``cpu:host``, since
      the host CPU every plugin reports is one device;
    - a device with a PCI id: ``pci:`` + the id normalised to ``dddd:bb:dd.f`` (lower-case hex),
      so ``00000000:01:00.0`` and ``0000:01:00.0`` match;
    - otherwise, with a description: ``desc:<description>:<total_memory>`` (best effort: two
      identical cards without PCI ids share this key);
    - otherwise: ``dev:<library>:<id>``.

    :param device: the device.
    """
    lib = device.library.casefold()
    if lib == "cpu" or (lib == "" and device.name.casefold() == "cpu"):
        return "cpu:host"
    if device.pci_id:
        return "pci:" + _normal_pci_id(device.pci_id)
    if device.description:
        return f"desc:{device.description}:{device.total_memory}"
    return f"dev:{device.library}:{device.id}"
