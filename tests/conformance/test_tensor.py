"""Tensor and constructor contract on every backend: accessors, and typed errors for bad input."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mlplug import DType, DTypeError, NotSupportedError, ShapeError

if TYPE_CHECKING:
    from mlplug import Backend, Context

F32, F16, I32, Q8_0 = DType.F32, DType.F16, DType.I32, DType.Q8_0


@pytest.fixture
def ctx(backend: Backend) -> Iterator[Context]:
    """A fresh context of the backend under test."""
    with backend.new_context() as c:
        yield c


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((3, 1), (3,)),
        ((1, 3), (1, 3)),
        ((1, 1, 1, 1), (1,)),
        ((4, 1, 5), (4, 1, 5)),
        ((2, 3, 4, 5), (2, 3, 4, 5)),
    ],
)
def test_shape_drops_trailing_ones(
    ctx: Context, shape: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    """``shape`` keeps dims up to the last one above 1; ``dim`` reads 1 beyond."""
    t = ctx.input().zeros(F32, *shape)
    assert t.shape == expected
    assert [t.dim(i) for i in range(4)] == [*shape, 1, 1, 1, 1][:4]


def test_empty_shapes(ctx: Context) -> None:
    """No dims, or a leading 0, make the empty tensor ``[0]``."""
    assert ctx.input().empty(F32).shape == (0,)
    assert ctx.input().zeros(F32, 0, 5).shape == (0,)
    assert ctx.input().from_floats([], 0).nbytes == 0


def test_dim_stride_nbytes(ctx: Context) -> None:
    """Strides are bytes (blocks for quantised dim 0); dims outside 0..3 raise IndexError."""
    t = ctx.input().zeros(F32, 3, 2)
    assert [t.stride(i) for i in range(4)] == [4, 12, 24, 24]
    assert t.nbytes == 24
    q = ctx.input().zeros(Q8_0, 64, 2)
    assert (q.stride(0), q.stride(1), q.nbytes) == (34, 68, 136)
    h = ctx.input().zeros(F16, 5, 3, 2)
    assert (h.stride(1), h.stride(2), h.nbytes) == (10, 30, 60)
    for bad in (4, -1):
        with pytest.raises(IndexError):
            t.dim(bad)
        with pytest.raises(IndexError):
            t.stride(bad)


def test_data_only_after_compute(ctx: Context) -> None:
    """``bytes``/``floats``/``to_numpy`` are None until the tensor is passed to compute."""
    a = ctx.input().from_floats([1, 2, 3, 4, 5, 6], 3, 2)
    b = a.scale(ctx, 2.0)
    assert a.bytes() is None and a.floats() is None and b.bytes() is None
    assert b.dtype == F32 and b.shape == (3, 2)
    ctx.compute(b)
    values, arr, raw = b.floats(), b.to_numpy(), b.bytes()
    assert values is not None and arr is not None and raw is not None
    assert values.dtype == np.float32 and values.tolist() == [2, 4, 6, 8, 10, 12]
    assert arr.shape == (2, 3) and arr[1, 0] == 8
    assert np.frombuffer(raw, "<f4").tolist() == values.tolist()


def test_from_floats_without_shape_reverses_array_shape(ctx: Context) -> None:
    """An array of numpy shape (2, 3) becomes ggml shape [3, 2]."""
    t = ctx.input().from_floats(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert t.shape == (3, 2)
    i = ctx.input().from_ints(np.arange(6, dtype=np.int32).reshape(3, 2))
    assert i.shape == (2, 3) and i.dtype == I32


@pytest.mark.parametrize(
    "make",
    [
        lambda c: c.from_floats([1, 2, 3], 2, 2),
        lambda c: c.from_ints([1, 2, 3, 4, 5], 2, 2),
        lambda c: c.from_bytes(F32, b"\x00" * 12, 2, 2),
        lambda c: c.from_bytes(Q8_0, b"\x00" * 33, 32),
        lambda c: c.zeros(F32, 3, -1),
        lambda c: c.zeros(F32, 3, 0),
        lambda c: c.empty(F32, 1, 2, 3, 4, 5),
        lambda c: c.zeros(Q8_0, 16),
        lambda c: c.zeros(F32, 2, 2).from_floats([1.0, 2.0, 3.0]),
    ],
    ids=[
        "floats-length",
        "ints-length",
        "bytes-length",
        "quant-bytes-length",
        "negative-dim",
        "zero-inner-dim",
        "five-dims",
        "quant-partial-block",
        "method-length",
    ],
)
def test_constructor_shape_errors(ctx: Context, make: Callable[[Context], object]) -> None:
    """Wrong data length, bad extents, more than 4 dims: ShapeError."""
    with pytest.raises(ShapeError):
        make(ctx.input())


def test_other_dtype_is_rejected(ctx: Context) -> None:
    """``DType.OTHER`` cannot be created."""
    with pytest.raises(DTypeError):
        ctx.input().empty(DType.OTHER, 4)
    with pytest.raises(DTypeError):
        ctx.input().zeros(F32, 4).cast(ctx, DType.OTHER)


def _binop(
    c: Context,
    op: str,
    a: tuple[int, ...],
    b: tuple[int, ...],
    da: DType = F32,
    db: DType = F32,
    *extra: object,
) -> object:
    """Apply ``op`` to zero tensors of shapes/dtypes ``a``/``da`` and ``b``/``db``."""
    x, y = c.input().zeros(da, *a), c.input().zeros(db, *b)
    return getattr(x, op)(c, y, *extra)


def _one(c: Context, dtype: DType, shape: tuple[int, ...], op: str, *args: object) -> object:
    """Apply ``op`` with ``args`` to a zero tensor."""
    return getattr(c.input().zeros(dtype, *shape), op)(c, *args)


@pytest.mark.parametrize(
    ("build", "needles"),
    [
        (lambda c: _binop(c, "add", (3,), (4,)), ("[3]", "[4]")),
        (lambda c: _binop(c, "mul", (2, 3), (4, 3)), ("[2, 3]", "[4, 3]")),
        (lambda c: _binop(c, "mulmat", (4, 3), (5, 2)), ("[4, 3]", "[5, 2]")),
        (lambda c: _binop(c, "mulmat", (4, 3, 3), (4, 2, 2)), ("[4, 3, 3]",)),
        (lambda c: _binop(c, "concat", (3, 2), (3, 4), F32, F32, 0), ("[3, 2]",)),
        (lambda c: _binop(c, "silu", (4, 2), (4, 3)), ("[4, 2]", "[4, 3]")),
        (lambda c: _one(c, F32, (4, 3), "reshape", 5, 2), ("[5, 2]",)),
        (lambda c: _one(c, F32, (4, 3, 1), "permute", 1, 0, 2), ()),
        (lambda c: _one(c, F32, (4, 3), "view", 0, 2, 8), ()),
        (lambda c: _one(c, F32, (4, 3), "view", 40, 4), ()),
        (lambda c: _one(c, F32, (4, 3), "slice", 0, 3, 2, 1), ()),
        (lambda c: _one(c, F32, (4, 3), "pad", 1, 1), ()),
        (lambda c: _one(c, F32, (4, 3), "top_k", 5), ()),
        (lambda c: _one(c, F32, (4, 3), "repeat_4d", 6, 3, 1, 1), ()),
        (lambda c: _binop(c, "rows", (4, 3), (2, 2), F32, I32), ()),
        (lambda c: c.arange(0, 1, -1, F32), ()),
    ],
    ids=[
        "add",
        "mul",
        "mulmat-k",
        "mulmat-batch",
        "concat",
        "gated",
        "reshape",
        "permute",
        "view-length",
        "view-bounds",
        "slice",
        "pad",
        "top_k",
        "repeat_4d",
        "rows",
        "arange",
    ],
)
def test_shape_mistakes_raise_shape_error(
    ctx: Context, build: Callable[[Context], object], needles: tuple[str, ...]
) -> None:
    """Incompatible shapes raise ShapeError at build, naming the shapes involved."""
    with pytest.raises(ShapeError) as info:
        build(ctx)
    for needle in needles:
        assert needle in str(info.value)


def _mulmat_id_f32_ids(c: Context) -> object:
    ids = c.input().zeros(F32, 1, 2)
    return _binop(c, "mulmat_id", (4, 3, 2), (4, 1, 2), F32, F32, ids)


@pytest.mark.parametrize(
    "build",
    [
        lambda c: _binop(c, "add", (4, 3), (4, 3), F32, F16),
        lambda c: _binop(c, "sub", (4, 3), (4, 3), I32, I32),
        lambda c: _binop(c, "mulmat", (32, 3), (32, 2), F32, F16),
        lambda c: _binop(c, "rows", (4, 3), (2,), F32, F32),
        _mulmat_id_f32_ids,
        lambda c: _binop(c, "silu", (4, 3), (4, 3), F32, F16),
        lambda c: _one(c, F16, (4, 3), "softmax"),
        lambda c: _one(c, F16, (4, 3), "cum_sum"),
        lambda c: _one(c, F16, (3, 3), "tri", 0),
        lambda c: _one(c, I32, (4, 3), "neg"),
        lambda c: _one(c, I32, (4,), "cast", F16),
        lambda c: _one(c, Q8_0, (32,), "cast", F16),
    ],
    ids=[
        "add-f32-f16",
        "sub-i32",
        "mulmat-f32xf16",
        "rows-f32-ids",
        "mulmat_id-f32-ids",
        "gated-mixed",
        "softmax-f16",
        "cum_sum-f16",
        "tri-f16",
        "neg-i32",
        "cast-i32-f16",
        "cast-q8_0-f16",
    ],
)
def test_dtype_mistakes_raise_dtype_error(ctx: Context, build: Callable[[Context], object]) -> None:
    """Dtype combinations without a kernel raise DTypeError at build, on every backend."""
    with pytest.raises(DTypeError):
        build(ctx)


@pytest.mark.parametrize(
    "build",
    [
        lambda c: (
            c.input().zeros(F32, 3, 3).solve_tri(c, c.input().zeros(F32, 1, 3), False, True, False)
        ),
        lambda c: c.input().zeros(F32, 3, 3).tri(c, 4),
        lambda c: c.arange(0, 4, 1, F16),
        lambda c: c.input().zeros(F32, 4, 2).interpolate(c, (8, 2, 1, 1), 2),
        lambda c: (
            c.input().zeros(F32, 4, 2, 3).rope(c, c.input().zeros(I32, 3), 4, 1e4, 1.0, rope_type=1)
        ),
    ],
    ids=["solve_tri-upper", "tri-type", "arange-f16", "interpolate-mode", "rope-mode"],
)
def test_unsupported_variants_raise_not_supported(
    ctx: Context, build: Callable[[Context], object]
) -> None:
    """Variants ggml does not implement raise NotSupportedError."""
    with pytest.raises(NotSupportedError):
        build(ctx)


def test_out_of_range_indices_raise(ctx: Context) -> None:
    """A row index outside the table raises an IndexError at compute, never a crash."""
    table = ctx.input().zeros(F32, 3, 4)
    out = table.rows(ctx, ctx.input().from_ints([1, 7], 2))
    with pytest.raises(IndexError):
        ctx.compute(out)


@pytest.mark.parametrize("layout", ["permuted", "gapped", "strided2", "fused"])
@pytest.mark.parametrize("dtype", [F32, F16, I32])
def test_layout_inputs_are_views_holding_the_drawn_values(
    backend: Backend, layout: str, dtype: DType
) -> None:
    """The conformance layouts give a non-contiguous view of the right shape and values."""
    from mlplug.conformance import Arg
    from mlplug.conformance.data import case_rng, draw, make_input

    arg = Arg((5, 3, 2), dtype, gen="int" if dtype == I32 else "uniform", lo=-9, hi=9)
    raw = draw(case_rng(0, layout), arg)
    with backend.new_context() as ctx:
        t = make_input(ctx, replace(arg, layout=layout), raw)
        assert t.shape == (5, 3, 2) and t.dtype == dtype
        assert not t.is_contiguous()
        c = t.contiguous(ctx)
        ctx.compute(c)
        got = c.to_numpy()
    assert got is not None
    np.testing.assert_array_equal(np.asarray(got).reshape(raw.shape), raw)


def test_layouts_refuse_quantised_inputs(backend: Backend) -> None:
    """Block-quantised data cannot be split into gapped rows: a clear ValueError."""
    from mlplug.conformance import Arg
    from mlplug.conformance.data import case_rng, draw, make_input

    arg = Arg((32, 2), Q8_0, layout="gapped")
    with backend.new_context() as ctx, pytest.raises(ValueError, match="gapped"):
        make_input(ctx, arg, draw(case_rng(0, "q"), arg))
