"""KV caches as a model meets them: cells, masks (causal, sliding window), dtypes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import mlplug as ml
from mlplug.kvcache import CausalCache, WrapperCache
from mlplug.registry import manager

pytestmark = pytest.mark.skipif(
    "cpu_numpy" not in [e.name for e in manager().backends()], reason="cpu_numpy not installed"
)


@pytest.fixture
def be() -> ml.Backend:
    """A cpu_numpy backend without a model."""
    return ml.new_backend(None, backend="cpu_numpy")


def mask_of(cache: CausalCache, be: ml.Backend, positions: list[int]) -> np.ndarray:
    """Begin a pass at ``positions`` and return its mask as ``(T, L)`` booleans (True: seen)."""
    with be.new_context() as ctx:
        cache.begin(ctx, positions)
        mask = cache._mask
        assert mask is not None
        ctx.compute(mask)
        values = mask.floats()
    assert values is not None
    return np.isfinite(values.reshape(len(positions), -1))


def held(cache: CausalCache, seen: np.ndarray) -> list[list[int]]:
    """Return, per query row, the positions of the cells it may see."""
    return [sorted(int(cache.cell_pos[j]) for j in np.flatnonzero(row)) for row in seen]


def test_sliding_window_sees_exactly_w_keys(be: ml.Backend) -> None:
    """Window W: the query at p sees p-W+1 … p, in one batch and across later steps."""
    cache = CausalCache(be, [0], head_dim=4, head_count_kv=1, num_ctx=64, window=3, max_batch=4)
    assert cache.cells == 7  # W + max_batch
    assert held(cache, mask_of(cache, be, [0, 1, 2, 3])) == [[0], [0, 1], [0, 1, 2], [1, 2, 3]]
    assert held(cache, mask_of(cache, be, [4, 5])) == [[2, 3, 4], [3, 4, 5]]
    for p in range(6, 20):  # the ring wraps and keeps working
        assert held(cache, mask_of(cache, be, [p])) == [[p - 2, p - 1, p]]
    cache.close()


def test_causal_cache_sees_all_earlier_positions(be: ml.Backend) -> None:
    """Without a window a query sees every cached position up to its own; reset forgets."""
    cache = CausalCache(be, [0, 1], head_dim=4, head_count_kv=2, num_ctx=10)
    assert cache.dtype == ml.DType.F16 and cache.capacity == 10
    assert held(cache, mask_of(cache, be, [0, 1, 2])) == [[0], [0, 1], [0, 1, 2]]
    assert held(cache, mask_of(cache, be, [3])) == [[0, 1, 2, 3]]
    cache.reset()
    assert held(cache, mask_of(cache, be, [0])) == [[0]]
    cache.close()


def test_wrapper_routes_layers(be: ml.Backend) -> None:
    """The wrapper sends each layer to its cache and reports the smaller capacity."""
    local = CausalCache(
        be, [0], head_dim=4, head_count_kv=1, num_ctx=16, window=2, max_batch=2, history_bucket=1
    )
    full = CausalCache(
        be, [1], head_dim=4, head_count_kv=1, num_ctx=16, max_batch=2, history_bucket=1
    )
    both = WrapperCache([local, full], lambda layer: layer)
    assert both.capacity == 16 and both.max_batch == 2
    with be.new_context() as ctx:
        for start in (0, 2, 4):
            both.begin(ctx, [start, start + 1])
        k = ctx.from_floats(np.arange(8, dtype=np.float32), 4, 1, 2)
        keys, _, mask = both.put(ctx, 1, k, k)
        assert keys.shape == (4, 1, 6) and mask.shape == (6, 2)  # global: positions 0…5
        keys, _, mask = both.put(ctx, 0, k, k)
        assert keys.shape == (4, 1, 4) and mask.shape == (4, 2)  # the ring: W + batch cells
    both.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": ml.DType.Q8_0}, "f16 or f32"),
        ({"num_ctx": 0}, "positive"),
        ({"window": 0}, "positive"),
    ],
)
def test_bad_cache_settings(be: ml.Backend, kwargs: dict[str, object], match: str) -> None:
    """A quantised cache dtype or a non-positive size is a ShapeError naming it."""
    args: dict[str, object] = {"head_dim": 4, "head_count_kv": 1, "num_ctx": 8, **kwargs}
    with pytest.raises(ml.ShapeError, match=match):
        CausalCache(be, [0], **args)  # type: ignore[arg-type]


def test_bad_positions(be: ml.Backend) -> None:
    """Positions past the context, or a batch larger than max_batch, are ShapeErrors."""
    cache = CausalCache(be, [0], head_dim=4, head_count_kv=1, num_ctx=8, max_batch=4)
    with be.new_context() as ctx:
        with pytest.raises(ml.ShapeError, match=r"\[0, 8\)"):
            cache.begin(ctx, [7, 8])
        with pytest.raises(ml.ShapeError, match="1 to 4 tokens"):
            cache.begin(ctx, [0, 1, 2, 3, 4])
    cache.close()
