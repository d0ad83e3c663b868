"""The typed exceptions of mlplug: every error a user can see derives from :class:`MlplugError`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .memory import BackendMemory

__all__ = [
    "BackendAlreadyRegisteredError",
    "BackendLoadError",
    "BackendSkippedWarning",
    "ConfigError",
    "DTypeError",
    "ErrNoMem",
    "GraphError",
    "LoadCancelledError",
    "MlplugError",
    "ModelFileError",
    "NotSupportedError",
    "OutOfRangeError",
    "PluginError",
    "RemoteDeviceError",
    "ShapeError",
]


class MlplugError(Exception):
    """Base class of every error raised by mlplug and its plugins."""


class ShapeError(MlplugError, ValueError):
    """An op got operands whose shapes do not fit together, or a constructor got a bad shape."""

    def __init__(
        self,
        message: str,
        *,
        op: str | None = None,
        shapes: tuple[tuple[int, ...], ...] = (),
    ) -> None:
        super().__init__(message)
        self.op = op
        self.shapes = shapes


class DTypeError(MlplugError, TypeError):
    """An op got a dtype (or a combination of dtypes) it does not accept."""

    def __init__(
        self, message: str, *, op: str | None = None, dtypes: tuple[Any, ...] = ()
    ) -> None:
        super().__init__(message)
        self.op = op
        self.dtypes = dtypes


class NotSupportedError(MlplugError, NotImplementedError):
    """A backend cannot run an op (or op variant); conformance reports show it as unsupported."""

    def __init__(self, backend: str, op: str, reason: str) -> None:
        message = f"{backend}: {op} is not supported: {reason}"
        super().__init__(message)
        self.backend = backend
        self.op = op
        self.reason = reason


class OutOfRangeError(MlplugError, IndexError):
    """An index read from tensor data (rows, expert ids) is outside the valid range."""


class GraphError(MlplugError, RuntimeError):
    """A graph or context was misused: too many nodes, compute without a graph, use after close."""


class BackendLoadError(MlplugError, RuntimeError):
    """A backend (or the native library behind it) could not be loaded or created."""

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend


class BackendAlreadyRegisteredError(MlplugError, ValueError):
    """A second backend was registered under a name that is already taken."""

    def __init__(self, name: str, first: str = "", second: str = "", *, hint: str = "") -> None:
        where = ""
        if first or second:
            where = f" (first from {first or 'unknown'}, again from {second or 'unknown'})"
        message = f"backend: backend already registered: {name!r}{where}"
        if hint:
            message += f"; {hint}"
        super().__init__(message)
        self.name = name
        self.first = first
        self.second = second


class PluginError(MlplugError, TypeError):
    """A plugin (or an in-process registration) broke the plugin contract.

    Raised for an unknown or misspelt hook, a hook with a bad signature, invalid arguments to
    ``register``, or a plugin that crashed or hung the interpreter while loading.
    """

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


class ConfigError(MlplugError, ValueError):
    """An ``MLPLUG_*`` environment variable holds a value mlplug cannot use; names the variable."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        super().__init__(f"invalid {variable}={value!r}: expected {expected}")
        self.variable = variable
        self.value = value
        self.expected = expected


class RemoteDeviceError(MlplugError, ConnectionError):
    """A remote device (an RPC server) is misnamed, unreachable, answered garbage or died.

    ``endpoint`` names the server (``host:port``, or the malformed text as given).
    """

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint


class BackendSkippedWarning(UserWarning):
    """``new_backend`` with no backend named skipped a backend (it failed, or its name is
    claimed by two plugins) and tried the next one."""


class ModelFileError(MlplugError, ValueError):
    """A model file is missing, malformed or inconsistent; names the path and the offset or key."""

    def __init__(
        self, path: str, message: str, *, offset: int | None = None, key: str | None = None
    ) -> None:
        where = []
        if offset is not None:
            where.append(f"offset {offset}")
        if key is not None:
            where.append(f"key {key!r}")
        text = f"{path}: {message}" + (f" (at {', '.join(where)})" if where else "")
        super().__init__(text)
        self.path = path
        self.offset = offset
        self.key = key
        self.reason = message


class LoadCancelledError(MlplugError):
    """Loading a model's weights was cancelled; the backend was closed and its weights freed."""

    def __init__(self, path: str, done: int, total: int) -> None:
        message = f"{path}: loading cancelled after {done} of {total} bytes; the backend was closed"
        super().__init__(message)
        self.path = path
        self.done = done
        self.total = total


class ErrNoMem(MlplugError, MemoryError):
    """An allocation did not fit; carries the BackendMemory that was attempted."""

    def __init__(self, backend_memory: BackendMemory) -> None:
        self.backend_memory = backend_memory
        message = "insufficient memory - required allocations: " + backend_memory.go_repr()
        super().__init__(message)

    def __getattr__(self, name: str) -> Any:
        # Go embeds BackendMemory in ErrNoMem: err.InputWeights works there, err.input_weights here.
        if name != "backend_memory" and "backend_memory" in self.__dict__:
            return getattr(self.__dict__["backend_memory"], name)
        raise AttributeError(name)
