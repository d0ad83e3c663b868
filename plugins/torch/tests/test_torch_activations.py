"""ggml's f16-table activations by one table lookup equal the rounded formula, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mlplug_torch")

from mlplug.plugin_api import DType  # noqa: E402
from mlplug_torch.ops.elementwise import gelu_ggml, quick_ggml  # noqa: E402


def _samples() -> torch.Tensor:
    """Every 4093rd float32 bit pattern (all signs and exponents), plus the cut's edges."""
    bits = np.arange(0, 1 << 32, 4093, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([10, -10, 9.999, -9.999, 65504, 65520, -65520, 0, -0.0, np.inf, -np.inf])
    return torch.from_numpy(np.concatenate([bits, edges.astype(np.float32)]))


@pytest.mark.parametrize("fn", [gelu_ggml, quick_ggml])
def test_table_lookup_equals_the_rounded_formula(fn: object) -> None:
    x = _samples()
    got = fn(x, DType.F32, True)  # type: ignore[operator]
    want = fn(x, DType.F32, False)  # type: ignore[operator]
    same = (got.view(torch.int32) == want.view(torch.int32)) | (got.isnan() & want.isnan())
    assert bool(same.all()), x[~same][:8]


def test_lookup_keeps_shape() -> None:
    x = torch.linspace(-12, 12, 24).reshape(2, 3, 4)
    assert gelu_ggml(x, DType.F32).shape == x.shape
