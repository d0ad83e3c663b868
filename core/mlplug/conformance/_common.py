"""Helpers shared by the case families: ids, the tolerance families, small builders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ..dtypes import DType
from . import reference as R
from .case import Arg, Build, Case, Reference, Tolerance

if TYPE_CHECKING:
    from ..tensor import Tensor

F32, F16, BF16, I32 = DType.F32, DType.F16, DType.BF16, DType.I32
Q8_0, Q4_0, MXFP4 = DType.Q8_0, DType.Q4_0, DType.MXFP4
#: Block-quantised types with a gguf quantiser (inputs can be drawn as realistic blocks).
QUANTS: Final = (DType.Q8_0, DType.Q4_0, DType.MXFP4, DType.Q4_1, DType.Q5_0, DType.Q5_1)
#: k-quants (256-element super-blocks); inputs are random blocks with scaled f16 fields.
K_QUANTS: Final = (DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K)

# -- tolerance families: per dtype and op family; this module is where they are defined ----------
EXACT: Final = Tolerance(ulp=0)
ULP1: Final = Tolerance(ulp=1)
TRANSCENDENTAL: Final = {
    F32: Tolerance(nmse=1e-10, atol=1e-6, rtol=1e-5),
    F16: Tolerance(nmse=1e-6, atol=1e-3, rtol=1e-3),
}
GELU: Final = Tolerance(nmse=1e-6, atol=2e-3, rtol=2e-3)
MULMAT_F16: Final = Tolerance(nmse=1e-6)
MULMAT_BF16: Final = Tolerance(nmse=1e-6)
#: Quantised products, against a reference that quantises the activations as ggml's CPU does:
#: NMSE plus the per-element bound ``DOT_REL * sum |a_k y_k|`` each case carries (float32
#: rounding of the dot product; the Q8_1 sum field for Q4_1 / Q5_1).
MULMAT_QUANT: Final = Tolerance(nmse=1e-10)
#: Q4_1 / Q5_1 products: ggml adds each block's offset times the activations' f16-rounded sum
#: (the Q8_1 ``s`` field), an error of up to 2^-10 of that term which the reference does not
#: model. Its share of an output depends on how much the output cancels, so an NMSE budget
#: would be a guess: these products are held to the per-element bound alone, which models it.
MULMAT_Q8_1: Final = Tolerance()
#: ``mulmat_full_prec`` of f32 / f16: float32 grade, a per-element bound of
#: ``FULL_PREC_REL * sum |a_k b_k|`` and NMSE 1e-12 (a product rounded to f16 fails it).
FULL_PREC_REL: Final = 4e-6
MULMAT_FULL_PREC: Final = Tolerance(nmse=1e-12)


def exact(dtype: DType) -> Tolerance:
    """Exact ops: bit for bit in F32 and integers, at most 1 ulp for 16-bit float results."""
    return ULP1 if dtype in (F16, BF16) else EXACT


def rows_tol(scale: float = 1.0) -> Tolerance:
    """Row reductions and normalisations: rtol 1e-5, atol 1e-6 * row scale, NMSE 1e-10."""
    return Tolerance(nmse=1e-10, atol=1e-6 * scale, rtol=1e-5)


def mulmat_f32(k: int) -> Tolerance:
    """F32 matrix products of inputs in [-1, 1]: NMSE 1e-8, max_abs 1e-5 * K."""
    return Tolerance(nmse=1e-8, atol=1e-5 * k)


def dequant_tol(dtype: DType) -> Tolerance:
    """Dequantised values vs gguf's dequantisation: exact where a value is one product ``q*d``
    (it is representable), at most 1 ulp for the formulas with a second term (``+ m``)."""
    single = (F32, F16, BF16, I32, DType.Q8_0, DType.Q4_0, DType.MXFP4, DType.Q5_0)
    return EXACT if dtype in single else Tolerance(ulp=1)


def mulmat_tol(dtype: DType, k: int) -> Tolerance:
    """Tolerance of a matrix product with a left operand of ``dtype`` and contraction ``k``."""
    if dtype == F32:
        return mulmat_f32(k)
    if dtype == F16:
        return MULMAT_F16
    if dtype == BF16:
        return MULMAT_BF16
    if dtype in (DType.Q4_1, DType.Q5_1):
        return MULMAT_Q8_1
    return MULMAT_QUANT


def sx(ne: Sequence[int]) -> str:
    """Format a ggml shape for a case id: ``4x3x2``."""
    return "x".join(str(n) for n in ne)


def lbl(dtype: DType) -> str:
    """Lower-case dtype label: ``f32``, ``q8_0``."""
    return dtype.name.lower()


def max_abs(*arrays: np.ndarray) -> float:
    """Largest magnitude over arrays (for bounds scaled by ``max|x|``)."""
    return max(float(np.max(np.abs(a))) if np.size(a) else 0.0 for a in arrays)


def scaled_bound(factor: float, which: int = 0) -> Callable[..., np.ndarray]:
    """Return ``bound(*ops)``: a constant ``factor * max|ops[which]|`` bound (one output)."""

    def bound(*ops: np.ndarray) -> np.ndarray:
        return np.asarray(factor * max_abs(ops[which]))

    return bound


def f16_ref(fn: Callable[..., np.ndarray], round_args: Sequence[int]) -> Callable[..., np.ndarray]:
    """Wrap a reference so the operands at ``round_args`` are first rounded to float16."""

    def ref(*ops: np.ndarray) -> np.ndarray:
        return fn(*(R.f16(o) if i in round_args else o for i, o in enumerate(ops)))

    return ref


def stride_check(
    dim: int, expected: Callable[..., int]
) -> Callable[[Sequence[Tensor]], str | None]:
    """Return a metadata check that output 0 has ``Stride(dim) == expected(output)``."""

    def check(outs: Sequence[Tensor]) -> str | None:
        t = outs[0]
        want = expected(t)
        got = t.stride(dim)
        return None if got == want else f"Stride({dim}) is {got}, expected {want}"

    return check


def shape_check(*shapes: tuple[int, ...]) -> Callable[[Sequence[Tensor]], str | None]:
    """Return a metadata check that the outputs' ``shape`` (trimmed, ggml order) are ``shapes``."""

    def check(outs: Sequence[Tensor]) -> str | None:
        got = tuple(tuple(o.shape) for o in outs)
        return None if got == shapes else f"shapes are {list(got)}, expected {list(shapes)}"

    return check


def arange_arg(ne: tuple[int, ...]) -> Arg:
    """A fixed input holding ``0, 1, 2, ...`` in ggml order (worked examples start from it)."""
    return Arg(ne, gen="fixed", values=tuple(float(i) for i in range(int(np.prod(ne)))))


def data_case(
    op: str,
    tag: str,
    args: tuple[Arg, ...],
    build: Build,
    ref: Reference,
    dtype: DType = F32,
    **kw: Any,
) -> Case:
    """An exact data-movement case ``<op>-<dtype>-<tag>``; quantised data compares raw blocks."""
    raw = dtype.is_quantized
    return Case(
        f"{op}-{lbl(dtype)}-{tag}",
        op,
        args,
        build,
        ref,
        EXACT,
        dtype=lbl(dtype),
        out_dtype=dtype,
        raw_ref=raw,
        **kw,
    )
