"""Tiled products of weights kept as raw GGUF blocks (:mod:`mlplug.quantmm`).

The decoders must give gguf's dequantised values bit for bit (on random bytes, so every scale,
NaN and infinity included); the tiled product must equal the product with the dequantised weight
up to float32 summation order, for every type, odd row counts and batch dimensions.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlplug.dtypes import TRAITS, DType
from mlplug.errors import DTypeError, ShapeError
from mlplug.quantmm import FAST_TYPES, decode_rows, dot_rounding, mulmat_rows, row_tiles
from mlplug.quants import dequantize

TYPES = sorted(FAST_TYPES, key=lambda d: d.name)


def random_rows(rng: np.random.Generator, dtype: DType, m: int, k: int) -> np.ndarray:
    """Random bytes of ``m`` rows of ``k`` values (any bit pattern, scales included)."""
    tr = TRAITS[dtype]
    return rng.integers(0, 256, size=(m, k // tr.block_size * tr.type_size), dtype=np.uint8)


def tame_rows(rng: np.random.Generator, dtype: DType, m: int, k: int) -> np.ndarray:
    """Random rows whose f16 scales are small finite numbers (for products)."""
    if dtype == DType.F16:
        return rng.standard_normal((m, k)).astype(np.float16).view(np.uint8)
    if dtype == DType.BF16:
        return (
            (rng.standard_normal((m, k)).astype(np.float32).view(np.uint32) >> 16)
            .astype(np.uint16)
            .view(np.uint8)
        )
    tr = TRAITS[dtype]
    raw = random_rows(rng, dtype, m, k).reshape(m, -1, tr.type_size)
    scales = rng.uniform(1e-3, 1e-2, size=raw.shape[:2]).astype(np.float16)
    offsets = {DType.Q6_K: (208,), DType.Q4_1: (0, 2), DType.Q5_1: (0, 2)}
    offsets |= {DType.Q4_K: (0, 2), DType.Q5_K: (0, 2), DType.Q2_K: (80, 82), DType.Q3_K: (108,)}
    for o in offsets.get(dtype, (0,)):
        raw[..., o : o + 2] = scales.view(np.uint8).reshape(*raw.shape[:2], 2)
    return raw.reshape(m, -1)


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("dtype", TYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("super_blocks", [1, 2, 3, 7, 16])
def test_decoders_equal_gguf_bit_for_bit(dtype: DType, super_blocks: int) -> None:
    rng = np.random.default_rng(super_blocks)
    k = 256 * super_blocks
    for m in (1, 5, 33):
        raw = random_rows(rng, dtype, m, k)
        with np.errstate(all="ignore"):
            want = dequantize(raw, dtype)
        got = decode_rows(raw, dtype, k)
        assert got.shape == (m, k)
        np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.parametrize("dtype", [DType.Q8_0, DType.Q4_0, DType.Q5_1], ids=lambda d: d.name)
def test_decoders_of_32_blocks_take_rows_of_one_block(dtype: DType) -> None:
    raw = random_rows(np.random.default_rng(0), dtype, 3, 32)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(
            bits(decode_rows(raw, dtype, 32)), bits(dequantize(raw, dtype))
        )


def test_decode_takes_void_blocks_and_halves() -> None:
    rng = np.random.default_rng(1)
    raw = tame_rows(rng, DType.Q8_0, 4, 64)
    void = raw.view(np.dtype(("V", 34)))
    np.testing.assert_array_equal(decode_rows(void, DType.Q8_0, 64), dequantize(raw, DType.Q8_0))
    half = rng.standard_normal((3, 8)).astype(np.float16)
    np.testing.assert_array_equal(decode_rows(half, DType.F16, 8), half.astype(np.float32))


def test_decode_into_a_buffer() -> None:
    raw = tame_rows(np.random.default_rng(2), DType.Q4_K, 2, 256)
    buf = np.full((2, 256), np.nan, np.float32)
    assert decode_rows(raw, DType.Q4_K, 256, buf) is buf
    np.testing.assert_array_equal(buf, dequantize(raw, DType.Q4_K))


@pytest.mark.parametrize("dtype", [*TYPES, DType.Q2_K, DType.Q3_K], ids=lambda d: d.name)
@pytest.mark.parametrize(("m", "k"), [(1, 256), (67, 512), (130, 768)])
def test_tiled_product_equals_dequantised_product(dtype: DType, m: int, k: int) -> None:
    rng = np.random.default_rng(m)
    raw = tame_rows(rng, dtype, m, k)
    w = dequantize(raw, dtype) if dtype != DType.F16 else raw.view(np.float16).astype(np.float32)
    if dtype == DType.BF16:
        w = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    for shape in ((k,), (1, k), (5, k), (2, 3, 4, k)):
        x = rng.standard_normal(shape).astype(np.float32)
        # a tile of 64 rows at most: several tiles and a last one that takes the remainder
        got = mulmat_rows(raw, dtype, k, x, tile_bytes=64 * 4 * k)
        want = x @ w.T
        assert got.shape == (*shape[:-1], m)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * float(np.abs(want).max()))


def test_product_into_an_output_array() -> None:
    rng = np.random.default_rng(3)
    raw = tame_rows(rng, DType.Q8_0, 100, 64)
    x = rng.standard_normal((1, 1, 3, 64)).astype(np.float32)
    out = np.zeros((1, 1, 3, 100), np.float32)
    assert mulmat_rows(raw, DType.Q8_0, 64, x, out=out) is out
    np.testing.assert_allclose(out, x @ dequantize(raw, DType.Q8_0).T, rtol=1e-5, atol=1e-5)


def test_tiles_cover_every_row_once_and_none_is_short() -> None:
    raw = tame_rows(np.random.default_rng(4), DType.Q8_0, 200, 32)
    tiles = [(r0, t.shape[0]) for r0, t in row_tiles(raw, DType.Q8_0, 32, tile_bytes=64 * 4 * 32)]
    assert tiles == [(0, 64), (64, 64), (128, 72)]
    wide = [
        t.shape[0] for _, t in row_tiles(raw, DType.Q8_0, 32, tile_bytes=64 * 4 * 32, columns=8)
    ]
    assert wide == [200]  # 8 columns x 32: a tile must hold 2**21 multiply-adds, more than all


def test_bad_input_raises_typed_errors() -> None:
    raw = tame_rows(np.random.default_rng(5), DType.Q8_0, 4, 64)
    with pytest.raises(ShapeError, match="block size 32"):
        decode_rows(raw, DType.Q8_0, 48)
    with pytest.raises(ShapeError, match="whole rows"):
        decode_rows(raw[:, :50], DType.Q8_0, 64)
    with pytest.raises(DTypeError, match="F32"):
        decode_rows(raw, DType.F32, 64)
    with pytest.raises(ShapeError, match="do not end in K = 64"):
        mulmat_rows(raw, DType.Q8_0, 64, np.zeros((2, 32), np.float32))
    with pytest.raises(ShapeError, match="output"):
        mulmat_rows(raw, DType.Q8_0, 64, np.zeros((2, 64), np.float32), out=np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="decode buffer"):
        decode_rows(raw, DType.Q8_0, 64, np.zeros((4, 64), np.float64))


def test_dequantize_mode_from_params_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlplug.errors import ConfigError
    from mlplug.params import DEQUANTIZE_ENV, BackendParams, DequantizeMode, dequantize_mode

    monkeypatch.delenv(DEQUANTIZE_ENV, raising=False)
    assert dequantize_mode(BackendParams()) == DequantizeMode.OFF
    monkeypatch.setenv(DEQUANTIZE_ENV, "F32")
    assert dequantize_mode(BackendParams()) == DequantizeMode.F32
    assert dequantize_mode(BackendParams(dequantize="off")) == DequantizeMode.OFF
    monkeypatch.setenv(DEQUANTIZE_ENV, "f8")
    with pytest.raises(ConfigError, match="MLPLUG_DEQUANTIZE"):
        dequantize_mode(BackendParams())


def test_weight_copies_decode_once_and_free() -> None:
    from mlplug.quantmm import WeightCopies, copy_bytes

    raw = tame_rows(np.random.default_rng(6), DType.Q8_0, 3, 64)
    copies, key = WeightCopies(), object()
    copy = copies.make(key, raw, DType.Q8_0, (64, 3, 1, 1))
    assert copy.shape == (1, 1, 3, 64)
    np.testing.assert_array_equal(copy[0, 0], dequantize(raw, DType.Q8_0))
    assert copies.get(key) is copy
    assert copies.nbytes(key) == copy_bytes(DType.Q8_0, 192) == 768
    copies.discard(key)
    assert copies.get(key) is None and copies.nbytes(key) == 0
    with pytest.raises(DTypeError, match="F32"):
        copies.make(key, raw, DType.F32, (64, 3, 1, 1))


@pytest.mark.parametrize(
    ("weight", "right", "kind"),
    [
        (DType.F16, DType.F32, "f16"),
        (DType.BF16, DType.F32, "bf16"),
        (DType.Q8_0, DType.F32, "q8_0"),
        (DType.Q4_1, DType.F32, "q8_0"),
        (DType.MXFP4, DType.F32, "q8_0"),
        (DType.Q4_K, DType.F32, "q8_k"),
        (DType.Q6_K, DType.F32, "q8_k"),
        (DType.F32, DType.F32, None),
        (DType.F16, DType.F16, None),  # an F16 right operand is taken as it is
        (DType.Q8_0, DType.F16, None),
    ],
)
def test_dot_rounding_names_ggml_vec_dot_type(
    weight: DType, right: DType, kind: str | None
) -> None:
    assert dot_rounding(weight, right) == kind
