"""ggml's f16-table activations through one table lookup equal the rounded formula."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlplug_cpu_numpy")

from mlplug.plugin_api import DType, f16_round
from mlplug_cpu_numpy.ops.elementwise import gelu_f32, gelu_ggml, quick_f32, quick_ggml

F32 = np.float32


def _samples() -> np.ndarray:
    """Every 4093rd float32 bit pattern (all signs and exponents), plus the cut's edges."""
    bits = np.arange(0, 1 << 32, 4093, dtype=np.uint64).astype(np.uint32)
    edges = np.array([10, -10, 9.999, -9.999, 65504, 65520, -65520, 0.0, -0.0], F32)
    return np.concatenate([bits.view(F32), edges, np.array([np.inf, -np.inf], F32)])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    both_nan = np.isnan(a) & np.isnan(b)
    return bool(np.all(both_nan | (a.view(np.uint32) == b.view(np.uint32))))


def test_gelu_table_equals_the_rounded_formula() -> None:
    x = _samples()
    with np.errstate(all="ignore"):
        rounded = f16_round(gelu_f32(f16_round(x)))
        want = np.where(x <= -10, F32(0), np.where(x >= 10, x, rounded)).astype(F32)
        got = gelu_ggml(x, DType.F32)
    assert got.dtype == F32
    assert _same(got, want)


def test_quick_gelu_table_equals_the_rounded_formula() -> None:
    x = _samples()
    with np.errstate(all="ignore"):
        want = f16_round(quick_f32(f16_round(x)))
        got = quick_ggml(x, DType.F32)
    assert _same(got, want)


@pytest.mark.parametrize("fn", [gelu_ggml, quick_ggml])
def test_table_activations_keep_shape_and_leave_input_alone(fn: object) -> None:
    x = np.linspace(-12, 12, 24, dtype=F32).reshape(2, 3, 4)
    before = x.copy()
    y = fn(x, DType.F32)  # type: ignore[operator]
    assert y.shape == x.shape
    assert np.array_equal(x, before)
