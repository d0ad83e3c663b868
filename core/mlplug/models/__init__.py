"""Model architectures written on the public API, so they run on every backend.

>>> from mlplug.models import architectures
>>> sorted(architectures)[:2]
['gemma3', 'llama']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dtypes import DType
from ..errors import NotSupportedError
from .base import Generation, Model
from .catalog import ArchitectureEntry, architectures, register_architecture
from .gemma3 import Gemma3
from .llama import Llama

if TYPE_CHECKING:
    from ..backend import Backend

__all__ = [
    "ArchitectureEntry",
    "Gemma3",
    "Generation",
    "Llama",
    "Model",
    "architectures",
    "load_model",
    "register_architecture",
]


def load_model(
    backend: Backend, *, num_ctx: int | None = None, kv_dtype: DType | str = DType.F16
) -> Model:
    """Return the model of ``backend``'s file (its weights already loaded) with a KV cache.

    :param num_ctx: positions the KV cache holds (default: the model's context length, at
        most 2048).
    :param kv_dtype: the KV cache's dtype, ``"f16"`` (default) or ``"f32"``.
    :raises NotSupportedError: the file's architecture is not in :data:`architectures`; the
        message lists the supported ones.
    :raises ModelFileError: the hyper-parameters contradict the tensors (naming the key or
        tensor).
    """
    name = backend.config().architecture()
    cls = architectures.get(name)
    if cls is None:
        supported = ", ".join(sorted(architectures))
        raise NotSupportedError(
            backend.name, "run", f"model architecture {name!r} (supported: {supported})"
        )
    return cls(backend, num_ctx=num_ctx, kv_dtype=kv_dtype)
