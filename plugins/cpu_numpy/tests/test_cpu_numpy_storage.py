"""cpu_numpy specifics: storage, views with byte offsets, write-through ops, dtype round trips."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("mlplug_cpu_numpy")


import mlplug as ml
from mlplug import DType


@pytest.fixture
def ctx() -> Iterator[ml.Context]:
    """A fresh cpu_numpy context."""
    with ml.new_backend(None, backend="cpu_numpy") as be, be.new_context() as c:
        yield c


def test_view_reads_raw_memory_at_byte_offset(ctx: ml.Context) -> None:
    """A 2-D view at a byte offset reads the root's memory, not the parent's logical order."""
    a = ctx.from_floats(np.arange(12, dtype=np.float32), 4, 3)
    v = a.view(ctx, 4 * 4, 2, 4 * 4, 2)  # start at row 1, 2 columns, 2 rows
    c = v.contiguous(ctx)
    ctx.compute(c)
    assert c.shape == (2, 2)
    assert c.floats().tolist() == [4.0, 5.0, 8.0, 9.0]


def test_set_rows_writes_into_a_leaf_cache(ctx: ml.Context) -> None:
    """set_rows into a zeros leaf persists for a later graph that reads the cache."""
    cache = ctx.zeros(DType.F16, 3, 4)
    src = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2)
    idx = ctx.from_ints([3, 1], 2)
    ctx.compute(cache.set_rows(ctx, src, idx))
    out = cache.cast(ctx, DType.F32)
    ctx.compute(out)
    assert out.floats().tolist() == [0, 0, 0, 4, 5, 6, 0, 0, 0, 1, 2, 3]


def test_copy_into_strided_window(ctx: ml.Context) -> None:
    """copy() writes element k of the source to element k of a strided destination view."""
    h = ctx.zeros(DType.F32, 2, 3)
    img = ctx.from_floats([7, 8], 2, 1)
    w = img.copy(ctx, h.view(ctx, 1 * h.stride(1), 2))
    ctx.compute(w)
    r = h.contiguous(ctx)
    ctx.compute(r)
    assert r.floats().tolist() == [0, 0, 7, 8, 0, 0]


@pytest.mark.parametrize("dtype", [DType.Q8_0, DType.Q4_0, DType.MXFP4, DType.BF16, DType.F16])
def test_cast_round_trip_within_one_step(ctx: ml.Context, dtype: DType) -> None:
    """F32 -> dtype -> F32 stays within one quantisation step of each block."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 64).astype(np.float32)
    y = ctx.from_floats(x, 64).cast(ctx, dtype).cast(ctx, DType.F32)
    ctx.compute(y)
    got = y.floats()
    step = np.abs(x).reshape(2, 32).max(axis=1).repeat(32) / (7 if dtype == DType.Q4_0 else 100)
    if dtype in (DType.MXFP4,):
        step = np.abs(x).reshape(2, 32).max(axis=1).repeat(32) / 2
    assert np.all(np.abs(got - x) <= step + 1e-3)


def test_inplace_result_aliases_input(ctx: ml.Context) -> None:
    """An in-place op's result shares storage and strides with its input."""
    x = ctx.from_floats([0.5, -1.0, 2.0], 3)
    y = x.tanh(ctx)
    assert y.root is x and y.nb == x.nb
    ctx.compute(y)
    assert np.allclose(y.floats(), np.tanh([0.5, -1.0, 2.0]))
