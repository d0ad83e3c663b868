"""Lifetimes on every backend: idempotent close, use after close, and no growth over 1,000
contexts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mlplug import DType, GraphError, new_backend

if TYPE_CHECKING:
    from mlplug import Backend, Context

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    """Resident set size of this process in bytes (``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE


def _cycle(backend: Backend, data: np.ndarray) -> None:
    with backend.new_context() as ctx:
        a = ctx.input().from_floats(data)
        b = a.scale(ctx, 2.0).add(ctx, a).softmax(ctx).sum_rows(ctx)
        ctx.compute(b)
        assert b.floats() is not None


def test_context_close_is_idempotent(backend: Backend) -> None:
    """Closing a context twice (or leaving its ``with`` block after close) is fine."""
    ctx = backend.new_context()
    ctx.input().zeros(DType.F32, 4)
    ctx.close()
    ctx.close()
    with backend.new_context() as c2:
        c2.close()
    assert ctx.closed and c2.closed


def test_backend_close_is_idempotent(backend: Backend) -> None:
    """A second backend instance of the same plugin closes twice without error."""
    be = new_backend(None, backend=backend.name)
    be.close()
    be.close()
    with pytest.raises(GraphError):
        be.new_context()


def test_use_after_close_raises_graph_error(backend: Backend) -> None:
    """Creating, building, computing or reading through a closed context raises GraphError."""
    ctx: Context = backend.new_context()
    a = ctx.input().from_floats([1.0, 2.0, 3.0], 3)
    b = a.scale(ctx, 2.0)
    ctx.compute(b)
    ctx.close()
    with pytest.raises(GraphError):
        ctx.input().zeros(DType.F32, 3)
    with pytest.raises(GraphError):
        a.scale(ctx, 2.0)
    with pytest.raises(GraphError):
        ctx.compute(b)
    with pytest.raises(GraphError):
        b.bytes()
    with pytest.raises(GraphError):
        ctx.input().from_ints([1], 1)


def test_operands_from_a_closed_context_are_rejected(backend: Backend) -> None:
    """A tensor of a closed context cannot feed an op of an open one."""
    old = backend.new_context()
    a = old.input().from_floats([1.0, 2.0], 2)
    old.close()
    with backend.new_context() as ctx:
        b = ctx.input().from_floats([1.0, 2.0], 2)
        with pytest.raises(GraphError):
            b.add(ctx, a)


def test_write_ops_reject_operands_from_a_closed_context(backend: Backend) -> None:
    """copy, set_rows and set_inplace check their operands like every other op."""
    old = backend.new_context()
    a = old.input().from_floats([1.0, 2.0], 2, 1)
    old.close()
    with backend.new_context() as ctx:
        dst = ctx.input().zeros(DType.F32, 2, 1)
        idxs = ctx.input().from_ints([0], 1)
        with pytest.raises(GraphError):
            a.copy(ctx, dst)
        with pytest.raises(GraphError):
            dst.set_rows(ctx, a, idxs)
        with pytest.raises(GraphError):
            dst.set_inplace(ctx, a, dst.stride(1), dst.stride(2), dst.stride(3), 0)


def test_a_recomputed_graph_rejects_an_operand_of_a_closed_context(backend: Backend) -> None:
    """A graph computed again (planned once on array backends) sees new input values, and once
    a context it reads from has closed, computing it raises GraphError, never stale values."""
    weights = backend.new_context()
    w = weights.input().from_floats([1.0, 2.0], 2)
    with backend.new_context() as ctx:
        x = ctx.input().from_floats([3.0, 4.0], 2)
        y = x.add(ctx, w).scale(ctx, 2.0)
        for k in range(3):
            x.from_floats([3.0 + k, 4.0])
            ctx.compute(y)
            assert y.floats().tolist() == [8.0 + 2 * k, 12.0]
        weights.close()
        with pytest.raises(GraphError):
            ctx.compute(y)


def test_thousand_contexts_keep_memory_flat(backend: Backend) -> None:
    """1,000 create/compute/close cycles do not grow the process (RSS within +20 MB).

    Each cycle allocates about 250 kB, so keeping the contexts alive would grow ~250 MB.
    """
    data = np.random.default_rng(0).uniform(-1, 1, (64, 256)).astype(np.float32)
    for _ in range(100):  # warm up caches, allocators and lazy imports
        _cycle(backend, data)
    before = _rss()
    for _ in range(1000):
        _cycle(backend, data)
    grown = _rss() - before
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MB over 1,000 contexts"
