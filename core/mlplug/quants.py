"""Block (de)quantisation on the host, for backends without native kernels for a type.

A thin layer over the ``gguf`` package's numpy codecs (which follow ggml's reference
quantisers), addressed by :class:`~mlplug.dtypes.DType`, plus exact BF16 conversions and the
k-quant (Q2_K to Q6_K) encoders the package lacks (:mod:`mlplug.kquants`).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as _gq

from .dtypes import TRAITS, DType
from .errors import DTypeError
from .kquants import KQUANT_TYPES, quantize_kquant

__all__ = ["bf16_to_f32", "dequantize", "f32_to_bf16", "quantize"]


def _qtype(dtype: DType) -> GGMLQuantizationType:
    return GGMLQuantizationType(TRAITS[dtype].ggml_type)


def dequantize(raw: np.ndarray, dtype: DType) -> np.ndarray:
    """Return float32 values of quantised rows.

    :param raw: uint8 array ``(..., row_bytes)`` (or void blocks ``(..., n_blocks)``).
    :returns: float32 array ``(..., row_elements)``.
    """
    if raw.dtype.kind == "V":
        raw = np.ascontiguousarray(raw).view(np.uint8).reshape(*raw.shape[:-1], -1)
    if dtype == DType.BF16:
        return bf16_to_f32(np.ascontiguousarray(raw).view("<u2"))
    try:
        return np.asarray(_gq.dequantize(np.ascontiguousarray(raw), _qtype(dtype)), np.float32)
    except (_gq.QuantError, NotImplementedError, ValueError) as exc:
        msg = f"cannot dequantize {dtype.name}: {exc}"
        raise DTypeError(msg, op="dequantize", dtypes=(dtype,)) from exc


def quantize(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Quantise float32 rows ``(..., n)`` to uint8 rows ``(..., row_bytes)``."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == DType.BF16:
        return f32_to_bf16(values).view(np.uint8)
    if dtype in KQUANT_TYPES:  # the gguf package decodes k-quants but does not encode them
        return quantize_kquant(values, dtype)
    try:
        return np.asarray(_gq.quantize(values, _qtype(dtype)), np.uint8)
    except (_gq.QuantError, NotImplementedError, ValueError) as exc:
        msg = f"cannot quantize to {dtype.name}: {exc}"
        raise DTypeError(msg, op="quantize", dtypes=(dtype,)) from exc


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (uint16) to float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 bit patterns (uint16), to nearest even; NaN kept."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded
