"""Runner interfaces and device discovery through a runner's HTTP ``/info`` endpoint."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Final, Protocol, runtime_checkable

from pydantic import ValidationError

from .device import DeviceID, DeviceInfo

__all__ = ["BaseRunner", "FilteredRunnerDiscovery", "RunnerDiscovery", "get_devices_from_runner"]

_log = logging.getLogger(__name__)

#: Seconds between two polls of the runner.
POLL_INTERVAL: Final = 0.01

# Loopback requests never go through an HTTP proxy taken from the environment.
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@runtime_checkable
class BaseRunner(Protocol):
    """A runner process serving HTTP on a localhost port."""

    def get_port(self) -> int:
        """Return the localhost port the runner listens on."""
        ...

    def has_exited(self) -> bool:
        """Return whether the runner process has exited."""
        ...


@runtime_checkable
class RunnerDiscovery(BaseRunner, Protocol):
    """A runner that can report the devices it sees."""

    def get_device_infos(
        self, *, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> list[DeviceInfo]:
        """Return the runner's devices (may take seconds while the runner starts).

        :param timeout: seconds to wait at most; ``None`` waits until ``cancel`` is set.
        :param cancel: set it to give up early.
        """
        ...


@runtime_checkable
class FilteredRunnerDiscovery(RunnerDiscovery, Protocol):
    """A runner started for a subset of the devices."""

    def get_active_device_ids(self) -> list[DeviceID]:
        """Return the devices this runner serves, at once (empty for a bootstrap runner)."""
        ...


def _give_up(deadline: float | None, cancel: threading.Event | None) -> bool:
    if cancel is not None and cancel.is_set():
        return True
    return deadline is not None and time.monotonic() >= deadline


def _decode(body: bytes) -> list[DeviceInfo]:
    data = json.loads(body)
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        msg = f"expected a JSON array of objects, got {type(data).__name__}"
        raise ValueError(msg)
    return [DeviceInfo.from_json_dict(d) for d in data]


def get_devices_from_runner(
    runner: BaseRunner,
    *,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> list[DeviceInfo]:
    """Poll ``GET http://127.0.0.1:<port>/info`` every 10 ms until the runner lists its devices.

    Connection errors are retried while the runner is alive; unreadable or undecodable bodies
    are logged and retried. One request may block up to the time left before ``timeout``
    (indefinitely without one), so ``cancel`` is noticed between requests.

    :param runner: the runner to ask.
    :param timeout: seconds to keep trying; ``None`` for no limit.
    :param cancel: an event that stops the polling when set.
    :returns: the devices (empty for a JSON ``null``).
    :raises TimeoutError: ``failed to finish discovery before timeout`` when the time runs out or
        ``cancel`` is set.
    :raises RuntimeError: ``runner crashed`` when the runner exited, ``llamarunner free vram
        reporting not supported`` on HTTP 404, ``runner error: <body>`` on another status.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    url = f"http://127.0.0.1:{runner.get_port()}/info"
    while True:
        if cancel is not None:
            cancel.wait(POLL_INTERVAL)
        else:
            time.sleep(POLL_INTERVAL)
        if _give_up(deadline, cancel):
            msg = "failed to finish discovery before timeout"
            raise TimeoutError(msg)
        request = urllib.request.Request(url, headers={"Content-Type": "application/json"})
        left = None if deadline is None else max(deadline - time.monotonic(), POLL_INTERVAL)
        try:
            response = _OPENER.open(request, timeout=left)
        except urllib.error.HTTPError as exc:
            status, response = exc.code, exc
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if runner.has_exited():
                msg = "runner crashed"
                raise RuntimeError(msg) from exc
            continue
        else:
            status = response.status
        with response:
            if status == 404:
                msg = "llamarunner free vram reporting not supported"
                raise RuntimeError(msg)
            try:
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                _log.warning("failed to read runner response: %s", exc)
                continue
        if status != 200:
            msg = "runner error: " + body.decode(errors="replace")
            raise RuntimeError(msg)
        try:
            return _decode(body)
        except (ValueError, ValidationError) as exc:
            _log.warning("unmarshal encode response: %s", exc)
