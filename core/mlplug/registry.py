"""Plugin discovery and backend selection: a typed facade over ``pluggy.PluginManager``.

Plugins are found through the ``mlplug`` entry-point group, lazily, and each one is loaded in
isolation: a plugin that fails to import, to register or to enumerate its devices is reported
with its error and never breaks the others. ``MLPLUG_PLUGINS=a,b`` loads only the named
plugins, ``MLPLUG_DISABLE_PLUGINS=a,b`` skips them, and ``MLPLUG_STRICT_PLUGINS=1`` re-raises
the original exception (for plugin authors).
"""

from __future__ import annotations

import os
import threading
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import importlib_metadata
import pluggy

from . import hookspecs
from .errors import BackendAlreadyRegisteredError, BackendLoadError

if TYPE_CHECKING:
    from .backend import Backend
    from .device import DeviceInfo
    from .hookspecs import BackendFactory, DeviceEnumerator
    from .params import BackendParams

__all__ = [
    "BackendEntry",
    "PluginManager",
    "PluginRecord",
    "manager",
    "new_backend",
    "register_backend",
]

ENTRY_POINT_GROUP = "mlplug"


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _strict() -> bool:
    return os.environ.get("MLPLUG_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


@dataclass
class BackendEntry:
    """One registered backend: its factory, priority and device enumerator."""

    name: str
    factory: BackendFactory
    priority: int = 0
    devices: DeviceEnumerator | None = None
    plugin: str = ""
    distribution: str = ""
    version: str = ""


@dataclass
class PluginRecord:
    """One discovered plugin (an entry point, or ``<in-process>`` registrations)."""

    name: str
    distribution: str = ""
    version: str = ""
    status: str = "ok"
    error: str = ""
    backends: list[str] = field(default_factory=list)
    traceback: str = field(default="", repr=False)


class PluginManager:
    """Discovers plugins once and keeps the backends they register."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager("mlplug")
        self._pm.add_hookspecs(hookspecs)
        self._lock = threading.RLock()
        self._loaded = False
        self._backends: dict[str, BackendEntry] = {}
        self._plugins: dict[str, PluginRecord] = {}

    # -- registration -------------------------------------------------------------------------
    def register_backend(
        self,
        name: str,
        factory: BackendFactory,
        *,
        priority: int = 0,
        devices: DeviceEnumerator | None = None,
        _plugin: PluginRecord | None = None,
    ) -> None:
        """Register ``factory`` under ``name``.

        :raises BackendAlreadyRegisteredError: if ``name`` is taken (names both distributions).
        """
        with self._lock:
            where = _plugin.distribution or _plugin.name if _plugin else "<in-process>"
            if name in self._backends:
                first = self._backends[name]
                raise BackendAlreadyRegisteredError(
                    name, first.distribution or first.plugin or "<in-process>", where
                )
            self._backends[name] = BackendEntry(
                name=name,
                factory=factory,
                priority=priority,
                devices=devices,
                plugin=_plugin.name if _plugin else "<in-process>",
                distribution=_plugin.distribution if _plugin else "",
                version=_plugin.version if _plugin else "",
            )
            if _plugin is not None:
                _plugin.backends.append(name)

    def unregister_backend(self, name: str) -> None:
        """Remove a backend registered in process (used by tests)."""
        with self._lock:
            self._backends.pop(name, None)

    # -- discovery ------------------------------------------------------------------------------
    def load(self) -> None:
        """Discover and register entry-point plugins (once; later calls do nothing)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            allow = _env_list("MLPLUG_PLUGINS")
            block = _env_list("MLPLUG_DISABLE_PLUGINS") or set()
            for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in block or (allow is not None and ep.name not in allow):
                    continue
                dist = ep.dist
                rec = PluginRecord(
                    name=ep.name,
                    distribution=dist.name if dist is not None else "",
                    version=dist.version if dist is not None else "",
                )
                self._plugins[ep.name] = rec
                self._load_one(ep, rec)
            self._pm.check_pending()

    def _load_one(self, ep: Any, rec: PluginRecord) -> None:
        try:
            module = ep.load()
            if self._pm.get_plugin(ep.name) is None:
                self._pm.register(module, name=ep.name)

            def register(
                name: str,
                factory: BackendFactory,
                *,
                priority: int = 0,
                devices: DeviceEnumerator | None = None,
            ) -> None:
                self.register_backend(
                    name, factory, priority=priority, devices=devices, _plugin=rec
                )

            impl = getattr(module, "mlplug_register_backends", None)
            if impl is None:
                msg = f"plugin {ep.name!r} ({ep.value}) has no mlplug_register_backends hook"
                raise BackendLoadError(msg)
            impl(register=register)
        except Exception as exc:
            if _strict():
                raise
            rec.status = "error"
            rec.error = f"{type(exc).__name__}: {exc}"
            rec.traceback = traceback.format_exc()

    # -- queries --------------------------------------------------------------------------------
    def plugins(self) -> list[PluginRecord]:
        """Return every discovered plugin with its status."""
        self.load()
        with self._lock:
            return list(self._plugins.values())

    def backends(self) -> list[BackendEntry]:
        """Return every registered backend, highest priority first."""
        self.load()
        with self._lock:
            return sorted(self._backends.values(), key=lambda b: (-b.priority, b.name))

    def get(self, name: str) -> BackendEntry:
        """Return the backend registered as ``name``.

        :raises BackendLoadError: if no backend has that name (lists those that exist, and the
            error of a plugin that failed to provide it).
        """
        self.load()
        with self._lock:
            entry = self._backends.get(name)
            if entry is not None:
                return entry
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

    def new_backend(
        self,
        model_path: str | None,
        params: BackendParams | None = None,
        *,
        backend: str | None = None,
    ) -> Backend:
        """Create a backend: ``backend``, else ``$MLPLUG_BACKEND``, else the best that loads."""
        from .params import BackendParams

        params = params if params is not None else BackendParams()
        name = backend or os.environ.get("MLPLUG_BACKEND") or None
        if name is not None:
            return self._create(self.get(name), model_path, params)
        errors = []
        for entry in self.backends():
            try:
                return self._create(entry, model_path, params)
            except BackendLoadError as exc:
                errors.append(f"{entry.name}: {exc}")
        detail = "; ".join(errors) if errors else "no backend plugin is installed"
        msg = f"no backend could be created ({detail})"
        raise BackendLoadError(msg)

    @staticmethod
    def _create(entry: BackendEntry, model_path: str | None, params: BackendParams) -> Backend:
        try:
            backend = entry.factory(model_path, params)
        except ImportError as exc:
            msg = f"backend {entry.name!r} could not be loaded: {exc}"
            raise BackendLoadError(msg, backend=entry.name) from exc
        from .modelfile.model import open_model  # opens the file and attaches it (if any)

        return open_model(backend, model_path)


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
) -> None:
    """Register a backend in process (the seed's RegisterBackend).

    :raises BackendAlreadyRegisteredError: if the name is taken.
    """
    _MANAGER.register_backend(name, factory, priority=priority, devices=devices)


def new_backend(
    model_path: str | None, params: BackendParams | None = None, *, backend: str | None = None
) -> Backend:
    """Create a backend for ``model_path`` (None: compute only).

    ``backend=None`` uses ``$MLPLUG_BACKEND``, else the installed backend with the highest
    priority that loads.

    :raises BackendLoadError: if the named backend is unknown or none can be created.
    """
    return _MANAGER.new_backend(model_path, params, backend=backend)
