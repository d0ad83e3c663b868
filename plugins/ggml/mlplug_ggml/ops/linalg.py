"""Matrix kernels: mulmat (default and F32 precision), mulmat_id, add_id, diag, tri, solve_tri."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mlplug.plugin_api import MulmatParams, TriParams

from ._layout import mul_mat_operand
from ._registry import Builder, implements

if TYPE_CHECKING:
    from mlplug import Tensor

#: enum ggml_prec
GGML_PREC_F32: Final = 10


@implements("mulmat", needs=("mul_mat", "mul_mat_set_prec"))
def mulmat(b: Builder, t: Tensor) -> int:
    """``ggml_mul_mat(a, b)``, with ``ggml_mul_mat_set_prec(F32)`` for full precision."""
    ptr: int = b.lib.ggml_mul_mat(b.ctx, mul_mat_operand(b, b.src(t, 0)), b.src(t, 1))
    if MulmatParams.of(t).precision == "f32":
        b.lib.ggml_mul_mat_set_prec(ptr, GGML_PREC_F32)
    return ptr


@implements("mulmat_id", needs=("mul_mat_id",))
def mulmat_id(b: Builder, t: Tensor) -> int:
    """``ggml_mul_mat_id(experts, b, ids)`` (ids checked against the expert count)."""
    return b.lib.ggml_mul_mat_id(b.ctx, b.src(t, 0), b.src(t, 1), b.src(t, 2))  # type: ignore[no-any-return]


@implements("add_id", needs=("add_id",))
def add_id(b: Builder, t: Tensor) -> int:
    """``ggml_add_id(a, bias, ids)`` (ids checked against the bias rows)."""
    return b.lib.ggml_add_id(b.ctx, b.src(t, 0), b.src(t, 1), b.src(t, 2))  # type: ignore[no-any-return]


@implements("solve_tri", needs=("solve_tri",))
def solve_tri(b: Builder, t: Tensor) -> int:
    """``ggml_solve_tri(A, B, left=True, lower=True, uni=False)``, the one variant ggml has."""
    return b.lib.ggml_solve_tri(b.ctx, b.src(t, 0), b.src(t, 1), True, True, False)  # type: ignore[no-any-return]


@implements("diag", needs=("diag",))
def diag(b: Builder, t: Tensor) -> int:
    """``ggml_diag(a)``."""
    return b.lib.ggml_diag(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]


@implements("tri", needs=("tri",))
def tri(b: Builder, t: Tensor) -> int:
    """``ggml_tri(a, type)``."""
    return b.lib.ggml_tri(b.ctx, b.src(t, 0), TriParams.of(t).tri_type)  # type: ignore[no-any-return]
