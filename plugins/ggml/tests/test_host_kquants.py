"""The host k-quant quantisers (:mod:`mlplug.kquants`, used by cpu_numpy and torch) against
ggml's own: the same bytes, bit for bit, on values that exercise every branch of the searches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("mlplug_ggml")

from mlplug import Backend, BackendParams, DType, new_backend
from mlplug.kquants import KQUANT_TYPES, quantize_kquant


@pytest.fixture(scope="module")
def be() -> Iterator[Backend]:
    with new_backend(None, BackendParams(num_threads=2), backend="ggml") as b:
        yield b


def _ggml_bytes(be: Backend, x: np.ndarray, dtype: DType) -> np.ndarray:
    rows, n = x.shape
    with be.new_context() as ctx:
        q = ctx.from_floats(x.reshape(-1), n, rows).cast(ctx, dtype)
        ctx.forward(q).compute(q)
        raw = q.bytes()
    assert raw is not None
    return np.frombuffer(raw, np.uint8).reshape(rows, -1)


def _rows(seed: int) -> np.ndarray:
    """Super-blocks of many kinds: normal values over 14 decades of scale, all-positive ones,
    sparse ones, a few outliers, values on a coarse grid (ties), constants, zeros, subnormals."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((96, 256)).astype(np.float32)
    x *= np.exp(rng.uniform(-20, 12, (96, 1))).astype(np.float32)
    x[0:8] = np.abs(x[0:8])
    x[8:16][rng.random((8, 256)) < 0.8] = 0
    x[16:24, ::37] *= 60
    x[24:32] = np.round(x[24:32] / np.abs(x[24:32]).max(1, keepdims=True) * 3) / 4
    x[32] = 0
    x[33] = 2.5
    x[34] = -1e-3
    x[35, :16] = 0
    x[36] = 1e-42  # subnormal float32
    x[37, 100] = 1.0  # one value in a block of zeros
    return x


@pytest.mark.parametrize("dtype", sorted(KQUANT_TYPES, key=lambda d: d.name), ids=lambda d: d.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_host_kquants_are_ggmls_bytes_bit_for_bit(be: Backend, dtype: DType, seed: int) -> None:
    x = _rows(seed)
    want = _ggml_bytes(be, x, dtype)
    got = quantize_kquant(x, dtype)
    assert got.shape == want.shape
    differ = np.nonzero(~(got == want).all(1))[0]
    assert differ.size == 0, f"{dtype.name}: super-blocks {differ[:8].tolist()} differ from ggml's"
