"""The hooks a plugin implements (entry-point group ``mlplug``): backends and architectures.

A plugin is a module named by an entry point in the ``mlplug`` group; it holds functions
decorated with :data:`hookimpl`::

    from mlplug.hookspecs import hookimpl

    @hookimpl
    def mlplug_register_backends(register):
        register("mine", MyBackend, priority=10, devices=my_devices)

mlplug calls the hook through pluggy, for one plugin at a time. A plugin whose ``@hookimpl``
names a hook that does not exist here (a misspelt ``mlplug_register_backend``), whose hook
asks for an argument other than ``register``, which raises, or which registers a malformed
backend, is reported as an error with the reason, and whatever it registered is dropped; the
other plugins are unaffected. A backend name belongs to one plugin: a name two plugins register
is a conflict the user resolves (``MLPLUG_DISABLE_PLUGINS``), never won by load order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .buildinfo import BuildInfo
    from .device import DeviceInfo
    from .models import Model
    from .params import BackendParams

__all__ = [
    "ArchitectureRegister",
    "BackendFactory",
    "BuildDescriber",
    "DeviceEnumerator",
    "Register",
    "Server",
    "hookimpl",
    "hookspec",
]

hookspec = pluggy.HookspecMarker("mlplug")
hookimpl = pluggy.HookimplMarker("mlplug")

#: ``factory(model_path | None, params) -> Backend``.
BackendFactory = Callable[["str | None", "BackendParams"], "Backend"]
#: ``devices() -> list[DeviceInfo]``, callable without loading a model.
DeviceEnumerator = Callable[[], "list[DeviceInfo]"]
#: ``build() -> BuildInfo``: what the backend's native library was built with (no model needed).
BuildDescriber = Callable[[], "BuildInfo"]
#: ``serve(host, port, device, threads, ready)``: expose this machine's devices to remote
#: clients until the process ends (``mlplug serve``); ``device`` None serves every device,
#: ``threads`` 0 the default; ``ready(port)`` is called once listening (with the port bound,
#: when 0 was asked). Raises BackendLoadError when the build cannot serve.
Server = Callable[[str, int, "str | None", int, Callable[[int], None]], None]


class Register(Protocol):
    """The ``register`` callable handed to :func:`mlplug_register_backends`."""

    def __call__(
        self,
        name: str,
        factory: BackendFactory,
        *,
        priority: int = 0,
        devices: DeviceEnumerator | None = None,
        build: BuildDescriber | None = None,
        serve: Server | None = None,
    ) -> None:
        """Register backend ``name``; higher ``priority`` wins when no backend is named."""


@hookspec
def mlplug_register_backends(register: Register) -> None:
    """Register the backends this plugin provides.

    Called once, lazily, the first time mlplug needs the list of backends (never at
    ``import mlplug``). Keep it cheap: import heavy libraries (torch, ggml) inside the factory
    and the device enumerator, not at module level.

    :param register: call ``register(name, factory, priority=..., devices=...)`` once per
        backend. ``factory(model_path, params)`` returns a :class:`mlplug.Backend`;
        ``devices()`` returns a list of :class:`mlplug.DeviceInfo` without loading a model;
        the optional ``build()`` returns a :class:`mlplug.plugin_api.BuildInfo` saying what the
        backend's native library was built with (shown by ``mlplug backends``/``devices``).
    """


class ArchitectureRegister(Protocol):
    """The ``register`` callable handed to :func:`mlplug_register_architectures`."""

    def __call__(self, name: str, model: type[Model]) -> None:
        """Run files whose ``general.architecture`` is ``name`` with ``model``."""


@hookspec
def mlplug_register_architectures(register: ArchitectureRegister) -> None:
    """Register the model architectures this plugin provides.

    Called once, lazily, with the backends hook (a plugin may implement either or both). An
    architecture is a :class:`mlplug.models.Model` subclass run by :func:`mlplug.models.load_model`
    for files whose ``general.architecture`` is its name; a name the core or another plugin
    already provides is an error of the plugin that registers it second::

        @hookimpl
        def mlplug_register_architectures(register):
            register("mymodel", MyModel)

    :param register: call ``register(name, model_class)`` once per architecture.
    """
