"""Helpers for the model tests: installed backends, a fake-GPU backend, reading weights, a graph.

``FakeGPUBackend`` is cpu_numpy with extra "CUDA" devices: its weight and layer contexts keep
numpy storage but count it against a per-GPU allocator limit, so the core's per-GPU placement,
accounting and ErrNoMem paths run without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlplug as ml
from mlplug.dtypes import DType
from mlplug.modelfile.model import open_model
from mlplug.registry import manager

BACKENDS: list[str] = [entry.name for entry in manager().backends()]
"""Names of the installed backends, highest priority first."""

try:
    from mlplug_cpu_numpy import CpuNumpyBackend
    from mlplug_cpu_numpy.context import NumpyContext
except ImportError:  # pragma: no cover - cpu_numpy is installed in every tox env that runs these
    CpuNumpyBackend = None
    NumpyContext = None

needs_cpu_numpy = pytest.mark.skipif(CpuNumpyBackend is None, reason="cpu_numpy not installed")


def open_backend(path: Path | str, name: str, **params: Any) -> ml.Backend:
    """Create backend ``name`` for the model at ``path`` with ``BackendParams(**params)``."""
    return ml.new_backend(str(path), ml.BackendParams(**params), backend=name)


def read_weight(be: ml.Backend, t: ml.Tensor) -> np.ndarray:
    """Return a weight's values as float32 in ggml order, read back through the backend."""
    with be.new_context() as ctx:
        out = t.cast(ctx, DType.F32)
        ctx.compute(out)
        values = out.floats()
    assert values is not None
    return values


@dataclass
class FakeGPU:
    """A pretend GPU: what devices() reports, and what its allocator really accepts."""

    id: str
    total: int = 1 << 40
    free: int | None = None
    """Free memory devices() reports (default: total minus what is held on it)."""
    limit: int | None = None
    """Bytes the allocator accepts before MemoryError (default: total)."""


@dataclass
class Tracker:
    """Live storage bytes per device of every FakeGPUBackend sharing it."""

    live: dict[int, int] = field(default_factory=dict)


if CpuNumpyBackend is not None:

    class FakeGPUContext(NumpyContext):  # type: ignore[misc,valid-type]
        """A numpy context whose device_index >= 0 tensors count against a fake GPU."""

        def _allocate(self, t: ml.Tensor, data: bytes | None, zero: bool) -> None:
            be: FakeGPUBackend = self.backend  # type: ignore[assignment]
            device = self.device_index
            live = be.tracker.live
            if device >= 0:
                gpu = be.fake_gpus[device]
                limit = gpu.limit if gpu.limit is not None else gpu.total
                if live.get(device, 0) + t.nbytes > limit:
                    msg = f"fake GPU {gpu.id}: {t.nbytes} more bytes do not fit in {limit}"
                    raise MemoryError(msg)
            super()._allocate(t, data, zero)
            live[device] = live.get(device, 0) + t.nbytes

        def _release(self, tensors: Sequence[ml.Tensor]) -> None:
            live = self.backend.tracker.live  # type: ignore[attr-defined]
            for t in tensors:
                if t.data is not None:
                    device = t.ctx.device_index
                    live[device] -= t.nbytes
            super()._release(tensors)

    class FakeGPUBackend(CpuNumpyBackend):  # type: ignore[misc,valid-type]
        """cpu_numpy plus fake CUDA devices (test only)."""

        def __init__(
            self,
            model_path: str | Path | None,
            params: ml.BackendParams | None = None,
            *,
            gpus: Sequence[FakeGPU] = (FakeGPU("0"),),
            tracker: Tracker | None = None,
        ) -> None:
            self.fake_gpus = list(gpus)
            self.tracker = tracker if tracker is not None else Tracker()
            path = None if model_path is None else str(model_path)
            super().__init__(path, params)
            # Not created by a registered factory, so it opens its model file itself.
            open_model(self, path)

        def hook_make_context(self, max_nodes: int) -> FakeGPUContext:
            return FakeGPUContext(self, max_nodes)

        def devices(self) -> list[ml.DeviceInfo]:
            out = list(super().devices())
            for i, g in enumerate(self.fake_gpus):
                free = g.free if g.free is not None else g.total - self.tracker.live.get(i, 0)
                out.append(
                    ml.DeviceInfo(
                        id=g.id,
                        library="CUDA",
                        name=f"CUDA{g.id}",
                        description="fake GPU",
                        total_memory=g.total,
                        free_memory=max(free, 0),
                    )
                )
            return out

else:  # pragma: no cover
    FakeGPUBackend = None


def gpu_layers(assign: dict[str, Sequence[int]]) -> ml.GPULayersList:
    """Return a GPULayersList giving each CUDA device id its layers."""
    return ml.GPULayersList(
        [ml.GPULayers(id=i, library="CUDA", layers=list(layers)) for i, layers in assign.items()]
    )


@dataclass
class Forward:
    """A mini llama forward pass: its contexts and output (close() frees them)."""

    ctx: ml.Context
    out: ml.Tensor
    inputs: ml.Context

    def close(self) -> None:
        """Close the graph context (and its input view)."""
        self.ctx.close()


@dataclass
class Cache:
    """Per-layer K cache tensors and their contexts."""

    contexts: list[ml.Context]
    tensors: list[ml.Tensor]

    def close(self) -> None:
        """Close every layer's context."""
        for c in self.contexts:
            c.close()


def build_cache(be: ml.Backend, n_embd_kv: int, ctx_len: int, dtype: DType) -> Cache:
    """Create one K cache tensor per layer through ``new_context_size(2).layer(i)``."""
    cache = Cache([], [])
    for i in range(be.block_count):
        c = be.new_context_size(2).layer(i)
        cache.contexts.append(c)
        cache.tensors.append(c.zeros(dtype, n_embd_kv, ctx_len))
    return cache


def build_forward(be: ml.Backend, cache: Cache, n_tokens: int, n_vocab: int) -> Forward:
    """Build embedding -> per layer (norm, q, k into cache, ffn) -> norm -> logits."""
    ctx = be.new_context()
    inputs = ctx.input()
    ids = inputs.from_ints(np.arange(n_tokens) % n_vocab, n_tokens)
    pos = inputs.from_ints(np.arange(n_tokens), n_tokens)

    def w(name: str) -> ml.Tensor:
        t = be.get(name)
        assert t is not None, name
        return t

    x = w("token_embd.weight").rows(ctx, ids)
    for i in range(be.block_count):
        h = x.rms_norm(ctx, w(f"blk.{i}.attn_norm.weight"), 1e-5)
        q = w(f"blk.{i}.attn_q.weight").mulmat(ctx, h)
        k = w(f"blk.{i}.attn_k.weight").mulmat(ctx, h)
        stored = cache.tensors[i].set_rows(ctx, k, pos)
        up = w(f"blk.{i}.ffn_up.weight").mulmat(ctx, h).silu(ctx)
        down = w(f"blk.{i}.ffn_down.weight").mulmat(ctx, up)
        x = x.add(ctx, q).add(ctx, down)
        ctx.forward(stored)
    x = x.rms_norm(ctx, w("output_norm.weight"), 1e-5)
    out = w("output.weight").mulmat(ctx, x)
    ctx.forward(out)
    return Forward(ctx, out, inputs)
