"""Plugin contract: devices with memory, the registry's duplicate rule, and a throwaway
in-process backend with no kernels (every op unsupported, never passed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pytest

from mlplug import Backend, BackendAlreadyRegisteredError, DeviceInfo, new_backend, register_backend
from mlplug.array_context import ArrayContext
from mlplug.conformance import run
from mlplug.registry import manager

if TYPE_CHECKING:
    from mlplug import Tensor


def test_devices_report_memory(backend: Backend) -> None:
    """Every backend lists its devices; CPU devices report total and free memory > 0."""
    devices = backend.devices()
    assert devices and all(isinstance(d, DeviceInfo) for d in devices)
    cpus = [d for d in devices if d.library.lower() == "cpu"]
    for d in cpus:
        assert d.total_memory > 0 and 0 < d.free_memory <= d.total_memory
    assert manager().devices(backend.name), "the plugin's enumerator works without a model"


class _HostContext(ArrayContext):
    """Tensors as numpy byte buffers; the throwaway backend has no kernels at all."""

    def new_storage(self, nbytes: int, zero: bool) -> np.ndarray:
        return np.zeros(nbytes, np.uint8)

    def store(self, storage: np.ndarray, data: bytes) -> None:
        storage[:] = np.frombuffer(data, np.uint8)

    def read_bytes(self, t: Tensor) -> bytes:
        start = t.view_offs
        return bytes(t.root.data[start : start + t.nbytes])


class _ThrowawayBackend(Backend):
    name: ClassVar[str] = "throwaway"
    kernels: ClassVar[dict[str, Any]] = {}

    def hook_make_context(self, max_nodes: int) -> _HostContext:
        return _HostContext(self, max_nodes)

    def devices(self) -> list[DeviceInfo]:
        return [
            DeviceInfo(id="0", library="cpu", name="CPU", total_memory=1 << 30, free_memory=1 << 29)
        ]


@pytest.fixture
def throwaway_plugin() -> Iterator[str]:
    """Register the throwaway backend in process; unregister it afterwards."""
    register_backend(
        "throwaway", _ThrowawayBackend, devices=lambda: _ThrowawayBackend(None).devices()
    )
    yield "throwaway"
    manager().unregister_backend("throwaway")


def test_duplicate_registration_is_rejected(throwaway_plugin: str) -> None:
    """A second backend under a taken name raises BackendAlreadyRegisteredError."""
    with pytest.raises(BackendAlreadyRegisteredError, match="throwaway"):
        register_backend(throwaway_plugin, _ThrowawayBackend)
    assert throwaway_plugin in [b.name for b in manager().backends()]


def test_unregistered_after_fixture() -> None:
    """The fixture's backend is gone once its test is over."""
    assert "throwaway" not in [b.name for b in manager().backends()]


def test_backend_without_kernels_is_unsupported_never_passed(throwaway_plugin: str) -> None:
    """Ops without a kernel are unsupported; constructor round trips still pass."""
    with new_backend(None, backend=throwaway_plugin) as be:
        assert be.devices()[0].total_memory > 0
    report = run([throwaway_plugin], "*")
    by_op: dict[str, set[str]] = {}
    for r in report.results:
        if r.dtype != "err":  # error cases are checked by the core: they pass everywhere
            by_op.setdefault(r.op, set()).add(r.status)
    assert by_op["mulmat"] == {"unsupported"}
    assert by_op["Context.from_floats"] == {"pass"}
    assert "pass" not in by_op["rope"]
    assert not report.failed(), [r for r in report.results if r.status == "fail"][:3]
    assert "mulmat" in report.summary[throwaway_plugin].unsupported_ops
