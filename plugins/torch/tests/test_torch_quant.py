"""Quantised data in the torch backend: its device dequantisers and quantisers against the host
codecs (casts through quantised types are the conformance catalogue's ``cast-*`` cases)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("mlplug_torch")

import torch

from mlplug import DType, NotSupportedError, quants
from mlplug_torch import TorchBackend
from mlplug_torch.quant import can_quantize, dequantize, quantize


def _random_blocks(dtype: DType, n: int, rng: np.random.Generator) -> np.ndarray:
    tr = dtype.traits
    raw = rng.integers(0, 256, size=(n, tr.type_size), dtype=np.uint8)
    if dtype in (DType.Q8_0, DType.Q4_0):  # finite f16 scales
        raw[:, :2] = rng.uniform(-2, 2, size=(n, 1)).astype(np.float16).view(np.uint8)
    if dtype == DType.MXFP4:
        raw[:4, 0] = (0, 1, 2, 254)  # subnormal, smallest and large exponents
    return raw


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # MXFP4 exponent 254 -> inf
@pytest.mark.parametrize("dtype", [DType.Q8_0, DType.Q4_0, DType.MXFP4, DType.Q4_1, DType.Q6_K])
def test_dequantize_matches_the_host_codec(dtype: DType) -> None:
    """Device (or host-fallback) dequantisation equals mlplug.quants bit for bit."""
    rng = np.random.default_rng(3)
    raw = _random_blocks(dtype, 24, rng)
    if dtype == DType.Q6_K:  # keep the f16 super-block scale finite
        raw[:, -2:] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    ref = quants.dequantize(raw.reshape(2, -1), dtype)
    got = dequantize(torch.from_numpy(raw).reshape(2, 12, -1), dtype).numpy()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dtype", [DType.Q8_0, DType.Q4_0, DType.MXFP4, DType.Q5_1])
def test_quantize_matches_the_host_codec(dtype: DType) -> None:
    """Quantising on write gives the bytes of mlplug.quants.quantize."""
    v = np.random.default_rng(4).uniform(-3, 3, size=(3, 64)).astype(np.float32)
    got = quantize(torch.from_numpy(v), dtype)
    assert got.shape == (3, 2, dtype.traits.type_size)
    assert got.numpy().tobytes() == quants.quantize(v, dtype).tobytes()


def test_k_quant_targets_are_unsupported() -> None:
    """Writing a k-quant needs a quantiser the host codecs lack: NotSupportedError at build."""
    assert not can_quantize(DType.Q4_K) and can_quantize(DType.Q8_0)
    with TorchBackend(None, device="cpu") as be, be.new_context() as ctx:
        x = ctx.input().zeros(DType.F32, 256)
        with pytest.raises(NotSupportedError, match="Q4_K"):
            x.cast(ctx, DType.Q4_K)
