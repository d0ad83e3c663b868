"""Matrix ops: mulmat (and its full-precision / expert forms), add_id, diag, tri, solve_tri."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from .._tensorbase import TensorBase, as_tensor
from ..dtypes import DType
from ..errors import DTypeError, NotSupportedError
from ._build import (
    F16,
    F32,
    F32_ONLY,
    I32_ONLY,
    contiguous,
    node,
    packed_dim0,
    require,
    require_dtype,
    shape_error,
)
from .records import MulmatParams, TriParams

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

#: Left-operand dtypes a matrix product accepts (floats and every block-quantised type).
_MULMAT_LEFT = frozenset(d for d in DType if d.is_quantized) | {DType.F32, DType.F16, DType.BF16}


#: The parameter records of the two precisions (made once: a product is built often).
_PRECISION = {p: MulmatParams(p) for p in ("default", "f32")}


def _mulmat_operands(op: str, ctx: Context, t: Tensor, t2: Tensor) -> tuple[Tensor, Tensor]:
    require_dtype(op, t, _MULMAT_LEFT, "left operand")
    if not (t2.dtype == F32 or (t2.dtype == F16 and t.dtype == F16)):
        msg = (
            f"{op}: right operand has dtype {t2.dtype.name}; it must be F32 "
            f"(or F16 with an F16 left operand), left is {t.dtype.name}"
        )
        raise DTypeError(msg, op=op, dtypes=(t.dtype, t2.dtype))
    if t.ne[0] != t2.ne[0]:
        raise shape_error(op, "dim 0 (the contracted dimension) must match", t, t2)
    if t.is_transposed() or not t._dim0_packed():
        t = t.contiguous(ctx)
    return t, packed_dim0(ctx, t2)


def mulmat(ctx: Context, t: Tensor, t2: Tensor, prec: Literal["default", "f32"]) -> Tensor:
    """Build ``t2 @ t^T`` batched (the shared body of mulmat and mulmat_full_prec)."""
    op = "mulmat" if prec == "default" else "mulmat_full_prec"
    t, t2 = _mulmat_operands(op, ctx, t, t2)
    a, b = t.ne, t2.ne
    if b[2] % a[2] or b[3] % a[3]:
        msg = "batch dims 2 and 3 of the right operand must be multiples of the left's"
        raise shape_error(op, msg, t, t2)
    return node(ctx, "mulmat", (t, t2), F32, (a[1], b[1], b[2], b[3]), _PRECISION[prec])


class LinalgOps(TensorBase):
    """Matrix-product and matrix-construction Tensor methods."""

    __slots__ = ()

    def mulmat(self, ctx: Context, t2: Tensor) -> Tensor:
        """Return the matrix product with vectors along dim 0 of both: ``t2 @ self^T``.

        ``self`` is ``[K, M, A2, A3]`` (the weight), ``t2`` is ``[K, N, B2, B3]``; the F32 result
        is ``[M, N, B2, B3]``. Batches of ``self`` serve consecutive groups of ``t2``'s.

        >>> w = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2)
        >>> x = ctx.from_floats([1, 0, 1, 0, 1, 0], 3, 2)
        >>> y = w.mulmat(ctx, x)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((2, 2), [4.0, 10.0, 2.0, 5.0])

        :raises ShapeError: if dim 0 differs or the batch dims do not divide.
        """
        return mulmat(ctx, as_tensor(self), t2, "default")

    def mulmat_full_prec(self, ctx: Context, t2: Tensor) -> Tensor:
        """Like :meth:`mulmat`, accumulating in at least float32 on every device.

        >>> a = ctx.arange(0, 4, 1, DType.F32)
        >>> b = ctx.arange(0, 12, 1, DType.F32).reshape(ctx, 4, 3)
        >>> y = a.mulmat_full_prec(ctx, b)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((1, 3), [14.0, 38.0, 62.0])
        """
        return mulmat(ctx, as_tensor(self), t2, "f32")

    def mulmat_id(self, ctx: Context, t2: Tensor, ids: Tensor) -> Tensor:
        """Return per-token expert products: ``out[r,u,t] = sum_k self[k,r,ids[u,t]] t2[k,u%B1,t]``.

        ``self`` is ``[K, R, E]`` (experts), ``t2`` is ``[K, B1, T]`` and ``ids`` I32 ``[U, T]``.

        >>> experts = ctx.from_floats([1, 0, 0, 1, 1, 1], 2, 1, 3)
        >>> x = ctx.from_floats([2, 3, 5, 7], 2, 1, 2)
        >>> ids = ctx.from_ints([2, 0, 1, 2], 2, 2)
        >>> y = experts.mulmat_id(ctx, x, ids)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((1, 2, 2), [5.0, 2.0, 7.0, 12.0])
        """
        op = "mulmat_id"
        t, x = _mulmat_operands(op, ctx, as_tensor(self), t2)
        require_dtype(op, ids, I32_ONLY, "ids")
        require(t.ne[3] == 1 and x.ne[3] == 1, op, "experts and activations must be 3-D", t, x)
        require(ids.ne[2] == 1 and ids.ne[3] == 1, op, "ids must be 2-D [U, T]", ids)
        require(ids.ne[1] == x.ne[2], op, "ids dim 1 must equal activations dim 2 (tokens)", ids, x)
        require(
            ids.ne[0] % x.ne[1] == 0,
            op,
            "ids dim 0 must be a multiple of activations dim 1",
            ids,
            x,
        )
        return node(ctx, "mulmat_id", (t, x, ids), DType.F32, (t.ne[1], ids.ne[0], x.ne[2], 1))

    def add_id(self, ctx: Context, t2: Tensor, ids: Tensor) -> Tensor:
        """Return ``self[i,u,t] + t2[i, ids[u,t]]`` (a per-expert bias).

        >>> experts = ctx.from_floats([1, 0, 0, 1, 1, 1], 2, 1, 3)
        >>> x = ctx.from_floats([2, 3, 5, 7], 2, 1, 2)
        >>> ids = ctx.from_ints([2, 0, 1, 2], 2, 2)
        >>> bias = ctx.from_floats([100, 200, 300], 1, 3)
        >>> y = experts.mulmat_id(ctx, x, ids).add_id(ctx, bias, ids)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((1, 2, 2), [305.0, 102.0, 207.0, 312.0])
        """
        op = "add_id"
        require_dtype(op, self, F32_ONLY)
        require_dtype(op, t2, F32_ONLY, "bias")
        require_dtype(op, ids, I32_ONLY, "ids")
        require(self.ne[0] == t2.ne[0], op, "dim 0 of input and bias must match", self, t2)
        ok = self.ne[1] == ids.ne[0] and self.ne[2] == ids.ne[1]
        require(ok, op, "ids must be [input dim 1, input dim 2]", self, ids)
        t, b = packed_dim0(ctx, as_tensor(self)), packed_dim0(ctx, t2)
        return node(ctx, "add_id", (t, b, ids), DType.F32, t.ne)

    def diag(self, ctx: Context) -> Tensor:
        """Put each dim-0 vector ``[n, 1, ...]`` on a diagonal ``[n, n, ...]``.

        >>> y = ctx.from_floats([1, 2, 3], 3).diag(ctx)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((3, 3), [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0])
        """
        require_dtype("diag", self, F32_ONLY)
        require(self.ne[1] == 1, "diag", "input must have dim 1 of size 1", self)
        t = packed_dim0(ctx, as_tensor(self))
        return node(ctx, "diag", (t,), t.dtype, (t.ne[0], t.ne[0], t.ne[2], t.ne[3]))

    def tri(self, ctx: Context, tri_type: int) -> Tensor:
        """Keep one triangle of each square matrix: 0 upper+diag, 1 upper, 2 lower+diag, 3 lower.

        >>> a = ctx.from_floats([1, 2, 3, 4, 5, 6, 7, 8, 9], 3, 3)
        >>> upper, strict_lower = a.tri(ctx, 0), a.tri(ctx, 3)
        >>> ctx.compute(upper, strict_lower)
        >>> upper.to_numpy().tolist()
        [[1.0, 2.0, 3.0], [0.0, 5.0, 6.0], [0.0, 0.0, 9.0]]
        >>> strict_lower.to_numpy().tolist()
        [[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [7.0, 8.0, 0.0]]
        """
        require_dtype("tri", self, F32_ONLY)
        require(self.ne[0] == self.ne[1], "tri", "matrices must be square (dim 0 == dim 1)", self)
        if tri_type not in (0, 1, 2, 3):
            raise NotSupportedError(ctx.backend.name, "tri", f"triangle type {tri_type} (0..3)")
        t = contiguous(ctx, as_tensor(self))
        return node(ctx, "tri", (t,), t.dtype, t.ne, TriParams(int(tri_type)))

    def solve_tri(
        self, ctx: Context, b: Tensor, lower: bool, left: bool, unit_diag: bool
    ) -> Tensor:
        """Solve ``self @ X = b`` for lower-triangular ``self`` ``[n, n]``; ``b`` is ``[k, n]``.

        >>> a = ctx.from_floats([2, 0, 1, 4], 2, 2)
        >>> b = ctx.from_floats([4, 2, 6, 9], 2, 2)
        >>> x = a.solve_tri(ctx, b, True, True, False)
        >>> ctx.compute(x)
        >>> x.shape, x.floats().tolist()
        ((2, 2), [2.0, 1.0, 1.0, 2.0])

        :raises NotSupportedError: unless ``lower and left and not unit_diag``.
        """
        op = "solve_tri"
        if not (lower and left and not unit_diag):
            reason = "only lower=True, left=True, unit_diag=False is supported (as in ggml)"
            raise NotSupportedError(ctx.backend.name, op, reason)
        require_dtype(op, self, F32_ONLY, "A")
        require_dtype(op, b, F32_ONLY, "b")
        a = as_tensor(self)
        require(a.ne[0] == a.ne[1] == b.ne[1], op, "A must be [n, n] and b [k, n]", a, b)
        require(a.ne[2:] == b.ne[2:], op, "batch dims of A and b must be equal", a, b)
        a, b = contiguous(ctx, a), contiguous(ctx, b)
        return node(ctx, "solve_tri", (a, b), DType.F32, b.ne)
