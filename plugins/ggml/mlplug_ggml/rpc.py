"""Remote devices through ggml's RPC backend (``ggml-rpc``): adding servers, serving, guarding.

A client adds a server with ``ggml_backend_rpc_add_server`` and registers the registry it
returns; the server's devices then appear among ggml's devices (registry ``RPC``, named
``RPC0``, ``RPC1``, ... in the order added) and behave as ordinary devices.

ggml's RPC client aborts the process when a connection fails mid-call and blocks forever on a
server that stops answering. So, before ggml sees an endpoint, :func:`probe` connects to it and
exchanges the protocol's hello itself, with a timeout; and once a server is added, every ggml
call that may talk to a server runs on one worker thread (:class:`Guard`) with a timeout, and a
ggml abort raised on that thread parks the thread instead of ending the process: the caller gets
a :class:`~mlplug.errors.RemoteDeviceError` and the guard refuses every later call (the remote
state is lost; open a new process to reconnect).
"""

from __future__ import annotations

import ctypes
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from mlplug.plugin_api import (
    BackendLoadError,
    Endpoint,
    RemoteDeviceError,
    env_seconds,
    parse_endpoints,
)

from . import _lib

if TYPE_CHECKING:
    from ._lib import Lib

__all__ = [
    "BUILD_COMMAND",
    "ENV_RPC_TIMEOUT",
    "GUARDED",
    "Guard",
    "add_servers",
    "guard",
    "has_rpc",
    "probe",
    "listening_ports",
    "require_rpc",
    "serve",
    "start_server",
]

#: The command that installs a ggml with the RPC backend (libggml-python built from source).
BUILD_COMMAND: Final = (
    'CMAKE_ARGS="-DGGML_RPC=ON -DGGML_NATIVE=ON" '
    "pip install --force-reinstall --no-binary libggml-python libggml-python"
)
#: Seconds one guarded ggml call may take before the server is declared lost (default 60).
ENV_RPC_TIMEOUT: Final = "MLPLUG_RPC_TIMEOUT"
_DEFAULT_TIMEOUT: Final = 60.0
#: Seconds to connect and exchange the hello in :func:`probe`.
PROBE_TIMEOUT: Final = 5.0

# ggml-rpc protocol facts (ggml-rpc.h, protocol 5.x): a command is one byte, a little-endian
# u64 payload size and the payload; the reply is a u64 size and its bytes. HELLO is command 14,
# its request carries 24 bytes starting with the client's version, its reply starts with the
# server's major, minor, patch.
RPC_PROTO_MAJOR: Final = 5
_CMD_HELLO: Final = 14
_HELLO_REQUEST_SIZE: Final = 24
_MAX_HELLO_REPLY: Final = 4096

#: ggml functions that may exchange messages with a server: run through the guard.
GUARDED: Final = (
    "ggml_backend_graph_compute",
    "ggml_backend_sched_graph_compute",
    "ggml_backend_sched_alloc_graph",
    "ggml_backend_sched_free",
    "ggml_backend_tensor_set",
    "ggml_backend_tensor_get",
    "ggml_backend_tensor_memset",
    "ggml_backend_tensor_alloc",
    "ggml_backend_buft_alloc_buffer",
    "ggml_backend_buft_get_alloc_size",
    "ggml_backend_buffer_free",
    "ggml_backend_buffer_clear",
    "ggml_backend_buffer_get_base",
    "ggml_backend_synchronize",
    "ggml_backend_free",
    "ggml_backend_dev_init",
    "ggml_backend_dev_memory",
    "ggml_backend_dev_get_props",
    "ggml_gallocr_alloc_graph",
    "ggml_gallocr_free",
)
#: Guarded functions that only give memory back: after a lost server they do nothing.
_FREES: Final = frozenset(
    {
        "ggml_backend_sched_free",
        "ggml_backend_buffer_free",
        "ggml_backend_free",
        "ggml_gallocr_free",
    }
)

_AbortFn = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


def _timeout() -> float:
    return env_seconds(ENV_RPC_TIMEOUT, _DEFAULT_TIMEOUT)


# --------------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------------

_DECLS: Final[dict[str, tuple[Any, tuple[Any, ...]]]] = {
    "ggml_backend_rpc_add_server": (ctypes.c_void_p, (ctypes.c_char_p,)),
    "ggml_backend_rpc_start_server": (
        None,
        (
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_void_p),
        ),
    ),
    "ggml_backend_register": (None, (ctypes.c_void_p,)),
    "ggml_backend_reg_dev_count": (ctypes.c_size_t, (ctypes.c_void_p,)),
    "ggml_backend_reg_dev_get": (ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_size_t)),
    "ggml_set_abort_callback": (ctypes.c_void_p, (_AbortFn,)),
}


def _fn(lib: Lib, name: str) -> Any:
    fn = lib.symbol(name)
    if fn is None:
        return None
    restype, argtypes = _DECLS[name]
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


def has_rpc(lib: Lib) -> bool:
    """Whether the loaded ggml build has the RPC backend."""
    return lib.symbol("ggml_backend_rpc_add_server") is not None


def require_rpc(lib: Lib) -> None:
    """Raise unless the loaded ggml has the RPC backend.

    :raises BackendLoadError: naming the library and the build command that adds RPC.
    """
    if not has_rpc(lib):
        msg = (
            f"the ggml library in {lib.directory} has no RPC backend (libggml-rpc); "
            f"build one with: {BUILD_COMMAND}"
        )
        raise BackendLoadError(msg, backend=_lib.BACKEND)


# --------------------------------------------------------------------------------------------
# Probe
# --------------------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            msg = "connection closed"
            raise ConnectionError(msg)
        out += chunk
    return bytes(out)


def probe(endpoint: Endpoint, timeout: float = PROBE_TIMEOUT) -> tuple[int, int, int]:
    """Connect to a ggml RPC server and exchange the hello, with a timeout.

    :returns: the server's protocol version ``(major, minor, patch)``.
    :raises RemoteDeviceError: the port is closed, the server does not answer in time, answers
        something that is not ggml RPC, or speaks another major protocol version.
    """
    where = str(endpoint)
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            payload = bytes([RPC_PROTO_MAJOR, 0, 0]).ljust(_HELLO_REQUEST_SIZE, b"\0")
            sock.sendall(bytes([_CMD_HELLO]) + struct.pack("<Q", len(payload)) + payload)
            (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
            if not 3 <= size <= _MAX_HELLO_REPLY:
                msg = f"RPC server {where} answered a hello of {size} bytes: not a ggml RPC server"
                raise RemoteDeviceError(msg, endpoint=where)
            major, minor, patch = _recv_exact(sock, size)[:3]
    except TimeoutError:
        msg = f"RPC server {where} did not answer within {timeout:g} s"
        raise RemoteDeviceError(msg, endpoint=where) from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        msg = f"cannot reach RPC server {where}: {reason}"
        raise RemoteDeviceError(msg, endpoint=where) from None
    if major != RPC_PROTO_MAJOR:
        msg = (
            f"RPC server {where} speaks protocol {major}.{minor}.{patch}; this ggml needs "
            f"{RPC_PROTO_MAJOR}.x"
        )
        raise RemoteDeviceError(msg, endpoint=where)
    return major, minor, patch


# --------------------------------------------------------------------------------------------
# Guard
# --------------------------------------------------------------------------------------------


class Guard:
    """One worker thread that runs ggml calls which may talk to a server, with a timeout.

    A ggml abort on the worker (a failed send or receive) parks the worker for good and the
    waiting caller raises :class:`RemoteDeviceError`; so does a call that outlives the timeout.
    After either, the guard is *lost*: calls raise at once, and frees do nothing.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], _Result] | None] = (
            queue.SimpleQueue()
        )
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._current: _Result | None = None
        #: Why the guard was lost ("" while it works).
        self.lost = ""
        self.endpoints: list[str] = []

    def _start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="mlplug-rpc", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, result = job
            self._current = result
            try:
                result.value = fn()
            except BaseException as exc:
                result.error = exc
            self._current = None
            result.done.set()

    def on_worker(self) -> bool:
        """Whether the calling thread is the guard's worker."""
        return threading.current_thread() is self._worker

    def aborted(self, message: str) -> None:
        """Called by ggml's abort hook on the worker: report to the caller and park forever."""
        result = self._current
        self.lost = message.strip() or "ggml aborted"
        if result is not None:
            result.error = RemoteDeviceError(self._lost_message(), endpoint=self._where())
            result.done.set()
        threading.Event().wait()  # never returns: ggml's abort() must not run

    def _where(self) -> str:
        return ",".join(self.endpoints)

    def _lost_message(self) -> str:
        return f"lost the RPC server(s) {self._where()}: {self.lost}"

    def call(self, fn: Callable[..., Any], *args: Any, name: str = "") -> Any:
        """Run ``fn(*args)`` on the worker and return its result.

        :raises RemoteDeviceError: the server connection failed, the call outlived
            ``$MLPLUG_RPC_TIMEOUT`` seconds, or the guard was already lost.
        """
        if self.lost:
            if name in _FREES:
                return None
            raise RemoteDeviceError(self._lost_message(), endpoint=self._where())
        if self.on_worker():
            return fn(*args)
        self._start()
        result = _Result()
        self._jobs.put((lambda: fn(*args), result))
        timeout = _timeout()
        if not result.done.wait(timeout):
            self.lost = f"{name or 'a ggml call'} did not finish within {timeout:g} s"
            raise RemoteDeviceError(self._lost_message(), endpoint=self._where())
        if result.error is not None:
            raise result.error
        return result.value

    def install(self, lib: Lib) -> None:
        """Route the :data:`GUARDED` functions of ``lib`` through this guard (once) and hook
        ggml's abort."""
        if getattr(lib, "_rpc_guarded", False):
            return
        for name in GUARDED:
            fn = getattr(lib, name, None)
            if fn is None:
                continue
            setattr(lib, name, _Guarded(self, fn, name))
        hook = _fn(lib, "ggml_set_abort_callback")
        if hook is not None:
            hook(_ABORT_HOOK)
        setattr(lib, "_rpc_guarded", True)  # noqa: B010 - a mark on the shared Lib


class _Result:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.value: Any = None


class _Guarded:
    """A ggml function that runs through a :class:`Guard`."""

    __slots__ = ("_fn", "_guard", "name")

    def __init__(self, g: Guard, fn: Any, name: str) -> None:
        self._guard = g
        self._fn = fn
        self.name = name

    def __call__(self, *args: Any) -> Any:
        return self._guard.call(self._fn, *args, name=self.name)


#: The process's guard (ggml's registry of servers is process-wide too).
guard: Final = Guard()


def _on_abort(message: bytes | None) -> None:
    if guard.on_worker():
        guard.aborted((message or b"").decode(errors="replace"))
    # Any other thread: return, and ggml aborts the process as it always did.


#: ggml's abort hook (kept alive for the process: ggml holds the pointer).
_ABORT_HOOK: Final = _AbortFn(_on_abort)


# --------------------------------------------------------------------------------------------
# Client and server
# --------------------------------------------------------------------------------------------

_ADDED: dict[Endpoint, list[int]] = {}
_ADD_LOCK = threading.Lock()


def add_servers(lib: Lib, endpoints: Sequence[str | Endpoint]) -> list[int]:
    """Add ggml RPC servers (once per process each) and return their devices, in order.

    Each endpoint is probed first (:func:`probe`); then ggml connects, and the registry it
    returns is registered so its devices join ggml's device list.

    :returns: the ``ggml_backend_dev_t`` of every device of every server, in the order given.
    :raises BackendLoadError: the loaded ggml has no RPC backend (names the build command).
    :raises RemoteDeviceError: an endpoint is malformed, unreachable or not a ggml RPC server.
    """
    require_rpc(lib)
    eps = [e if isinstance(e, Endpoint) else parse_endpoints(e)[0] for e in endpoints]
    add = _fn(lib, "ggml_backend_rpc_add_server")
    register = _fn(lib, "ggml_backend_register")
    count = _fn(lib, "ggml_backend_reg_dev_count")
    get = _fn(lib, "ggml_backend_reg_dev_get")
    out: list[int] = []
    with _ADD_LOCK:
        for ep in eps:
            if ep not in _ADDED:
                probe(ep)
                guard.install(lib)
                where = str(ep)
                if where not in guard.endpoints:
                    guard.endpoints.append(where)
                reg = guard.call(add, where.encode(), name="ggml_backend_rpc_add_server")
                if not reg:
                    msg = f"ggml could not connect to RPC server {where}"
                    raise RemoteDeviceError(msg, endpoint=where)
                devs = [int(get(reg, i)) for i in range(int(count(reg)))]
                register(reg)
                _ADDED[ep] = devs
            out.extend(_ADDED[ep])
    return out


def start_server(lib: Lib, endpoint: Endpoint, devices: Sequence[int], threads: int) -> None:
    """Serve ``devices`` at ``endpoint`` with ggml's RPC server; returns only if ggml stops
    (it could not listen).

    ggml prints its banner and connections to stderr.

    :raises BackendLoadError: the loaded ggml has no RPC backend (names the build command).
    """
    require_rpc(lib)
    serve = _fn(lib, "ggml_backend_rpc_start_server")
    devs = (ctypes.c_void_p * len(devices))(*devices)
    serve(str(endpoint).encode(), None, max(1, threads), len(devices), devs)


def _socket_inodes() -> set[int]:
    out = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(int(target[8:-1]))
    except OSError:
        pass
    return out


def listening_ports(exclude: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """TCP ports this process listens on, from ``/proc`` (sockets in ``exclude`` left out).

    Reading the kernel's table finds the port a server bound when asked for port 0, without
    guessing a free port first.
    """
    inodes = _socket_inodes() - set(exclude)
    ports = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[9]) in inodes:
                ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def serve(
    host: str, port: int, device: str | None, threads: int, ready: Callable[[int], None]
) -> None:
    """``mlplug serve`` for ggml: serve this machine's devices until the process ends.

    ``device`` names one device (``CPU``, ``CUDA0``; None: every CPU and GPU device, remote
    ones excepted). ggml's server runs on a daemon thread; the calling thread waits on it, so
    signals still reach Python. ``ready(port)`` is called once the socket listens.

    :raises BackendLoadError: no RPC in this ggml (names the build command), an unknown
        device, or ggml could not listen on the address.
    """
    from .device import devices as all_devices
    from .device import load_backends

    lib = load_backends()
    require_rpc(lib)
    local = [d for d in all_devices() if not d.remote and d.type in ("CPU", "GPU", "IGPU")]
    if device:
        want = device.lower()
        chosen = [d for d in local if want in (d.name.lower(), f"{d.library}{d.id}".lower())]
        if not chosen:
            names = ", ".join(d.name for d in local) or "none"
            msg = f"no ggml device {device!r} to serve (available: {names})"
            raise BackendLoadError(msg, backend=_lib.BACKEND)
        local = chosen
    endpoint = Endpoint(host, port)
    before = _socket_inodes()
    n_threads = threads or os.cpu_count() or 1
    worker = threading.Thread(
        target=start_server,
        args=(lib, endpoint, [d.dev for d in local], n_threads),
        name="ggml-rpc-server",
        daemon=True,
    )
    worker.start()
    bound = 0
    while worker.is_alive() and not bound:
        ports = listening_ports(before)
        if ports:
            bound = ports[0]
        else:
            worker.join(0.05)
    if not bound:
        msg = f"ggml's RPC server could not listen on {endpoint}"
        raise BackendLoadError(msg, backend=_lib.BACKEND)
    ready(bound)
    while worker.is_alive():
        worker.join(1.0)
    msg = f"ggml's RPC server on {host}:{bound} stopped"
    raise BackendLoadError(msg, backend=_lib.BACKEND)
