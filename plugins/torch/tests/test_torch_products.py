"""The torch backend's float32 products on the CPU: each route a one-column product can take
(oneDNN's linear for big weights, one batch per thread, a plain ``torch.mm``) gives the
float64 reference within float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("mlplug_torch")

from mlplug import DType
from mlplug_torch import TorchBackend
from mlplug_torch.ops import linalg


@pytest.mark.parametrize(
    ("rows", "k"),
    [
        (4099, 512),  # 8.4 MB: oneDNN's linear (odd rows)
        (1024, 512),  # 2 MB: one batch per thread
        (513, 256),  # small, odd rows: torch.mm
    ],
)
def test_one_column_products_match_float64(
    rows: int, k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes: list[int] = []
    real = linalg._onednn_linear
    monkeypatch.setattr(
        linalg, "_onednn_linear", lambda x, w: routes.append(w.shape[0]) or real(x, w)
    )
    rng = np.random.default_rng(rows)
    w = rng.uniform(-1, 1, size=(rows, k)).astype(np.float32)
    x = rng.uniform(-1, 1, size=k).astype(np.float32)
    big = w.nbytes >= linalg.ONEDNN_BYTES
    assert big == (rows == 4099)
    # the eager routes (compiled one-column products: test_torch_gemv.py)
    with TorchBackend(None, device="cpu", fused_gemv=False) as be, be.new_context() as ctx:
        a = ctx.from_floats(w)
        b = ctx.from_floats(x[None, :])
        out = a.mulmat(ctx, b)
        ctx.compute(out)
        got = out.floats().reshape(-1)
    ref = w.astype(np.float64) @ x.astype(np.float64)
    assert out.dtype == DType.F32 and got.shape == (rows,)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * np.sqrt(k))
    assert routes == ([rows] if big else [])
