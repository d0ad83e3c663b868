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
from mlplug_torch.ops.linalg import TORCH_DECODED, decode_tile
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


@pytest.mark.parametrize(
    "dtype",
    [DType.Q8_0, DType.Q4_0, DType.MXFP4, DType.Q5_1, DType.Q2_K, DType.Q4_K, DType.Q6_K],
    ids=lambda d: d.name,
)
def test_quantize_matches_the_host_codec(dtype: DType) -> None:
    """Quantising on write gives the bytes of mlplug.quants.quantize (k-quants included)."""
    v = np.random.default_rng(4).uniform(-3, 3, size=(3, 512)).astype(np.float32)
    got = quantize(torch.from_numpy(v), dtype)
    assert got.shape == (3, 512 // dtype.traits.block_size, dtype.traits.type_size)
    assert got.numpy().tobytes() == quants.quantize(v, dtype).tobytes()


def test_a_target_without_host_quantiser_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every quantised dtype has a host quantiser today; one without would be NotSupportedError
    at build, naming it (the path a new block type takes until it gets one)."""
    assert can_quantize(DType.Q4_K) and can_quantize(DType.Q8_0)
    monkeypatch.setattr("mlplug_torch.quant.can_quantize", lambda d: d != DType.Q4_K)
    with TorchBackend(None, device="cpu") as be, be.new_context() as ctx:
        x = ctx.input().zeros(DType.F32, 256)
        with pytest.raises(NotSupportedError, match=r"Q4_K.*no host quantiser"):
            x.cast(ctx, DType.Q4_K)


@pytest.mark.parametrize("weight", [DType.Q4_0, DType.Q4_K])
def test_activation_rounding_matches_ggml(weight: DType) -> None:
    """The activations a quantised product sees (Q8_0 / Q8_K) equal the reference quantiser's
    bit for bit: the scale ``127 / amax`` is one float32 division, not torch's
    ``reciprocal * 127`` (an ulp off in a quarter of blocks, which moved single values by one
    step and failed the k-quant products of the full conformance tier at seeds 2-6)."""
    from mlplug.conformance.refquants import dot_activations
    from mlplug_torch.ops.linalg import q8_0_round, q8_k_round

    x = np.random.default_rng(14).uniform(-1, 1, size=(64, 4096)).astype(np.float32)
    # a super-block from seed 2: 0x1.a049bcp-1 * (-127 / -0x1.fecebcp-1) is 103.49999 in
    # float32 (q = 103); with the twice-rounded scale it is exactly 103.5 (q = 104)
    x[0, :256] = 0.0
    x[0, 0], x[0, 1] = float.fromhex("-0x1.fecebcp-1"), float.fromhex("0x1.a049bcp-1")
    rnd = q8_k_round if weight == DType.Q4_K else q8_0_round
    got = rnd(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, dot_activations(x, weight).astype(np.float32))


@pytest.mark.parametrize("dtype", sorted(TORCH_DECODED, key=lambda d: d.name))
def test_tiles_torch_decodes_equal_the_core_decoders_bit_for_bit(dtype: DType) -> None:
    """Random bytes (special scale values included) decode to the same float32 bits; a NaN
    stays a NaN (the CPU's half conversion quiets a signalling NaN's payload, numpy's integer
    widening keeps it)."""
    from mlplug.plugin_api import TRAITS, decode_rows

    rng = np.random.default_rng(5)
    k, rows = 512, 70
    tr = TRAITS[dtype]
    raw = rng.integers(0, 256, (rows, k // tr.block_size * tr.type_size), dtype=np.uint8)
    # where the first block's f16 scale (or value) is
    at = {DType.Q6_K: 208, DType.Q2_K: 80, DType.Q3_K: 108}.get(dtype, 0)
    raw[0, at : at + 2] = (0x80, 0x7F) if dtype == DType.BF16 else (0x00, 0x7C)  # +inf
    if dtype == DType.MXFP4:  # no NaN: the largest exponent with code 12 overflows to inf
        raw[0, :2] = (255, 0x77)
    want = decode_rows(raw, dtype, k)
    blocks = torch.from_numpy(raw)
    if dtype in (DType.F16, DType.BF16):
        blocks = blocks.view(torch.float16 if dtype == DType.F16 else torch.bfloat16)
    else:
        blocks = blocks.reshape(rows, k // tr.block_size, tr.type_size)
    got = decode_tile(blocks, dtype).numpy()
    assert got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    assert (nan.any() or dtype == DType.MXFP4) and np.isinf(want).any()  # special values drawn


@pytest.mark.parametrize("dtype", [DType.Q8_0, DType.Q4_0, DType.Q5_0])
@pytest.mark.parametrize(("rows", "blocks"), [(7, 5), (2100, 40)])
def test_integer_column_products_match_the_reference_dot(
    dtype: DType, rows: int, blocks: int
) -> None:
    """One-column products taken in integers (``torch._int_mm`` against block-diagonal quants)
    equal the reference: the core's decoded weights times the Q8_0-rounded column, in float64.
    (2100, 40) crosses a row tile and three block chunks; a zero block tests ``amax == 0``."""
    from mlplug.conformance.refquants import dot_activations
    from mlplug.plugin_api import TRAITS, decode_rows
    from mlplug_torch.ops.intdot import Column, int_column, int_mm_works

    if not int_mm_works():
        pytest.skip("this torch has no CPU torch._int_mm")
    rng = np.random.default_rng(21)
    size = TRAITS[dtype].type_size
    raw = rng.integers(0, 256, (rows, blocks, size), dtype=np.uint8)
    raw[..., :2] = rng.uniform(-0.1, 0.1, (rows, blocks, 1)).astype(np.float16).view(np.uint8)
    x = rng.uniform(-1, 1, blocks * 32).astype(np.float32)
    x[32:64] = 0.0
    want = decode_rows(raw.reshape(rows, -1), dtype, blocks * 32).astype(np.float64) @ (
        dot_activations(x[None], dtype)[0].astype(np.float64)
    )
    got = int_column(torch.from_numpy(raw), dtype, Column(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
