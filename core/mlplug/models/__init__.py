"""Model architectures written on the public API, so they run on every backend.

>>> from mlplug.models import architectures
>>> sorted(architectures)
['llama']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NotSupportedError
from .base import Generation, Model
from .llama import Llama

if TYPE_CHECKING:
    from ..backend import Backend

__all__ = ["Generation", "Llama", "Model", "architectures", "load_model"]

#: ``general.architecture`` -> the Model class implementing it.
architectures: dict[str, type[Model]] = {Llama.architecture: Llama}


def load_model(backend: Backend, *, num_ctx: int | None = None) -> Model:
    """Return the model of ``backend``'s file (its weights already loaded) with a KV cache.

    :param num_ctx: positions the KV cache holds (default: the model's context length, at
        most 2048).
    :raises NotSupportedError: the file's architecture is not in :data:`architectures`; the
        message lists the supported ones.
    """
    name = backend.config().architecture()
    cls = architectures.get(name)
    if cls is None:
        supported = ", ".join(sorted(architectures))
        raise NotSupportedError(
            backend.name, "run", f"model architecture {name!r} (supported: {supported})"
        )
    return cls(backend, num_ctx=num_ctx)
