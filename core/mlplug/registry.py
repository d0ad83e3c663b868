"""Plugin discovery and backend selection: a typed facade over ``pluggy.PluginManager``.

Plugins are found through the ``mlplug`` entry-point group, lazily, and each one is loaded in
isolation: it is screened for crashes in a child process first (:mod:`mlplug._plugin_screen`),
then registered with pluggy and its ``mlplug_register_backends`` hook is called through pluggy
for that plugin alone. A plugin that crashes, fails to import, implements an unknown (misspelt)
hook, has a bad hook signature, raises in its hook or registers nonsense is reported with its
error and never affects the others; its registrations are all-or-nothing.

A backend name belongs to one plugin. Two plugins registering one name is a conflict: both are
reported, ``new_backend(backend=NAME)`` raises :class:`BackendAlreadyRegisteredError` naming
both distributions, and ``new_backend(None)`` skips the name, until the user picks one with
``MLPLUG_PLUGINS=a,b`` (load only these) or ``MLPLUG_DISABLE_PLUGINS=a,b`` (skip these).
``MLPLUG_STRICT_PLUGINS=1`` re-raises the original exception (for plugin authors).
"""

from __future__ import annotations

import os
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import importlib_metadata
import pluggy

from . import hookspecs
from .errors import (
    BackendAlreadyRegisteredError,
    BackendLoadError,
    BackendSkippedWarning,
    ModelFileError,
    PluginError,
    RemoteDeviceError,
)

if TYPE_CHECKING:
    from .backend import Backend
    from .buildinfo import BuildInfo
    from .device import DeviceInfo
    from .hookspecs import BackendFactory, BuildDescriber, DeviceEnumerator, Server
    from .params import BackendParams

__all__ = [
    "BackendEntry",
    "PluginManager",
    "conflict_hint",
    "PluginRecord",
    "manager",
    "new_backend",
    "register_backend",
]

ENTRY_POINT_GROUP: Final = "mlplug"
IN_PROCESS: Final = "<in-process>"
_HOOK: Final = "mlplug_register_backends"
_ARCH_HOOK: Final = "mlplug_register_architectures"


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _strict() -> bool:
    return os.environ.get("MLPLUG_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class BackendEntry:
    """One registered backend: its factory, priority, device enumerator and build describer."""

    name: str
    factory: BackendFactory
    priority: int = 0
    devices: DeviceEnumerator | None = None
    plugin: str = ""
    #: Describes the build of the backend's native library (None: the plugin says nothing).
    build: BuildDescriber | None = None
    distribution: str = ""
    #: Serves the backend's devices to remote clients (``mlplug serve``; None: it cannot).
    serve: Server | None = None
    version: str = ""

    @property
    def owner(self) -> str:
        """Who registered it: the distribution (else the plugin name, else ``<in-process>``)."""
        return self.distribution or self.plugin or IN_PROCESS


@dataclass
class PluginRecord:
    """One discovered plugin (an entry point).

    ``status`` is ``ok`` or ``error`` (``error`` says why, ``traceback`` has the details);
    ``backends`` lists the names it registered, including names in conflict.
    """

    name: str
    distribution: str = ""
    version: str = ""
    status: str = "ok"
    error: str = ""
    backends: list[str] = field(default_factory=list)
    #: The model architectures it registered.
    architectures: list[str] = field(default_factory=list)
    traceback: str = field(default="", repr=False)


def conflict_hint(claims: list[BackendEntry]) -> str:
    """Say who claims a name in conflict and how the user keeps one of them."""
    owners = [
        f"{c.owner} (plugin {c.plugin})" if c.distribution and c.plugin else c.owner for c in claims
    ]
    return (
        f"claimed by {' and '.join(owners)}; keep one by naming the others in "
        "MLPLUG_DISABLE_PLUGINS (or only it in MLPLUG_PLUGINS)"
    )


def _check_registration(
    name: object,
    factory: object,
    priority: object,
    devices: object,
    who: str,
    build: object = None,
    serve: object = None,
) -> None:
    """Reject malformed ``register`` arguments with a PluginError naming what was wrong."""
    problem = ""
    if not isinstance(name, str) or not name.strip():
        problem = f"the backend name must be a non-empty string, got {name!r}"
    elif not callable(factory):
        problem = f"the factory of {name!r} must be callable, got {type(factory).__name__}"
    elif isinstance(priority, bool) or not isinstance(priority, int):
        problem = f"the priority of {name!r} must be an int, got {priority!r}"
    elif devices is not None and not callable(devices):
        problem = f"the devices of {name!r} must be callable or None, got {type(devices).__name__}"
    elif build is not None and not callable(build):
        problem = f"the build of {name!r} must be callable or None, got {type(build).__name__}"
    elif serve is not None and not callable(serve):
        problem = f"the serve of {name!r} must be callable or None, got {type(serve).__name__}"
    if problem:
        msg = f"{who}: invalid backend registration: {problem}"
        raise PluginError(msg, plugin=who)


class PluginManager:
    """Discovers plugins once and keeps the backends they register."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self._pm.add_hookspecs(hookspecs)
        self._lock = threading.RLock()
        self._loaded = False
        self._backends: dict[str, BackendEntry] = {}
        self._conflicts: dict[str, list[BackendEntry]] = {}
        self._plugins: dict[str, PluginRecord] = {}

    # -- registration -------------------------------------------------------------------------
    def register_backend(
        self,
        name: str,
        factory: BackendFactory,
        *,
        priority: int = 0,
        devices: DeviceEnumerator | None = None,
        build: BuildDescriber | None = None,
        serve: Server | None = None,
    ) -> None:
        """Register ``factory`` under ``name`` in this process.

        :raises BackendAlreadyRegisteredError: if ``name`` is taken (names both owners).
        :raises PluginError: if an argument is malformed (empty name, factory not callable...).
        """
        _check_registration(name, factory, priority, devices, IN_PROCESS, build, serve)
        entry = BackendEntry(
            name=name,
            factory=factory,
            priority=priority,
            devices=devices,
            plugin=IN_PROCESS,
            build=build,
            serve=serve,
        )
        with self._lock:
            taken = self._claims(name)
            if taken:
                raise BackendAlreadyRegisteredError(name, taken[0].owner, IN_PROCESS)
            self._backends[name] = entry

    def unregister_backend(self, name: str) -> None:
        """Remove a backend registered in process (used by tests)."""
        with self._lock:
            entry = self._backends.get(name)
            if entry is not None and entry.plugin == IN_PROCESS:
                del self._backends[name]
            claims = self._conflicts.get(name)
            if claims is not None:
                rest = [c for c in claims if c.plugin != IN_PROCESS]
                if len(rest) == 1:
                    del self._conflicts[name]
                    self._backends[name] = rest[0]
                else:
                    self._conflicts[name] = rest

    def _claims(self, name: str) -> list[BackendEntry]:
        if name in self._conflicts:
            return list(self._conflicts[name])
        entry = self._backends.get(name)
        return [entry] if entry is not None else []

    def _claim(self, entry: BackendEntry) -> None:
        """Add a plugin's claim on a name; a second claimant turns the name into a conflict."""
        taken = self._claims(entry.name)
        if not taken:
            self._backends[entry.name] = entry
            return
        self._backends.pop(entry.name, None)
        self._conflicts[entry.name] = [*taken, entry]

    # -- discovery ------------------------------------------------------------------------------
    def load(self) -> None:
        """Discover and register entry-point plugins (once; later calls do nothing).

        :raises ConfigError: if ``MLPLUG_PROBE_TIMEOUT`` is invalid (it bounds the crash screen).
        """
        with self._lock:
            if self._loaded:
                return
            allow = _env_list("MLPLUG_PLUGINS")
            block = _env_list("MLPLUG_DISABLE_PLUGINS") or set()
            eps = [
                ep
                for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)
                if ep.name not in block and (allow is None or ep.name in allow)
            ]
            crashed = self._screen([ep.name for ep in eps])
            self._loaded = True
            for ep in eps:
                dist = ep.dist
                rec = PluginRecord(
                    name=ep.name,
                    distribution=dist.name if dist is not None else "",
                    version=dist.version if dist is not None else "",
                )
                if ep.name in self._plugins:
                    rec.name = f"{ep.name} ({rec.distribution or ep.value})"
                self._plugins[rec.name] = rec
                if ep.name in crashed:
                    msg = f"plugin {ep.name!r} was not loaded: {crashed[ep.name]}"
                    self._fail(rec, PluginError(msg, plugin=ep.name))
                    continue
                self._load_one(ep, rec)

    @staticmethod
    def _screen(names: list[str]) -> dict[str, str]:
        from . import _plugin_screen

        if not names or not _plugin_screen.screen_enabled():
            return {}
        return _plugin_screen.screen(names)

    def _fail(self, rec: PluginRecord, exc: BaseException) -> None:
        if _strict():
            raise exc
        rec.status = "error"
        rec.error = _describe(exc)
        rec.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def _load_one(self, ep: Any, rec: PluginRecord) -> None:
        module: object | None = None
        try:
            module = ep.load()
            entries, archs = self._call_hook(ep, module, rec)
            self._add_architectures(archs, rec)
        except (Exception, SystemExit) as exc:
            if module is not None and self._pm.is_registered(module):
                self._pm.unregister(module)
            self._fail(rec, exc)
            return
        for entry in entries:
            self._claim(entry)
            rec.backends.append(entry.name)

    @staticmethod
    def _add_architectures(archs: list[tuple[str, type[Any]]], rec: PluginRecord) -> None:
        """Add a plugin's architectures to the model table: all of them, or none on a clash."""
        if not archs:
            return
        from .models.catalog import architectures, register_architecture

        who = rec.distribution or rec.name
        for name, model in archs:
            have = architectures.get(name)
            if have is not None and have is not model:
                msg = f"{who}: architecture {name!r} is already provided by {have.__module__}"
                raise PluginError(msg, plugin=rec.name)
        for name, model in archs:
            register_architecture(name, model, distribution=who)
            rec.architectures.append(name)

    def _call_hook(
        self, ep: Any, module: object, rec: PluginRecord
    ) -> tuple[list[BackendEntry], list[tuple[str, type[Any]]]]:
        """Register ``module`` with pluggy and call its hooks alone; return what it registered."""
        where = f"plugin {ep.name!r} ({ep.value})"
        if self._pm.is_registered(module):
            msg = f"{where}: the module is already registered by another entry point"
            raise PluginError(msg, plugin=ep.name)
        try:
            self._pm.register(module, name=rec.name)
        except pluggy.PluginValidationError as exc:
            msg = f"{where}: {exc}"
            raise PluginError(msg, plugin=ep.name) from exc
        callers = self._pm.get_hookcallers(module) or []
        unknown = sorted(c.name for c in callers if not c.has_spec())
        if unknown:
            msg = (
                f"{where} implements unknown hook(s) {', '.join(unknown)}; "
                f"the hooks mlplug calls are {_HOOK} and {_ARCH_HOOK}"
            )
            raise PluginError(msg, plugin=ep.name)
        others = [p for p in self._pm.get_plugins() if p is not module]
        caller = self._pm.subset_hook_caller(_HOOK, remove_plugins=others)
        arch_caller = self._pm.subset_hook_caller(_ARCH_HOOK, remove_plugins=others)
        if not caller.get_hookimpls() and not arch_caller.get_hookimpls():
            msg = f"{where} has no @hookimpl {_HOOK} (or {_ARCH_HOOK}) hook"
            raise PluginError(msg, plugin=ep.name)
        entries: list[BackendEntry] = []
        who = rec.distribution or ep.name

        def register(
            name: str,
            factory: BackendFactory,
            *,
            priority: int = 0,
            devices: DeviceEnumerator | None = None,
            build: BuildDescriber | None = None,
            serve: Server | None = None,
        ) -> None:
            _check_registration(name, factory, priority, devices, who, build, serve)
            if any(e.name == name for e in entries):
                raise BackendAlreadyRegisteredError(name, who, who)
            entries.append(
                BackendEntry(
                    name=name,
                    factory=factory,
                    priority=priority,
                    devices=devices,
                    plugin=rec.name,
                    distribution=rec.distribution,
                    version=rec.version,
                    build=build,
                    serve=serve,
                )
            )

        if caller.get_hookimpls():
            caller(register=register)
        archs: list[tuple[str, type[Any]]] = []

        def register_architecture(name: str, model: type[Any]) -> None:
            from .models import Model

            if not isinstance(name, str) or not name:
                msg = f"{who}: an architecture name must be a non-empty string, got {name!r}"
                raise PluginError(msg, plugin=ep.name)
            if not (isinstance(model, type) and issubclass(model, Model)):
                msg = f"{who}: architecture {name!r} must be a mlplug.models.Model subclass"
                raise PluginError(msg, plugin=ep.name)
            if any(n == name for n, _ in archs):
                msg = f"{who} registers architecture {name!r} twice"
                raise PluginError(msg, plugin=ep.name)
            archs.append((name, model))

        if arch_caller.get_hookimpls():
            arch_caller(register=register_architecture)
        return entries, archs

    # -- queries --------------------------------------------------------------------------------
    def plugins(self) -> list[PluginRecord]:
        """Return every discovered plugin with its status."""
        self.load()
        with self._lock:
            return list(self._plugins.values())

    def backends(self) -> list[BackendEntry]:
        """Return every usable backend (names in conflict excluded), highest priority first."""
        self.load()
        with self._lock:
            return sorted(self._backends.values(), key=lambda b: (-b.priority, b.name))

    def conflicts(self) -> dict[str, list[BackendEntry]]:
        """Return the backend names registered by more than one plugin, with every claim."""
        self.load()
        with self._lock:
            return {name: list(claims) for name, claims in sorted(self._conflicts.items())}

    @staticmethod
    def _conflict_error(name: str, claims: list[BackendEntry]) -> BackendAlreadyRegisteredError:
        return BackendAlreadyRegisteredError(
            name, claims[0].owner, claims[1].owner, hint=conflict_hint(claims)
        )

    def get(self, name: str) -> BackendEntry:
        """Return the backend registered as ``name``.

        :raises BackendLoadError: if no backend has that name (lists those that exist, and the
            error of a plugin that failed to provide it).
        :raises BackendAlreadyRegisteredError: if several plugins register that name.
        """
        self.load()
        with self._lock:
            entry = self._backends.get(name)
            if entry is not None:
                return entry
            if name in self._conflicts:
                raise self._conflict_error(name, self._conflicts[name])
            known = ", ".join(sorted(self._backends)) or "none"
            failed = [p for p in self._plugins.values() if p.status == "error"]
        hint = "".join(f"; plugin {p.name!r} failed: {p.error}" for p in failed)
        msg = f"unsupported backend {name!r} (installed: {known}){hint}"
        raise BackendLoadError(msg, backend=name)

    def devices(self, name: str) -> list[DeviceInfo]:
        """Return the devices of backend ``name`` (empty if it has no enumerator)."""
        entry = self.get(name)
        if entry.devices is None:
            return []
        return entry.devices()

    def build_info(self, name: str) -> BuildInfo | None:
        """Return what backend ``name``'s native library was built with (None: not said).

        :raises PluginError: the plugin's describer returned something other than a BuildInfo.
        """
        from .buildinfo import BuildInfo

        entry = self.get(name)
        if entry.build is None:
            return None
        info = entry.build()
        if not isinstance(info, BuildInfo):
            msg = f"the build describer of {name!r} returned {type(info).__name__}, not BuildInfo"
            raise PluginError(msg, plugin=entry.plugin)
        return info

    def new_backend(
        self,
        model_path: str | None,
        params: BackendParams | None = None,
        *,
        backend: str | None = None,
    ) -> Backend:
        """Create a backend: ``backend``, else ``$MLPLUG_BACKEND``, else the best that loads.

        With no name, backends are tried by priority; one whose factory raises is skipped with
        a :class:`BackendSkippedWarning` naming it and why, and so is a name in conflict.

        :raises BackendLoadError: if the named backend is unknown or fails (the factory's
            exception is its ``__cause__``), or if no backend could be created (lists each).
        :raises BackendAlreadyRegisteredError: if the named backend is claimed by two plugins.
        :raises ModelFileError: if the model file is unreadable (no other backend is tried).
        """
        from .params import BackendParams

        params = params if params is not None else BackendParams()
        name = backend or os.environ.get("MLPLUG_BACKEND") or None
        if name is not None:
            return self._create(self.get(name), model_path, params)
        errors = []
        for conflict, claims in self.conflicts().items():
            reason = f"{conflict}: skipped, {conflict_hint(claims)}"
            warnings.warn(f"backend {reason}", BackendSkippedWarning, stacklevel=3)
            errors.append(reason)
        for entry in self.backends():
            try:
                return self._create(entry, model_path, params)
            except (ModelFileError, RemoteDeviceError):
                raise
            except BackendLoadError as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                reason = f"{entry.name}: {_short(cause)}"
                warnings.warn(f"skipped backend {reason}", BackendSkippedWarning, stacklevel=3)
                errors.append(reason)
        detail = "; ".join(errors) if errors else "no backend plugin is installed"
        msg = f"no backend could be created ({detail})"
        raise BackendLoadError(msg)

    @staticmethod
    def _create(entry: BackendEntry, model_path: str | None, params: BackendParams) -> Backend:
        try:
            backend = entry.factory(model_path, params)
        except BackendLoadError:
            raise
        except (ModelFileError, RemoteDeviceError):
            raise  # the file or a named remote server is at fault, not the backend
        except Exception as exc:
            msg = f"backend {entry.name!r} could not be loaded: {_describe(exc)}"
            raise BackendLoadError(msg, backend=entry.name) from exc
        from .modelfile.model import open_model  # opens the file and attaches it (if any)

        return open_model(backend, model_path)


def _short(exc: BaseException) -> str:
    """An exception as one short line: mlplug's own errors by message, others with their type."""
    from .errors import MlplugError

    if isinstance(exc, MlplugError):
        return " ".join(str(exc).split()) or type(exc).__name__
    return _describe(exc)


_MANAGER = PluginManager()


def manager() -> PluginManager:
    """Return the process-wide plugin manager."""
    return _MANAGER


def register_backend(
    name: str,
    factory: BackendFactory,
    *,
    priority: int = 0,
    devices: DeviceEnumerator | None = None,
    build: BuildDescriber | None = None,
    serve: Server | None = None,
) -> None:
    """Register a backend in process (ollama's ``ml.RegisterBackend``).

    :raises BackendAlreadyRegisteredError: if the name is taken.
    """
    _MANAGER.register_backend(
        name, factory, priority=priority, devices=devices, build=build, serve=serve
    )


def new_backend(
    model_path: str | None, params: BackendParams | None = None, *, backend: str | None = None
) -> Backend:
    """Create a backend for ``model_path`` (None: compute only).

    ``backend=None`` uses ``$MLPLUG_BACKEND``, else the installed backend with the highest
    priority that loads.

    :raises BackendLoadError: if the named backend is unknown or none can be created.
    """
    return _MANAGER.new_backend(model_path, params, backend=backend)
