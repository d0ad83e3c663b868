"""The DType enum (ollama's ``ml.DType`` plus ggml extensions), block sizes, numpy mapping."""

from __future__ import annotations

import enum
from functools import cached_property
from typing import Final, NamedTuple

import numpy as np

__all__ = ["DType", "TypeTraits", "TRAITS", "align_up", "from_ggml_type", "row_size", "nbytes_of"]


class DType(enum.IntEnum):
    """Element type of a tensor.

    Values 0-6 are the members of ollama's ``ml.DType``; the rest are further ggml types this
    project supports as extensions (ollama reports them as OTHER; see :attr:`base`).
    """

    OTHER = 0
    F32 = 1
    F16 = 2
    Q8_0 = 3
    Q4_0 = 4
    I32 = 5
    MXFP4 = 6
    # Extensions (ggml types ollama's ml.DType reports as OTHER).
    BF16 = 7
    Q4_1 = 8
    Q5_0 = 9
    Q5_1 = 10
    Q2_K = 11
    Q3_K = 12
    Q4_K = 13
    Q5_K = 14
    Q6_K = 15
    I8 = 16
    I16 = 17
    I64 = 18
    F64 = 19

    # ollama's Go spellings (DTypeQ80, DTypeQ40).
    Q80 = 3
    Q40 = 4

    # cached on the member: read on every op a graph builds (a property call costs ~3x more)
    @cached_property
    def traits(self) -> TypeTraits:
        """Block size, bytes per block and ggml type id of this dtype."""
        return TRAITS[self]

    @cached_property
    def is_quantized(self) -> bool:
        """Whether values are stored in blocks of more than one element."""
        return TRAITS[self].block_size > 1

    @property
    def base(self) -> DType:
        """This dtype as ollama's ``ml.DType`` reports it: extensions are OTHER.

        >>> DType.Q8_0.base, DType.Q4_K.base
        (<DType.Q8_0: 3>, <DType.OTHER: 0>)
        """
        return self if self <= DType.MXFP4 else DType.OTHER


class TypeTraits(NamedTuple):
    """Storage facts of one dtype."""

    name: str
    ggml_type: int
    block_size: int
    type_size: int
    numpy: np.dtype | None


TRAITS: Final[dict[DType, TypeTraits]] = {
    DType.OTHER: TypeTraits("other", -1, 1, 0, None),
    DType.F32: TypeTraits("f32", 0, 1, 4, np.dtype("<f4")),
    DType.F16: TypeTraits("f16", 1, 1, 2, np.dtype("<f2")),
    DType.Q4_0: TypeTraits("q4_0", 2, 32, 18, None),
    DType.Q4_1: TypeTraits("q4_1", 3, 32, 20, None),
    DType.Q5_0: TypeTraits("q5_0", 6, 32, 22, None),
    DType.Q5_1: TypeTraits("q5_1", 7, 32, 24, None),
    DType.Q8_0: TypeTraits("q8_0", 8, 32, 34, None),
    DType.Q2_K: TypeTraits("q2_k", 10, 256, 84, None),
    DType.Q3_K: TypeTraits("q3_k", 11, 256, 110, None),
    DType.Q4_K: TypeTraits("q4_k", 12, 256, 144, None),
    DType.Q5_K: TypeTraits("q5_k", 13, 256, 176, None),
    DType.Q6_K: TypeTraits("q6_k", 14, 256, 210, None),
    DType.I8: TypeTraits("i8", 24, 1, 1, np.dtype("i1")),
    DType.I16: TypeTraits("i16", 25, 1, 2, np.dtype("<i2")),
    DType.I32: TypeTraits("i32", 26, 1, 4, np.dtype("<i4")),
    DType.I64: TypeTraits("i64", 27, 1, 8, np.dtype("<i8")),
    DType.F64: TypeTraits("f64", 28, 1, 8, np.dtype("<f8")),
    DType.BF16: TypeTraits("bf16", 30, 1, 2, None),
    DType.MXFP4: TypeTraits("mxfp4", 39, 32, 17, None),
}

_BY_GGML: Final[dict[int, DType]] = {t.ggml_type: d for d, t in TRAITS.items() if t.ggml_type >= 0}


def from_ggml_type(type_id: int) -> DType:
    """Return the DType of a ggml type id; OTHER for types mlplug does not know."""
    return _BY_GGML.get(type_id, DType.OTHER)


def row_size(dtype: DType, ne0: int) -> int:
    """Bytes of one row of ``ne0`` elements (``ne0`` must be a multiple of the block size)."""
    t = TRAITS[dtype]
    return t.type_size * (ne0 // t.block_size)


def align_up(n: int, alignment: int) -> int:
    """Return ``n`` rounded up to a multiple of ``alignment``."""
    return n + (-n % alignment)


def nbytes_of(dtype: DType, ne: tuple[int, ...]) -> int:
    """Bytes of a contiguous tensor of ``dtype`` and ggml shape ``ne``."""
    n = row_size(dtype, ne[0]) if ne else 0
    for d in ne[1:]:
        n *= d
    return n
