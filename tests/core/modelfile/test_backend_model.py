"""How a backend meets its model file: ``new_backend`` opens it, the backend class never does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import pytest
from model_files import LlamaModel

import mlplug as ml
from mlplug.errors import GraphError
from mlplug.registry import manager

cpu_numpy = pytest.importorskip("mlplug_cpu_numpy")

#: Backend's public API: ollama's ml.Backend plus devices and three read-only properties. Plugin
#: hooks are ``hook_*``, core internals ``_*``; a new public name needs a reason (and docs/).
PUBLIC_API = {
    "allocates",
    "backend_devices",
    "backend_memory",
    "block_count",
    "cache_config",
    "check_node",
    "close",
    "config",
    "devices",
    "get",
    "known_failures",
    "load",
    "max_graph_nodes",
    "new_context",
    "new_context_size",
    "supported_ops",
}


def test_backend_public_names_are_the_model_authors_api() -> None:
    """Everything public on Backend is the model-facing API (hooks and internals are marked)."""
    public = {
        n
        for n in dir(ml.Backend)
        if not n.startswith("_") and not n.startswith("hook_") and callable_or_property(n)
    }
    assert public == PUBLIC_API


def callable_or_property(name: str) -> bool:
    """Whether Backend's attribute ``name`` is a method or property (not a class attribute)."""
    attr = getattr(ml.Backend, name)
    return callable(attr) or isinstance(attr, property)


@pytest.fixture
def late_devices() -> Iterator[type[ml.Backend]]:
    """Register a cpu_numpy backend that sets up its devices only after super().__init__."""

    class LateDevices(cpu_numpy.CpuNumpyBackend):  # type: ignore[misc,name-defined]
        name = "late_devices"
        closed: ClassVar[list[str | None]] = []

        def __init__(self, model_path: str | None, params: ml.BackendParams | None) -> None:
            super().__init__(model_path, params)
            self.ready = True

        def hook_close(self) -> None:
            LateDevices.closed.append(self.model_path)

        def devices(self) -> list[ml.DeviceInfo]:
            assert self.ready, "devices() called before the backend finished __init__"
            return list(super().devices())

    ml.register_backend("late_devices", LateDevices)
    yield LateDevices
    manager().unregister_backend("late_devices")


def test_new_backend_opens_the_model_after_the_backend_is_built(
    llama: LlamaModel, late_devices: type[ml.Backend]
) -> None:
    """A backend may set up its devices after ``super().__init__``: the model opens later."""
    params = ml.BackendParams(alloc_memory=True)
    with ml.new_backend(str(llama.path), params, backend=late_devices.name) as be:
        be.load()
        assert be.config().architecture() == "llama"
        assert be.get("token_embd.weight") is not None


def test_direct_construction_with_a_model_path_says_to_use_new_backend(
    llama: LlamaModel,
) -> None:
    """Constructing a backend class with a model path opens nothing and says what to do."""
    with cpu_numpy.CpuNumpyBackend(str(llama.path), ml.BackendParams()) as be:
        for call in (be.load, be.config, be.backend_memory, lambda: be.get("output.weight")):
            with pytest.raises(GraphError, match=r"mlplug\.new_backend"):
                call()


def test_a_failed_open_closes_the_backend(late_devices: type[ml.Backend]) -> None:
    """A missing file raises ModelFileError from new_backend; the created backend is closed."""
    with pytest.raises(ml.ModelFileError):
        ml.new_backend("/nonexistent/model.gguf", backend=late_devices.name)
    assert late_devices.closed == ["/nonexistent/model.gguf"]  # type: ignore[attr-defined]


def test_config_without_a_model_file_is_a_typed_error() -> None:
    """A backend made without a model file has no metadata: GraphError naming the fix."""
    with ml.new_backend(None, backend="cpu_numpy") as be:
        with pytest.raises(GraphError, match="no model file"):
            be.config()
        assert be.get("token_embd.weight") is None
        assert be.backend_memory().cpu.name == "CPU"


def test_preparers_follow_their_kernel() -> None:
    """A backend replacing an op's kernel runs its own kernel, never the old one's preparer."""

    def add_twice(ctx: object, t: ml.Tensor) -> None:
        a, b = t.src
        np.add(ctx.arr(a), ctx.arr(b) * 2, out=ctx.arr(t))  # type: ignore[attr-defined]

    class AddTwice(cpu_numpy.CpuNumpyBackend):  # type: ignore[misc,name-defined]
        kernels = dict(cpu_numpy.CpuNumpyBackend.kernels, add=add_twice)

    for backend, expected in ((cpu_numpy.CpuNumpyBackend(None), 3.0), (AddTwice(None), 5.0)):
        with backend as be, be.new_context() as ctx:
            x = ctx.from_floats([1.0, 1.0])
            y = x.add(ctx, ctx.from_floats([2.0, 2.0]))
            ctx.forward(y).compute(y)
            ctx.compute(y)  # the second compute runs the prepared steps
            assert y.floats().tolist() == [expected, expected]
