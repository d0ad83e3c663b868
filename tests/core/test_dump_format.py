"""Tests for mlplug.dump: format_array (worked examples) and dump over a fake tensor."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from mlplug.dtypes import DType
from mlplug.dump import dump, format_array


def f32(*values: float) -> np.ndarray:
    """Return the values as float32."""
    return np.array(values, dtype=np.float32)


def test_example_1_vector() -> None:
    """A float vector prints fixed-point with a sign slot."""
    assert format_array(f32(1, -2.5, 0.333333), (3,), is_int=False) == "[ 1.0000, -2.5000,  0.3333]"


def test_example_2_matrix() -> None:
    """Rows of a matrix are separated by ',' newline and one space."""
    text = format_array(np.arange(6, dtype=np.float32), (3, 2), is_int=False)
    assert text == "[[ 0.0000,  1.0000,  2.0000],\n [ 3.0000,  4.0000,  5.0000]]"


def test_example_3_elided_vector() -> None:
    """Past the threshold only edge_items values at each end are printed."""
    text = format_array(np.arange(10, dtype=np.float32), (10,), is_int=False, threshold=5)
    assert text == "[ 0.0000,  1.0000,  2.0000, ...,  7.0000,  8.0000,  9.0000]"


def test_example_4_elided_rows() -> None:
    """Elided rows print '..., ' (trailing space) on a line of their own."""
    text = format_array(np.arange(20, dtype=np.int32), (2, 10), is_int=True, threshold=5)
    assert text == (
        "[[ 0,  1],\n [ 2,  3],\n [ 4,  5],\n ..., \n [ 14,  15],\n [ 16,  17],\n [ 18,  19]]"
    )


def test_example_5_three_dims() -> None:
    """3-D blocks are separated by a blank line; inner rows get two spaces."""
    text = format_array(np.arange(8, dtype=np.int32), (2, 2, 2), is_int=True)
    assert text == "[[[ 0,  1],\n  [ 2,  3]],\n\n [[ 4,  5],\n  [ 6,  7]]]"


def test_example_6_edge_items() -> None:
    """edge_items sets how many values stay at each end."""
    text = format_array(
        np.arange(-4, 4, dtype=np.int32), (8,), is_int=True, threshold=4, edge_items=2
    )
    assert text == "[-4, -3, ...,  2,  3]"


def test_example_7_precision() -> None:
    """precision sets the number of decimals."""
    assert (
        format_array(f32(1.23456, -0.5, 7), (3,), is_int=False, precision=2)
        == "[ 1.23, -0.50,  7.00]"
    )


def test_example_8_empty() -> None:
    """A zero-element tensor prints as []."""
    assert format_array(f32(), (0,), is_int=False) == "[]"


def test_threshold_is_inclusive() -> None:
    """Exactly threshold values print in full."""
    text = format_array(np.arange(7, dtype=np.int32), (7,), is_int=True, threshold=7, edge_items=1)
    assert text == "[ 0,  1,  2,  3,  4,  5,  6]"


def test_edges_cover_everything() -> None:
    """When 2*edge_items covers a dimension nothing is elided."""
    text = format_array(np.arange(6, dtype=np.int32), (6,), is_int=True, threshold=1, edge_items=3)
    assert text == "[ 0,  1,  2,  3,  4,  5]"


def test_elided_blocks_three_dims() -> None:
    """Elided 3-D blocks skip whole blocks and use two newlines."""
    values = np.arange(2 * 1 * 5, dtype=np.int32)
    text = format_array(values, (2, 1, 5), is_int=True, threshold=2, edge_items=1)
    assert text == "[[[ 0,  1]],\n\n ..., \n\n [[ 8,  9]]]"


def test_elision_in_inner_and_outer_dims() -> None:
    """Each dimension elides separately, with the right offsets."""
    values = np.arange(25, dtype=np.int32)
    text = format_array(values, (5, 5), is_int=True, threshold=10, edge_items=1)
    assert text == "[[ 0, ...,  4],\n ..., \n [ 20, ...,  24]]"


def test_zero_edge_items() -> None:
    """edge_items=0 elides a whole dimension, as the reference does."""
    assert (
        format_array(np.arange(3, dtype=np.int32), (3,), is_int=True, threshold=1, edge_items=0)
        == "[..., ]"
    )


def test_special_floats() -> None:
    """NaN and infinities print Go-style; -0 keeps its sign."""
    text = format_array(f32(np.nan, np.inf, -np.inf, -0.0, -0.00001), (5,), is_int=False)
    assert text == "[ NaN,  +Inf, -Inf, -0.0000, -0.0000]"


def test_float32_exact_rounding() -> None:
    """Floats round the exact float32 value half-to-even, like Go's FormatFloat."""
    assert (
        format_array(f32(0.125, 0.375, 2.5), (3,), is_int=False, precision=2)
        == "[ 0.12,  0.38,  2.50]"
    )
    assert format_array(f32(0.1), (1,), is_int=False, precision=10) == "[ 0.1000000015]"
    assert format_array(f32(2.5, 3.5), (2,), is_int=False, precision=0) == "[ 2,  4]"


def test_negative_precision_is_shortest() -> None:
    """A negative precision prints the shortest float32 text, as Go's -1 does."""
    assert (
        format_array(f32(0.1, 1, 1e-7), (3,), is_int=False, precision=-1)
        == "[ 0.1,  1,  0.0000001]"
    )


def test_integers() -> None:
    """Integers print in decimal with the same sign slot."""
    values = np.array([2**31 - 1, -(2**31)], dtype=np.int32)
    assert format_array(values, (2,), is_int=True) == "[ 2147483647, -2147483648]"


def test_empty_shape_is_one_value() -> None:
    """An empty shape prints its single value."""
    assert format_array(f32(3), (), is_int=False) == "[ 3.0000]"


def test_too_few_values() -> None:
    """Fewer values than the shape needs is a ValueError."""
    with pytest.raises(ValueError, match="needs 6 values"):
        format_array(f32(1, 2), (3, 2), is_int=False)


@dataclass
class FakeTensor:
    """Just the Tensor surface dump uses."""

    shape: tuple[int, ...]
    dtype: DType
    data: bytes | None
    pending: bytes = b""
    copies: list[FakeTensor] = field(default_factory=list)

    def bytes(self) -> bytes | None:
        return self.data

    def copy(self, ctx: FakeContext, dst: FakeTensor) -> FakeTensor:
        assert self.data is not None
        values = np.frombuffer(self.data, dtype=np.float16)
        dst.pending = values.astype(np.float32).tobytes()
        self.copies.append(dst)
        return dst


@dataclass
class FakeContext:
    """Just the Context surface dump uses."""

    made: list[tuple[DType, tuple[int, ...]]] = field(default_factory=list)
    computed: list[FakeTensor] = field(default_factory=list)

    def input(self) -> FakeContext:
        return self

    def empty(self, dtype: DType, *shape: int) -> FakeTensor:
        self.made.append((dtype, shape))
        return FakeTensor(shape, dtype, None)

    def forward(self, t: FakeTensor) -> FakeContext:
        return self

    def compute(self, t: FakeTensor) -> None:
        self.computed.append(t)
        if t.data is None:
            t.data = t.pending


def test_dump_f32_computed() -> None:
    """An F32 tensor with data prints without computing."""
    ctx = FakeContext()
    t = FakeTensor((3,), DType.F32, f32(1, -2.5, 0.333333).tobytes())
    assert dump(ctx, t) == "[ 1.0000, -2.5000,  0.3333]"  # type: ignore[arg-type]
    assert ctx.computed == []


def test_dump_computes_first() -> None:
    """A tensor without readable data is computed before printing."""
    ctx = FakeContext()
    t = FakeTensor((2, 2), DType.I32, None, pending=np.arange(4, dtype=np.int32).tobytes())
    assert dump(ctx, t) == "[[ 0,  1],\n [ 2,  3]]"  # type: ignore[arg-type]
    assert ctx.computed == [t]


def test_dump_f16_copies_to_f32() -> None:
    """F16 goes through an F32 copy made in ctx.input()."""
    ctx = FakeContext()
    t = FakeTensor((3,), DType.F16, np.array([1, 2, 3], dtype=np.float16).tobytes())
    assert dump(ctx, t, precision=1) == "[ 1.0,  2.0,  3.0]"  # type: ignore[arg-type]
    assert ctx.made == [(DType.F32, (3,))]
    assert ctx.computed == t.copies


def test_dump_options_and_trailing_ones() -> None:
    """Options pass through; trailing size-1 dims are dropped like the reference's shape()."""
    ctx = FakeContext()
    t = FakeTensor((10, 1), DType.F32, np.arange(10, dtype=np.float32).tobytes())
    text = dump(ctx, t, threshold=5, edge_items=1, precision=1)  # type: ignore[arg-type]
    assert text == "[ 0.0, ...,  9.0]"


@pytest.mark.parametrize("dtype", [DType.MXFP4, DType.OTHER, DType.BF16])
def test_dump_unsupported(dtype: DType) -> None:
    """Other dtypes print as <unsupported>."""
    assert dump(FakeContext(), FakeTensor((1,), dtype, b"")) == "<unsupported>"  # type: ignore[arg-type]
