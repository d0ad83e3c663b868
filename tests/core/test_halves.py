"""Half precision on numpy arrays (:mod:`mlplug.halves`): bit for bit numpy's own casts."""

from __future__ import annotations

import numpy as np
import pytest

from mlplug.halves import every_half, f16_round, half_to_f32


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # numpy's own cast, the reference
def test_f16_round_is_numpys_half_round_trip_bit_for_bit() -> None:
    """Every 4093rd float32 bit pattern (normals, subnormals, halves' ties, overflow to inf,
    infinities, NaN) and a few chosen ones round as ``astype(float16).astype(float32)``."""
    patterns = np.arange(0, 2**32, 4093, dtype=np.uint64).astype(np.uint32).view(np.float32)
    chosen = np.float32([65504, 65519.99, 65520, -65520, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 0.0])
    for x in (patterns, chosen, -chosen):
        want = x.astype(np.float16).astype(np.float32)
        got = f16_round(x)
        same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), x[~same][:5]


def test_half_to_f32_widens_every_half_bit_for_bit() -> None:
    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    want = halves.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(half_to_f32(halves).view(np.uint32), want.view(np.uint32))


def test_every_half_is_each_bit_pattern_widened_and_read_only() -> None:
    table = every_half()
    want = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    assert np.array_equal(table.view(np.uint32), want.view(np.uint32))
    assert not table.flags.writeable
    assert every_half() is table
