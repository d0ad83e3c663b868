"""Tests for mlplug.runner: get_devices_from_runner against a loopback HTTP server."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mlplug.device import DeviceID, DeviceInfo
from mlplug.runner import (
    BaseRunner,
    FilteredRunnerDiscovery,
    RunnerDiscovery,
    get_devices_from_runner,
)

#: Hang guard for waits that only end early when something is broken (no test relies on it).
HANG_GUARD_S = 60

#: (status, body) for each request; the last one repeats.
Replies = list[tuple[int, bytes]]


class FakeRunner:
    """A runner at a port, alive or exited."""

    def __init__(self, port: int, exited: bool = False) -> None:
        self.port = port
        self.exited = exited

    def get_port(self) -> int:
        return self.port

    def has_exited(self) -> bool:
        return self.exited


@contextmanager
def serve(replies: Replies) -> Iterator[tuple[int, list[dict[str, str]]]]:
    """Serve the replies on 127.0.0.1; yield the port and the request headers seen."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, **dict(self.headers)})
            status, body = replies[min(len(seen), len(replies)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def refusing_port() -> Iterator[tuple[int, socket.socket]]:
    """Yield a loopback port that refuses connections, and the socket holding it.

    The socket is bound but not listening, and stays open for the whole block, so no other
    process can take the port meanwhile (closing a probe socket and reusing its number races).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1]), sock


DEVICES = [
    {
        "id": "0",
        "backend": "CUDA",
        "name": "CUDA0",
        "total_memory": 100,
        "LibraryPath": ["/l", "/l/cuda_v12"],
    },
    {"id": "", "name": "CPU", "total_memory": 5, "LibraryPath": None},
]


def test_success() -> None:
    """A 200 with a JSON array returns the decoded devices; the request is GET /info as JSON."""
    with serve([(200, json.dumps(DEVICES).encode())]) as (port, seen):
        devices = get_devices_from_runner(FakeRunner(port), timeout=5)
    assert devices == [
        DeviceInfo(
            id="0",
            library="CUDA",
            name="CUDA0",
            total_memory=100,
            library_path=["/l", "/l/cuda_v12"],
        ),
        DeviceInfo(name="CPU", total_memory=5),
    ]
    assert seen[0]["path"] == "/info"
    assert seen[0]["Content-Type"] == "application/json"


def test_null_is_empty() -> None:
    """A JSON null body is an empty device list."""
    with serve([(200, b"null")]) as (port, _):
        assert get_devices_from_runner(FakeRunner(port), timeout=5) == []


def test_not_found() -> None:
    """HTTP 404 means an old runner without free VRAM reporting."""
    with serve([(404, b"nope")]) as (port, _):
        with pytest.raises(RuntimeError, match=r"^llamarunner free vram reporting not supported$"):
            get_devices_from_runner(FakeRunner(port), timeout=5)


def test_other_status() -> None:
    """Another status is a runner error carrying the body."""
    with serve([(500, b"boom")]) as (port, _):
        with pytest.raises(RuntimeError, match=r"^runner error: boom$"):
            get_devices_from_runner(FakeRunner(port), timeout=5)


def test_bad_json_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    """Undecodable bodies are logged and polled again until a good one arrives."""
    replies: Replies = [
        (200, b"{not json"),
        (200, b'{"id": "0"}'),
        (200, b'[{"total_memory": -1}]'),
    ]
    replies.append((200, json.dumps(DEVICES[:1]).encode()))
    with serve(replies) as (port, seen):
        devices = get_devices_from_runner(FakeRunner(port), timeout=5)
    assert [d.name for d in devices] == ["CUDA0"]
    assert len(seen) == 4
    assert sum("unmarshal" in r.getMessage() for r in caplog.records) == 3


def test_runner_crashed() -> None:
    """A connection error from an exited runner is 'runner crashed'."""
    with refusing_port() as (port, _), pytest.raises(RuntimeError, match=r"^runner crashed$"):
        get_devices_from_runner(FakeRunner(port, exited=True), timeout=5)


def test_timeout_while_not_answering() -> None:
    """A live runner that never answers times out with the reference's message."""
    with refusing_port() as (port, _):
        with pytest.raises(TimeoutError, match=r"^failed to finish discovery before timeout$"):
            get_devices_from_runner(FakeRunner(port), timeout=0.1)


def test_cancel() -> None:
    """Setting the cancel event while polling stops the polling."""
    cancel = threading.Event()

    class Runner(FakeRunner):
        def has_exited(self) -> bool:  # asked after each refused connection
            cancel.set()
            return False

    with refusing_port() as (port, _):
        with pytest.raises(TimeoutError, match="before timeout"):
            get_devices_from_runner(Runner(port), cancel=cancel, timeout=HANG_GUARD_S)


def test_cancel_already_set() -> None:
    """A cancel event set beforehand fails after the first tick without a request."""
    cancel = threading.Event()
    cancel.set()
    runner_calls: list[str] = []

    class Runner(FakeRunner):
        def has_exited(self) -> bool:
            runner_calls.append("has_exited")
            return False

    with refusing_port() as (port, _), pytest.raises(TimeoutError):
        get_devices_from_runner(Runner(port), cancel=cancel)
    assert runner_calls == []


def test_runner_starts_late() -> None:
    """Connection errors from a live runner are retried until it listens."""
    result: list[list[DeviceInfo]] = []
    errors: list[BaseException] = []
    refused = threading.Semaphore(0)

    class Runner(FakeRunner):
        def has_exited(self) -> bool:  # asked after each refused connection
            refused.release()
            return False

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with refusing_port() as (port, sock):

        def poll() -> None:
            try:
                result.append(get_devices_from_runner(Runner(port), timeout=HANG_GUARD_S))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=poll)
        thread.start()
        for _ in range(3):  # three attempts refused before the runner listens
            assert refused.acquire(timeout=HANG_GUARD_S)
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", port), Handler, bind_and_activate=False
        )
        server.socket.close()
        server.socket = sock  # the very socket that held the port: listen on it now
        server.server_activate()
        server_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}
        )
        server_thread.start()
        try:
            thread.join(timeout=HANG_GUARD_S)
        finally:
            server.shutdown()
            server_thread.join(timeout=HANG_GUARD_S)
    assert errors == [] and result == [[]]


def test_protocols() -> None:
    """Runner protocols are structural and runtime-checkable."""

    class Discovery(FakeRunner):
        def get_device_infos(
            self, *, timeout: float | None = None, cancel: threading.Event | None = None
        ) -> list[DeviceInfo]:
            return []

    class Filtered(Discovery):
        def get_active_device_ids(self) -> list[DeviceID]:
            return []

    assert isinstance(FakeRunner(1), BaseRunner)
    assert not isinstance(FakeRunner(1), RunnerDiscovery)
    assert isinstance(Discovery(1), RunnerDiscovery)
    assert not isinstance(Discovery(1), FilteredRunnerDiscovery)
    assert isinstance(Filtered(1), FilteredRunnerDiscovery)
