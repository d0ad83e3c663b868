"""Host k-quant quantisers (:mod:`mlplug.kquants`): layout, error bounds and bad input.

That they produce ggml's bytes bit for bit is checked against ggml itself in
``plugins/ggml/tests/test_host_kquants.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mlplug import DType, DTypeError
from mlplug.conformance.reference import quant_step
from mlplug.dtypes import TRAITS
from mlplug.host import can_quantize
from mlplug.kquants import KQUANT_TYPES, _rint, quantize_kquant
from mlplug.quants import dequantize, quantize

KQ = sorted(KQUANT_TYPES, key=lambda d: d.name)


def test_every_quantised_dtype_has_a_host_quantiser() -> None:
    assert {DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K} == KQUANT_TYPES
    assert all(can_quantize(d) for d in DType if d.is_quantized)


@pytest.mark.parametrize("dtype", KQ, ids=lambda d: d.name)
def test_round_trip_stays_within_a_step(dtype: DType) -> None:
    """Decoded by the gguf package's own decoder (an independent reading of the layout), every
    value is within the conformance suite's step of its input, and the error is far below the
    values' spread (a scrambled layout would be of the order of the values)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 512)).astype(np.float32) * rng.uniform(0.01, 100, (64, 1))
    x = x.astype(np.float32)
    raw = quantize(x, dtype)
    assert raw.shape == (64, 2 * TRAITS[dtype].type_size)
    back = dequantize(raw, dtype)
    err = np.abs(back - x)
    if dtype == DType.Q2_K:  # the suite has no step for it: a third of each 32-block's range
        b = x.reshape(64, -1, 32)
        step = np.repeat((b.max(-1) - b.min(-1)) / 3, 32, axis=1)
    else:
        step = quant_step(x, dtype)
    assert (err <= step).all()
    rel = np.sqrt(np.mean(err**2, axis=1)) / np.sqrt(np.mean(x**2, axis=1))
    assert (
        rel.max()
        < {"Q2_K": 0.35, "Q3_K": 0.2, "Q4_K": 0.1, "Q5_K": 0.05, "Q6_K": 0.025}[dtype.name]
    )


@pytest.mark.parametrize("dtype", KQ, ids=lambda d: d.name)
def test_zeros_and_shapes(dtype: DType) -> None:
    size = TRAITS[dtype].type_size
    assert not quantize_kquant(np.zeros((3, 256), np.float32), dtype).any()
    assert quantize_kquant(np.zeros((0, 512), np.float32), dtype).shape == (0, 2 * size)
    assert quantize_kquant(np.ones((2, 3, 768), np.float32), dtype).shape == (2, 3, 3 * size)


@pytest.mark.parametrize("dtype", KQ, ids=lambda d: d.name)
def test_nan_and_inf_give_bytes_without_warnings(dtype: DType) -> None:
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    x[0, 5], x[1, 9], x[2, 200] = np.nan, np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = quantize_kquant(x, dtype)
    assert raw.shape == (3, TRAITS[dtype].type_size)


def test_bad_rows_and_types_raise_dtype_errors() -> None:
    with pytest.raises(DTypeError, match=r"Q4_K: rows of shape \[2, 100\]"):
        quantize_kquant(np.zeros((2, 100), np.float32), DType.Q4_K)
    with pytest.raises(DTypeError, match="no host quantiser"):
        quantize_kquant(np.zeros((1, 256), np.float32), DType.Q8_0)
    with pytest.raises(DTypeError, match="not whole 256-blocks"):
        quantize(np.zeros((1, 32), np.float32), DType.Q6_K)


def test_nearest_int_is_ties_to_even_in_range() -> None:
    a = np.float32([0.5, 1.5, 2.5, -0.5, -1.5, 3.49, -3.51, 4194302.5, -4194302.0, 0.0])
    np.testing.assert_array_equal(_rint(a), np.rint(a))
