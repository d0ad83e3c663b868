"""The index arithmetic the array backends share (:mod:`mlplug.numerics`)."""

from __future__ import annotations

import numpy as np
import pytest

from mlplug.numerics import (
    MROPE_MODES,
    last_seen,
    query_blocks,
    rope_pairs,
    rope_rows,
    rope_theta_scale,
    rope_thetas,
)


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


def test_query_blocks_cut_a_causal_prompt_to_the_keys_each_block_sees() -> None:
    seen = np.arange(1, 301)  # row i sees keys 0..i
    blocks = query_blocks(seen, 128)
    assert blocks == ((0, 128, 128), (128, 256, 256), (256, 300, 300))


def test_query_blocks_keep_one_block_when_cutting_saves_little() -> None:
    assert query_blocks(np.full(300, 40), 128) == ((0, 300, 40),)  # every row sees every key
    assert query_blocks(np.arange(1, 101), 128) == ((0, 100, 100),)  # fewer rows than a block
    assert query_blocks(np.array([1]), 128) == ((0, 1, 1),)  # a decode step


def test_query_blocks_give_a_row_that_sees_nothing_one_key() -> None:
    seen = np.concatenate([np.zeros(128, dtype=np.int64), np.arange(129, 385)])
    assert query_blocks(seen, 128) == ((0, 128, 1), (128, 256, 256), (256, 384, 384))
    assert query_blocks(np.zeros(5, dtype=np.int64)) == ((0, 5, 1),)


def test_last_seen_gives_one_past_each_rows_last_visible_key() -> None:
    visible = np.array(
        [[True, False, False, False], [True, True, False, True], [False, False, False, False]]
    )
    assert last_seen(visible).tolist() == [1, 4, 0]


@pytest.mark.parametrize(
    ("mode", "sections"),
    [(0, (0, 0, 0, 0)), (2, (0, 0, 0, 0)), (8, (2, 3, 3, 0)), (24, (2, 2, 2, 2))],
)
@pytest.mark.parametrize("with_factors", [False, True])
def test_rope_thetas_follow_the_float32_recurrence(
    mode: int, sections: tuple[int, ...], with_factors: bool
) -> None:
    """Each pair's angle: the position times theta_scale k times, rounded to float32 at every
    step (restarting per section in vision mode), then divided by its factor."""
    n_pairs, n_tok = 8, 3
    rows = 4 if mode in MROPE_MODES else 1
    pos = (np.arange(rows * n_tok, dtype=np.int32) * 37 + 5).reshape(-1)
    ts = rope_theta_scale(10000.0, 2 * n_pairs)
    factors = np.linspace(1.0, 3.0, n_pairs, dtype=np.float32) if with_factors else None
    got = rope_thetas(pos, n_pairs, mode, sections, ts, factors)
    assert got.dtype == np.float32 and got.shape == (n_tok, n_pairs)
    axes = pos.reshape(rows, n_tok).astype(np.float32)
    for i in range(n_tok):
        cur = [np.float32(a) for a in axes[:, i]]
        for k, (row, restart) in enumerate(rope_rows(n_pairs, mode, sections)):
            if restart >= 0:
                cur[restart] = np.float32(axes[restart, i])
            want = cur[row] if factors is None else np.float32(cur[row] / factors[k])
            assert got[i, k] == want, (i, k)
            cur = [np.float32(c * ts) for c in cur]
