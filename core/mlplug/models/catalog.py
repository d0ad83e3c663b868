"""The table of architectures: ``general.architecture`` name -> the Model class running it.

The core registers ``llama`` and ``gemma3``; the plugin registry adds those that installed
distributions register through their ``mlplug_register_architectures`` hook.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..errors import PluginError
from .base import Model
from .gemma3 import Gemma3
from .llama import Llama

__all__ = ["ArchitectureEntry", "architectures", "entries", "register_architecture"]


@dataclass(frozen=True)
class ArchitectureEntry:
    """One registered architecture and who provides it."""

    name: str
    model: type[Model]
    #: The distribution that registered it (``mlplug`` for the core's own).
    distribution: str = "mlplug"


#: ``general.architecture`` -> the Model class implementing it (read-only for callers).
architectures: dict[str, type[Model]] = {}
_entries: dict[str, ArchitectureEntry] = {}
_lock = threading.Lock()


def register_architecture(name: str, model: type[Model], *, distribution: str = "mlplug") -> None:
    """Make ``model`` run files whose ``general.architecture`` is ``name``.

    Registering the same class again under the same name does nothing.

    :raises PluginError: ``name`` is empty, ``model`` is not a :class:`Model` subclass, or
        another class already runs ``name``.
    """
    if not isinstance(name, str) or not name:
        msg = f"{distribution}: an architecture name must be a non-empty string, got {name!r}"
        raise PluginError(msg, plugin=distribution)
    if not (isinstance(model, type) and issubclass(model, Model)):
        msg = f"{distribution}: architecture {name!r} must be a mlplug.models.Model subclass"
        raise PluginError(msg, plugin=distribution)
    with _lock:
        have = _entries.get(name)
        if have is not None:
            if have.model is model:
                return
            msg = (
                f"{distribution}: architecture {name!r} is already provided by "
                f"{have.distribution} ({have.model.__module__}.{have.model.__qualname__})"
            )
            raise PluginError(msg, plugin=distribution)
        _entries[name] = ArchitectureEntry(name, model, distribution)
        architectures[name] = model


def entries() -> list[ArchitectureEntry]:
    """Return every registered architecture, sorted by name."""
    with _lock:
        return sorted(_entries.values(), key=lambda e: e.name)


register_architecture(Llama.architecture, Llama)
register_architecture(Gemma3.architecture, Gemma3)
