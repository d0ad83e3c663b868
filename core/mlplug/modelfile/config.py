"""Config: typed, architecture-prefixed access to GGUF metadata (ollama's ``fs.Config``)."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import numpy as np
from gguf import GGUFValueType, LlamaFileType

from .reader import KV, MetadataValue

__all__ = ["Config"]

_log = logging.getLogger("mlplug.modelfile")

_UNPREFIXED: Final = ("tokenizer.", "general.")
_MISSING: Final = object()


def _file_type_names() -> dict[int, str]:
    names = {
        int(t): t.name.split("_", 1)[1]
        for t in LlamaFileType
        if t.name.startswith(("ALL_", "MOSTLY_"))
    }
    names[4] = "MXFP4"  # ollama reuses the retired Q4_1_SOME_F16 number for MXFP4 files
    return names


_FILE_TYPES: Final = _file_type_names()


class Config:
    """Read model metadata with ollama's lookup rules.

    Keys not starting with ``tokenizer.`` or ``general.`` are prefixed with the architecture
    (``block_count`` reads ``llama.block_count``). Each getter succeeds only when the stored value
    has exactly its GGUF type (``uint`` reads uint32 only, ``float`` float32 only, ``ints`` int32
    arrays only, ...); a missing key or another type gives the default.

    >>> cfg = Config(GGUFFile("model.gguf").metadata)  # doctest: +SKIP
    >>> cfg.architecture(), cfg.block_count(), cfg.uint("general.alignment", 32)  # doctest: +SKIP
    ('llama', 2, 32)

    :param metadata: typed metadata, e.g. :attr:`GGUFFile.metadata`.
    """

    def __init__(self, metadata: Mapping[str, KV]) -> None:
        self._kv = metadata

    def key(self, key: str) -> str:
        """Return the stored key the getters read for ``key`` (``block_count`` ->
        ``llama.block_count``; ``general.`` and ``tokenizer.`` keys are not prefixed)."""
        if key.startswith(_UNPREFIXED):
            return key
        return f"{self.architecture()}.{key}"

    def _scalar(self, key: str, vtype: GGUFValueType) -> object:
        kv = self._kv.get(self.key(key))
        if kv is None or kv.type is not vtype:
            _log.debug("key with type not found: key=%s type=%s", key, vtype.name.lower())
            return _MISSING
        return kv.value

    def _array(self, key: str, etype: GGUFValueType) -> list[object] | None:
        kv = self._kv.get(self.key(key))
        if kv is None or kv.type is not GGUFValueType.ARRAY or kv.elem_type is not etype:
            _log.debug("key with type not found: key=%s type=[]%s", key, etype.name.lower())
            return None
        value = kv.value
        if isinstance(value, np.ndarray):
            return list(value.tolist())
        if isinstance(value, tuple):
            return list(value)
        return None

    def architecture(self) -> str:
        """Return ``general.architecture``, or ``"unknown"``."""
        kv = self._kv.get("general.architecture")
        if kv is not None and kv.type is GGUFValueType.STRING and isinstance(kv.value, str):
            return kv.value
        return "unknown"

    def string(self, key: str, default: str = "") -> str:
        """Return a string value, or ``default``."""
        v = self._scalar(key, GGUFValueType.STRING)
        return v if isinstance(v, str) else default

    def uint(self, key: str, default: int = 0) -> int:
        """Return a uint32 value (any other integer type gives ``default``)."""
        v = self._scalar(key, GGUFValueType.UINT32)
        return v if isinstance(v, int) and not isinstance(v, builtins.bool) else default

    def float(self, key: str, default: builtins.float = 0.0) -> builtins.float:
        """Return a float32 value (float64 gives ``default``); the default is rounded to float32."""
        v = self._scalar(key, GGUFValueType.FLOAT32)
        if isinstance(v, builtins.float):
            return v
        return builtins.float(np.float32(default))

    def bool(self, key: str, default: builtins.bool = False) -> builtins.bool:
        """Return a bool value, or ``default``."""
        v = self._scalar(key, GGUFValueType.BOOL)
        return v if isinstance(v, builtins.bool) else default

    def strings(self, key: str, default: Sequence[str] | None = None) -> list[str] | None:
        """Return a string array as a new list, or a copy of ``default`` (``None``)."""
        v = self._array(key, GGUFValueType.STRING)
        if v is None:
            return None if default is None else list(default)
        return [str(x) for x in v]

    def ints(self, key: str, default: Sequence[int] | None = None) -> list[int] | None:
        """Return an int32 array as a new list, or a copy of ``default`` (``None``)."""
        v = self._array(key, GGUFValueType.INT32)
        if v is None:
            return None if default is None else list(default)
        return [x for x in v if isinstance(x, int)]

    def floats(
        self, key: str, default: Sequence[builtins.float] | None = None
    ) -> list[builtins.float] | None:
        """Return a float32 array as a new list, or a copy of ``default`` (``None``)."""
        v = self._array(key, GGUFValueType.FLOAT32)
        if v is None:
            return None if default is None else list(default)
        return [x for x in v if isinstance(x, builtins.float)]

    def bools(
        self, key: str, default: Sequence[builtins.bool] | None = None
    ) -> list[builtins.bool] | None:
        """Return a bool array as a new list, or a copy of ``default`` (``None``)."""
        v = self._array(key, GGUFValueType.BOOL)
        if v is None:
            return None if default is None else list(default)
        return [x for x in v if isinstance(x, builtins.bool)]

    def value(self, key: str) -> MetadataValue | None:
        """Return the raw value of ``key`` (no prefixing), or ``None``; arrays stay as decoded."""
        kv = self._kv.get(key)
        return None if kv is None else kv.value

    def kv(self, key: str) -> KV | None:
        """Return the typed record of ``key`` (no prefixing), or ``None``."""
        return self._kv.get(key)

    def keys(self) -> list[str]:
        """Return every raw key (``general.parameter_count`` included)."""
        return list(self._kv)

    def len(self) -> int:
        """Return the number of keys."""
        return len(self._kv)

    def __len__(self) -> int:
        """Return the number of keys."""
        return len(self._kv)

    def __contains__(self, key: object) -> builtins.bool:
        """Whether the raw key exists (no prefixing)."""
        return key in self._kv

    def __iter__(self) -> Iterator[str]:
        """Iterate over the raw keys."""
        return iter(self._kv)

    def block_count(self) -> int:
        """Return ``uint("block_count")``: the number of repeating layers."""
        return self.uint("block_count")

    def file_type(self) -> str:
        """Return the name of ``general.file_type`` (``"Q4_K_M"``), ``"unknown"`` if absent or 0."""
        t = self.uint("general.file_type")
        return _FILE_TYPES.get(t, "unknown") if t > 0 else "unknown"
