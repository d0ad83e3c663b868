"""M-RoPE modes (mrope, imrope, vision) against an independent float64 reading of the spec."""

from __future__ import annotations

import numpy as np
import pytest

import mlplug as ml


def _axis(mode: int, sec: int, s: tuple[int, int, int, int]) -> tuple[int, int]:
    """Return (position axis, first pair index of its section) for sector ``sec``."""
    w0 = s[0] + s[1]
    if mode == 40:
        if sec % 3 == 1 and sec < 1 + 3 * s[1]:
            return 1, 0
        if sec % 3 == 2 and sec < 2 + 3 * s[2]:
            return 2, 0
        return 0, 0
    if sec < s[0]:
        return 0, 0
    if sec < w0:
        return 1, s[0]
    if sec < w0 + s[2]:
        return 2, w0
    return 3, w0 + s[2]


def _reference(
    x: np.ndarray,
    pos: np.ndarray,
    n_dims: int,
    base: float,
    mode: int,
    secs: tuple[int, int, int, int],
) -> np.ndarray:
    """x: (T, H, D) float64; pos: (4, T)."""
    n_pairs = n_dims if mode == 24 else n_dims // 2
    theta_scale = base ** (-2.0 / n_dims)
    y: np.ndarray = x.copy()
    for k in range(n_pairs):
        sec = k % sum(secs)
        axis, start = _axis(mode, sec, secs)
        power = sec - start if mode == 24 else k
        ang = pos[axis] * theta_scale**power  # (T,)
        c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
        u, v = x[:, :, k], x[:, :, k + n_pairs]
        y[:, :, k] = u * c - v * s
        y[:, :, k + n_pairs] = u * s + v * c
    return y


@pytest.mark.parametrize(
    ("mode", "secs", "n_dims"),
    [
        (8, (2, 3, 3, 0), 16),
        (40, (2, 3, 3, 0), 16),
        (24, (2, 2, 2, 2), 8),
        (8, (1, 1, 2, 0), 12),
    ],
)
def test_mrope_modes(mode: int, secs: tuple[int, int, int, int], n_dims: int) -> None:
    """Each M-RoPE mode rotates the right pairs by the right axis's angle."""
    rng = np.random.default_rng(7)
    n_tok, heads, head_dim = 5, 2, 16
    x = rng.uniform(-1, 1, size=(n_tok, heads, head_dim)).astype(np.float32)
    pos = rng.integers(0, 200, size=(4, n_tok)).astype(np.int32)
    with ml.new_backend(None, backend="torch") as be, be.new_context() as ctx:
        xt = ctx.input().from_floats(x, head_dim, heads, n_tok)
        pt = ctx.input().from_ints(pos.reshape(-1), 4 * n_tok)
        y = xt.rope(ctx, pt, n_dims, 10000.0, 1.0, rope_type=mode, sections=secs)
        ctx.compute(y)
        got = y.to_numpy()
    assert got is not None
    ref = _reference(x.astype(np.float64), pos.astype(np.float64), n_dims, 10000.0, mode, secs)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(x).max())
