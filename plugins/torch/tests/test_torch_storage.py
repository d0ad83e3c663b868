"""Storage of the torch backend: flat uint8 buffers, strided views, aliasing and writes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("mlplug_torch")

import torch

import mlplug as ml
from mlplug import DType, NotSupportedError, Tensor
from mlplug_torch import TorchBackend
from mlplug_torch.context import TorchContext


def _floats(t: Tensor) -> np.ndarray:
    v = t.floats()
    assert v is not None, f"{t!r} was not computed"
    return v


@pytest.fixture(scope="module")
def be() -> Iterator[TorchBackend]:
    with TorchBackend(None, device="cpu") as backend:
        yield backend


@pytest.fixture
def ctx(be: TorchBackend) -> Iterator[TorchContext]:
    with be.new_context() as c:
        assert isinstance(c, TorchContext)
        yield c


def test_root_storage_is_flat_uint8(ctx: TorchContext) -> None:
    """A constructor tensor owns a 1-D uint8 tensor of exactly its byte size."""
    for dtype, shape in (
        (DType.F32, (3, 2)),
        (DType.F16, (5,)),
        (DType.Q8_0, (64, 2)),
        (DType.BF16, (4, 3)),
        (DType.MXFP4, (32,)),
    ):
        t = ctx.input().zeros(dtype, *shape)
        assert t.data.dtype == torch.uint8
        assert t.data.dim() == 1 and t.data.numel() == t.nbytes


def test_views_share_the_root_with_element_offsets(ctx: TorchContext) -> None:
    """A view is an as_strided window: storage offset = byte offset / element size."""
    x = ctx.input().from_floats(np.arange(24, dtype=np.float32), 4, 6)
    v = x.view(ctx, 8, 2, x.stride(1), 3)  # 2 columns starting at column 2, 3 rows
    a = ctx.arr(v)
    assert a.untyped_storage().data_ptr() == x.data.untyped_storage().data_ptr()
    assert a.storage_offset() == 2 and a.stride() == (12, 12, 4, 1)
    assert a.reshape(-1).tolist() == [2, 3, 6, 7, 10, 11]
    h = ctx.input().from_bytes(DType.F16, np.arange(8, dtype=np.float16).tobytes(), 8)
    assert ctx.arr(h.view(ctx, 6, 3)).reshape(-1).tolist() == [3, 4, 5]
    p = x.permute(ctx, 1, 0, 2, 3)
    assert ctx.arr(p).stride() == (24, 24, 1, 4)


def test_quantised_views_are_byte_blocks(ctx: TorchContext) -> None:
    """Quantised tensors are seen as (ne3, ne2, ne1, blocks, bytes) uint8 views."""
    q = ctx.input().zeros(DType.Q4_0, 64, 3)
    a = ctx.arr(q.slice(ctx, 1, 1, 3, 1))
    assert a.shape == (1, 1, 2, 2, 18) and a.dtype == torch.uint8
    assert a.storage_offset() == 36


def test_misaligned_view_is_not_supported(ctx: TorchContext) -> None:
    """A byte offset that is not a whole number of elements raises at build time."""
    x = ctx.input().zeros(DType.F32, 8)
    with pytest.raises(NotSupportedError, match="element size 4"):
        x.view(ctx, 2, 3)
    h = ctx.input().zeros(DType.F16, 4, 4)
    with pytest.raises(NotSupportedError):
        h.view(ctx, 0, 2, 7, 2)
    with pytest.raises(NotSupportedError):
        x.set_inplace(ctx, ctx.input().zeros(DType.F32, 1), 4, 4, 4, 2)


@pytest.mark.parametrize("dtype", sorted(TorchBackend.dtypes))
def test_bytes_round_trip(ctx: TorchContext, dtype: DType) -> None:
    """Raw bytes written by from_bytes come back unchanged through a copy."""
    tr = dtype.traits
    shape = (tr.block_size * 2, 3)
    raw = np.random.default_rng(int(dtype)).integers(0, 256, 6 * tr.type_size, dtype=np.uint8)
    if dtype in (DType.F16, DType.BF16, DType.F32):
        raw = raw.view(np.uint16 if tr.type_size == 2 else np.uint32)
        raw = (raw & np.array(0x3FFF if tr.type_size == 2 else 0x3FFFFFFF, raw.dtype)).view(
            np.uint8
        )
    t = ctx.input().from_bytes(dtype, raw.tobytes(), *shape)
    y = t.contiguous(ctx)
    ctx.compute(y)
    assert y.bytes() == raw.tobytes()


def test_inplace_results_alias_their_input(ctx: TorchContext) -> None:
    """sigmoid/clamp/fill write their input's storage and share its strides."""
    x = ctx.input().from_floats([-1.0, 0.0, 2.0])
    y = x.sigmoid(ctx)
    assert y.root is x and y.nb == x.nb
    ctx.compute(y)
    expect = 1 / (1 + np.exp(-np.array([-1.0, 0.0, 2.0], np.float32)))
    np.testing.assert_allclose(_floats(y), expect, rtol=1e-6)
    np.testing.assert_allclose(ctx.values(x).reshape(-1).numpy(), expect, rtol=1e-6)


def test_writes_reach_the_destination(ctx: TorchContext) -> None:
    """cpy into a cache window, set_rows and set_inplace write through views of the root."""
    cache = ctx.input().zeros(DType.F16, 4, 5)
    win = cache.view(ctx, 2 * cache.stride(1), 4, cache.stride(1), 2)
    c1 = ctx.input().from_floats(np.arange(8, dtype=np.float32) + 0.5, 4, 2).copy(ctx, win)
    rows = ctx.input().zeros(DType.F32, 2, 4)
    c2 = rows.set_rows(
        ctx, ctx.input().from_floats([7.0, 8.0], 2, 1), ctx.input().from_ints([3], 1)
    )
    flat = ctx.input().zeros(DType.I32, 6)
    c3 = flat.set_inplace(ctx, ctx.input().from_ints([1, 2], 2), 24, 24, 24, 8)
    ctx.compute(c1, c2, c3)
    got = ctx.values(cache).reshape(5, 4).numpy()
    assert got[2:4].reshape(-1).tolist() == [v + 0.5 for v in range(8)]
    assert not got[[0, 1, 4]].any()
    assert ctx.values(rows).reshape(-1).tolist() == [0] * 6 + [7, 8]
    assert ctx.arr(flat).reshape(-1).tolist() == [0, 0, 1, 2, 0, 0]


def test_results_never_alias_their_sources(ctx: TorchContext) -> None:
    """A copy of a contiguous tensor gets its own storage, even when torch returned a view."""
    x = ctx.input().from_floats(np.arange(6, dtype=np.float32), 3, 2)
    y = x.contiguous(ctx)
    z = x.reshape(ctx, 6).cast(ctx, DType.F32)
    ctx.compute(y, z)
    ptr = x.data.untyped_storage().data_ptr()
    assert y.root.data.untyped_storage().data_ptr() != ptr
    assert z.root.data.untyped_storage().data_ptr() != ptr


def test_recompute_sees_new_input_data(ctx: TorchContext) -> None:
    """Computing a graph again after from_floats on an input uses the new values."""
    x = ctx.input().from_floats([1.0, 2.0])
    y = x.scale(ctx, 2.0).add(ctx, x)
    ctx.compute(y)
    assert _floats(y).tolist() == [3.0, 6.0]
    x.from_floats([5.0, 7.0])
    ctx.compute(y)
    assert _floats(y).tolist() == [15.0, 21.0]


def test_weights_survive_a_closed_compute_context(be: TorchBackend) -> None:
    """Closing a compute context frees its results, not the inputs it only read."""
    with be.new_context() as owner:
        w = owner.input().from_floats(np.eye(2, dtype=np.float32))
        for _ in range(2):
            with be.new_context() as c:
                y = w.mulmat(c, w)
                c.compute(y)
                assert _floats(y).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_host_buffer_is_zero_copy_on_cpu(ctx: TorchContext, be: TorchBackend) -> None:
    """The loader can write a CPU tensor's storage directly."""
    t = ctx.input().zeros(DType.F32, 4)
    view = be.hook_host_buffer(t)
    assert view is not None and view.nbytes == 16
    view[:4] = np.float32(3.5).tobytes()
    assert ctx.values(t).reshape(-1).tolist() == [3.5, 0, 0, 0]


def test_allocation_failure_is_a_memory_error(ctx: TorchContext) -> None:
    """An allocation the device cannot hold raises MemoryError (ErrNoMem in the core)."""
    with pytest.raises(MemoryError):
        ctx.new_storage(1 << 60, False)


def test_compute_only_backend_via_new_backend() -> None:
    """``new_backend(backend="torch")`` gives a TorchBackend computing on its device."""
    with ml.new_backend(None, backend="torch") as be:
        assert isinstance(be, TorchBackend)
        assert be.hook_gpu_devices() == [] or be.device.type != "cpu"
