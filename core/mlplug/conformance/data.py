"""Input data of the cases: drawing it from a seed, storing it in tensors, and the values it holds.

Every case draws its inputs from ``numpy.random.default_rng([seed, crc32(case id)])``, so a
case's data depends only on the seed and its own id. Quantised inputs are made of valid blocks
(the ``gguf`` package's quantisers for the types that have one, random blocks with scaled
``f16`` fields for k-quants); the reference sees them through its own decoders
(:mod:`.refquants`), so it shares no code with a backend's dequantiser.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as gq

from ..dtypes import TRAITS, DType
from . import refquants
from .case import Arg

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

__all__ = [
    "LAYOUTS",
    "QUANT_LAYOUTS",
    "bf16_bits",
    "bf16_values",
    "case_rng",
    "dequant",
    "draw",
    "make_input",
    "make_tensor",
    "operand",
    "rev",
]

#: Quantised types the gguf package can quantise (used only to draw realistic inputs).
_GGUF_QUANTISABLE = frozenset(
    {DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.MXFP4}
)
#: Byte offsets of the f16 scale fields of a k-quant block (and its size in bytes).
_KQUANT_F16_FIELDS: dict[DType, tuple[int, ...]] = {
    DType.Q2_K: (80, 82),
    DType.Q3_K: (108,),
    DType.Q4_K: (0, 2),
    DType.Q5_K: (0, 2),
    DType.Q6_K: (208,),
}
#: Non-contiguous presentations of an input (``Arg.layout``), see :func:`make_input`.
LAYOUTS: tuple[str, ...] = ("permuted", "gapped", "strided2", "fused")
#: The layouts a block-quantised input can take (whole rows move, blocks are never split).
QUANT_LAYOUTS: tuple[str, ...] = ("fused",)
#: Slots of a ``fused`` buffer (q, k, v side by side) and the one an input occupies.
_FUSED_SLOTS, _FUSED_SLOT = 3, 1
#: Elements of filler before and after each row of a ``gapped`` input.
_GAP_BEFORE, _GAP_AFTER = 2, 1
_NUMPY_STORAGE: dict[DType, str] = {
    DType.F32: "<f4",
    DType.F16: "<f2",
    DType.BF16: "<u2",
    DType.I32: "<i4",
    DType.I64: "<i8",
    DType.I16: "<i2",
    DType.I8: "i1",
}


def rev(ne: tuple[int, ...]) -> tuple[int, ...]:
    """Return a ggml shape reversed: the numpy shape of the same data."""
    return tuple(reversed(ne))


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """Return the generator of one case: depends only on ``seed`` and the case id."""
    return np.random.default_rng([seed, zlib.crc32(case_id.encode())])


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest even) and return the uint16 bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """Return the float64 values of bfloat16 bit patterns."""
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def dequant(rows: np.ndarray, dtype: DType) -> np.ndarray:
    """Dequantise uint8 rows ``(..., row_bytes)`` of ``dtype`` to float64 ``(..., elements)``."""
    return refquants.dequantize(rows, dtype)


def _quant_rows(rng: np.random.Generator, dtype: DType, ne: tuple[int, ...]) -> np.ndarray:
    tr = TRAITS[dtype]
    shape = rev(ne)
    if dtype in _GGUF_QUANTISABLE:
        x = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        qtype = GGMLQuantizationType(tr.ggml_type)
        return np.asarray(gq.quantize(x, qtype), np.uint8)
    fields = _KQUANT_F16_FIELDS.get(dtype)
    if fields is None:
        msg = f"no input generator for {dtype.name}"
        raise ValueError(msg)
    n_blocks = int(np.prod(shape[:-1], dtype=np.int64)) * (ne[0] // tr.block_size)
    blocks = rng.integers(0, 256, (n_blocks, tr.type_size), dtype=np.uint8)

    def set_scales(scale: np.ndarray) -> None:
        half = scale.astype(np.float16).view(np.uint8).reshape(-1, 2)
        for off in fields:
            blocks[:, off : off + 2] = half

    set_scales(np.ones(n_blocks))
    amax = np.abs(dequant(blocks, dtype)).max(axis=-1)
    set_scales(np.where(amax > 0, 1.0 / np.maximum(amax, 1e-30), 1.0))
    return blocks.reshape(*shape[:-1], -1)


def _values(rng: np.random.Generator, a: Arg) -> np.ndarray:
    shape = rev(a.ne)
    n = int(np.prod(shape, dtype=np.int64))
    if a.gen == "fixed":
        if a.values is None:
            msg = "Arg(gen='fixed') needs values"
            raise ValueError(msg)
        return np.asarray(a.values, np.float64).reshape(shape)
    if a.gen == "zeros":
        return np.zeros(shape)
    if a.gen == "uniform":
        return rng.uniform(a.lo, a.hi, shape)
    if a.gen == "magnitude":
        return np.asarray(rng.uniform(a.lo, a.hi, shape) * rng.choice([-1.0, 1.0], shape))
    if a.gen == "distinct":
        step = (a.hi - a.lo) / n
        return (a.lo + step * (rng.permutation(n) + 0.5)).reshape(shape)
    if a.gen == "int":
        return rng.integers(int(a.lo), int(a.hi), shape).astype(np.float64)
    if a.gen == "perm":
        pool = int(a.hi) if a.hi >= a.ne[0] else a.ne[0]
        rows = [rng.permutation(pool)[: a.ne[0]] for _ in range(n // a.ne[0])]
        return np.asarray(rows, np.float64).reshape(shape)
    if a.gen == "mask":  # additive attention mask: 0 or -inf, key 0 always visible
        m = np.where(rng.random(shape) < 0.3, -np.inf, 0.0)
        m[..., 0] = 0.0
        return m
    if a.gen == "causal":  # query row i sees keys 0..i: a prompt over a padded cache
        later = np.arange(shape[-1])[None, :] > np.arange(shape[-2])[:, None]
        causal: np.ndarray = np.broadcast_to(np.where(later, -np.inf, 0.0), shape).copy()
        return causal
    if a.gen == "lower":
        m = rng.uniform(-0.5, 0.5, shape)
        k = a.ne[0]
        diag = rng.uniform(1.0, 2.0, (*shape[:-2], k)) * rng.choice([-1.0, 1.0], (*shape[:-2], k))
        idx = np.arange(k)
        m[..., idx, idx] = diag
        return m
    msg = f"unknown input generator {a.gen!r}"
    raise ValueError(msg)


def draw(rng: np.random.Generator, a: Arg) -> np.ndarray:
    """Draw the stored data of one input: a numpy view in the storage dtype.

    F32 float32, F16 float16, BF16 uint16 bits, integers in their width, quantised types
    uint8 rows ``(ne3, ne2, ne1, row_bytes)`` (as many leading dims as ``a.ne`` has).
    """
    if a.dtype.is_quantized:
        return _quant_rows(rng, a.dtype, a.ne)
    v = _values(rng, a)
    if a.dtype == DType.BF16:
        return bf16_bits(v.astype(np.float32))
    np_dtype = _NUMPY_STORAGE.get(a.dtype)
    if np_dtype is None:
        msg = f"no input generator for {a.dtype.name}"
        raise ValueError(msg)
    return v.astype(np_dtype)


def operand(a: Arg, raw: np.ndarray) -> np.ndarray:
    """Return what a reference sees of one input: float64 values (int64 for integer dtypes)."""
    if a.dtype.is_quantized:
        return dequant(raw, a.dtype)
    if a.dtype == DType.BF16:
        return bf16_values(raw)
    if raw.dtype.kind in "iu":
        return raw.astype(np.int64)
    return raw.astype(np.float64)


def make_tensor(ctx: Context, a: Arg, raw: np.ndarray) -> Tensor:
    """Create the input tensor holding ``raw`` in ``ctx`` (an input context)."""
    if a.dtype == DType.F32:
        return ctx.from_floats(raw.reshape(-1), *a.ne)
    if a.dtype == DType.I32:
        return ctx.from_ints(raw.reshape(-1), *a.ne)
    return ctx.from_bytes(a.dtype, np.ascontiguousarray(raw).tobytes(), *a.ne)


def _filler(raw: np.ndarray) -> float | int:
    """A value no op should ever read from a gap: NaN for floats, a large integer otherwise."""
    if raw.dtype == np.uint16:  # bf16 bits: a quiet NaN
        return 0x7FC0
    if raw.dtype.kind == "f":
        return float("nan")
    return int(np.iinfo(raw.dtype).max // 2)


def make_input(ctx: Context, a: Arg, raw: np.ndarray) -> Tensor:
    """Create input ``a`` holding ``raw`` in ``ctx``, presented in the layout ``a.layout``.

    The tensor handed to the build always has shape ``a.ne`` and the values of ``raw``; only
    its storage differs: ``permuted`` stores dims 0 and 1 swapped and permutes them back,
    ``gapped`` pads every row with filler and slices dim 0, ``strided2`` interleaves filler
    planes along dim 2 and takes every other one, ``fused`` is a ``view`` at a byte offset into
    one buffer holding three tensors side by side, filler where the others would be (like q,
    k and v taken from one projection: along dim 0, or along dim 1 for quantised rows).

    :raises ValueError: an unknown layout, or a block-quantised input in a layout that would
        split its blocks (only ``fused`` moves whole rows).
    """
    if not a.layout:
        return make_tensor(ctx.input(), a, raw)
    if a.layout not in LAYOUTS or (a.dtype.is_quantized and a.layout not in QUANT_LAYOUTS):
        msg = f"layout {a.layout!r} is not available for a {a.dtype.name} input"
        raise ValueError(msg)
    if a.layout == "fused":
        return _fused_view(ctx, a, raw)
    ne = (*a.ne, 1, 1, 1)[:4]
    v = np.asarray(raw).reshape(rev(ne))
    fill = _filler(v)
    if a.layout == "permuted":
        stored = np.ascontiguousarray(np.swapaxes(v, 2, 3))
        back = make_tensor(ctx.input(), replace(a, ne=(ne[1], ne[0], ne[2], ne[3])), stored)
        return back.permute(ctx, 1, 0, 2, 3)
    if a.layout == "gapped":
        stored = np.full((*v.shape[:3], ne[0] + _GAP_BEFORE + _GAP_AFTER), fill, v.dtype)
        stored[..., _GAP_BEFORE : _GAP_BEFORE + ne[0]] = v
        back = make_tensor(ctx.input(), replace(a, ne=rev(stored.shape)), stored)
        return back.slice(ctx, 0, _GAP_BEFORE, _GAP_BEFORE + ne[0], 1)
    stored = np.full((ne[3], 2 * ne[2], ne[1], ne[0]), fill, v.dtype)
    stored[:, 1::2] = v
    back = make_tensor(ctx.input(), replace(a, ne=rev(stored.shape)), stored)
    return back.slice(ctx, 2, 1, 2 * ne[2], 2)


def _fused_view(ctx: Context, a: Arg, raw: np.ndarray) -> Tensor:
    """Input ``a`` as slot 1 of 3 in one buffer (dim 0; dim 1 for quantised rows), by ``view``."""
    ne = (*a.ne, 1, 1, 1)[:4]
    if a.dtype.is_quantized:  # whole rows side by side; 0xFF filler has NaN scales
        rows = np.asarray(raw, np.uint8).reshape(ne[3], ne[2], ne[1], -1)
        stored = np.full((ne[3], ne[2], _FUSED_SLOTS * ne[1], rows.shape[-1]), 0xFF, np.uint8)
        stored[:, :, _FUSED_SLOT * ne[1] : (_FUSED_SLOT + 1) * ne[1]] = rows
        back_ne = (ne[0], _FUSED_SLOTS * ne[1], ne[2], ne[3])
        offset_elems_dim = 1
    else:
        v = np.asarray(raw).reshape(rev(ne))
        stored = np.full((*v.shape[:3], _FUSED_SLOTS * ne[0]), _filler(v), v.dtype)
        stored[..., _FUSED_SLOT * ne[0] : (_FUSED_SLOT + 1) * ne[0]] = v
        back_ne = (_FUSED_SLOTS * ne[0], ne[1], ne[2], ne[3])
        offset_elems_dim = 0
    back = make_tensor(ctx.input(), replace(a, ne=back_ne), stored)
    offset = _FUSED_SLOT * ne[offset_elems_dim] * back.stride(offset_elems_dim)
    return back.view(
        ctx,
        offset,
        ne[0],
        back.stride(1),
        ne[1],
        back.stride(2),
        ne[2],
        back.stride(3),
        ne[3],
    )
