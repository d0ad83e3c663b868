"""The index arithmetic the array backends share (:mod:`mlplug.numerics`)."""

from __future__ import annotations

import numpy as np
import pytest

from mlplug.numerics import rope_pairs


@pytest.mark.parametrize(("mode", "n_pairs"), [(0, 4), (2, 4), (8, 6), (24, 3), (40, 5)])
def test_rope_pairs_rotate_as_the_pair_formula(mode: int, n_pairs: int) -> None:
    """``x * cos[pair] + x[partner] * sin[pair] * sign`` equals ``u' = u c - v s``,
    ``v' = u s + v c`` on the pairs of the mode (adjacent in mode 0, halves otherwise), bit
    for bit."""
    rng = np.random.default_rng(n_pairs)
    x = rng.standard_normal((3, 2 * n_pairs)).astype(np.float32)
    cos = rng.uniform(-1, 1, size=n_pairs).astype(np.float32)
    sin = rng.uniform(-1, 1, size=n_pairs).astype(np.float32)
    if mode == 0:
        u, v = x[:, 0::2], x[:, 1::2]
    else:
        u, v = x[:, :n_pairs], x[:, n_pairs:]
    ru, rv = u * cos - v * sin, u * sin + v * cos
    want = np.empty_like(x)
    if mode == 0:
        want[:, 0::2], want[:, 1::2] = ru, rv
    else:
        want[:, :n_pairs], want[:, n_pairs:] = ru, rv
    pair, partner, sign = rope_pairs(n_pairs, mode)
    got = x * cos[pair] + x[:, partner] * (sin[pair] * sign)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert not pair.flags.writeable  # cached: callers must not change it
