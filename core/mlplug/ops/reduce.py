"""Row reductions and normalisations along dim 0, cumulative sum, and sorting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._tensorbase import TensorBase, as_tensor
from ..dtypes import DType
from ._build import (
    F32,
    F32_ONLY,
    as_int,
    contiguous,
    node,
    packed_dim0,
    require,
    require_dtype,
    shape_error,
    view,
)
from .records import NO_PARAMS, ArgsortParams, NormParams, OpParams, ViewParams

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

#: Dtypes argsort and top_k accept.
_SORTABLE = frozenset({DType.F32, DType.I32})


def _row_op(op: str, ctx: Context, t: Tensor, params: OpParams = NO_PARAMS) -> Tensor:
    require_dtype(op, t, F32_ONLY)
    t = packed_dim0(ctx, t)
    return node(ctx, op, (t,), F32, t.ne, params)


def _eps(op: str, eps: float) -> float:
    if not eps >= 0:
        raise shape_error(op, f"eps must be >= 0, got {eps}")
    return float(eps)


class ReduceOps(TensorBase):
    """Tensor methods that work row by row (a row = the dim-0 vector)."""

    __slots__ = ()

    def softmax(self, ctx: Context) -> Tensor:
        """Return the softmax of each row (numerically stable).

        >>> y = ctx.from_floats([1, 2, 3, 1, 1, 1], 3, 2).softmax(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [0.09, 0.2447, 0.6652, 0.3333, 0.3333, 0.3333]
        """
        require_dtype("softmax", self, F32_ONLY)
        t = contiguous(ctx, as_tensor(self))
        return node(ctx, "softmax", (t,), F32, t.ne)

    def l2_norm(self, ctx: Context, eps: float) -> Tensor:
        """Return each row divided by ``max(||row||, eps)``.

        >>> y = ctx.from_floats([3, 4], 2).l2_norm(ctx, 1e-12)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [0.6, 0.8]
        """
        return _row_op("l2_norm", ctx, as_tensor(self), NormParams(_eps("l2_norm", eps)))

    def rms_norm(self, ctx: Context, weight: Tensor | None, eps: float) -> Tensor:
        """Return ``x / sqrt(mean(x^2) + eps)``, times ``weight`` (tiled) when given.

        >>> y = ctx.from_floats([1, 2, 3, 4], 4).rms_norm(ctx, None, 1e-6)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [0.3651, 0.7303, 1.0954, 1.4606]
        """
        y = _row_op("rms_norm", ctx, as_tensor(self), NormParams(_eps("rms_norm", eps)))
        return y if weight is None else y.mul(ctx, weight)

    def layer_norm(
        self, ctx: Context, weight: Tensor | None, bias: Tensor | None, eps: float
    ) -> Tensor:
        """Return ``(x - mean) / sqrt(var + eps)`` per row, then ``* weight + bias``.

        ``bias`` is applied only when ``weight`` is given too: a bias alone is ignored (see
        docs/reduce.md, section 'Norms').

        >>> y = ctx.from_floats([1, 2, 3, 4], 4).layer_norm(ctx, None, None, 0.0)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [-1.3416, -0.4472, 0.4472, 1.3416]
        """
        y = _row_op("norm", ctx, as_tensor(self), NormParams(_eps("layer_norm", eps)))
        if weight is not None:
            y = y.mul(ctx, weight)
            if bias is not None:
                y = y.add(ctx, bias)
        return y

    def sum_rows(self, ctx: Context) -> Tensor:
        """Return the sum of each row: shape ``[1, ne1, ne2, ne3]``.

        >>> y = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2).sum_rows(ctx)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((1, 2), [6.0, 15.0])
        """
        require_dtype("sum_rows", self, F32_ONLY)
        t = packed_dim0(ctx, as_tensor(self))
        return node(ctx, "sum_rows", (t,), t.dtype, (1, *t.ne[1:]))

    def mean(self, ctx: Context) -> Tensor:
        """Return the mean of each row: shape ``[1, ne1, ne2, ne3]``, F32.

        >>> y = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2).mean(ctx)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((1, 2), [2.0, 5.0])
        """
        require_dtype("mean", self, F32_ONLY)
        t = packed_dim0(ctx, as_tensor(self))
        return node(ctx, "mean", (t,), DType.F32, (1, *t.ne[1:]))

    def variance(self, ctx: Context) -> Tensor:
        """Return the population variance of each row (divide by n), shape ``[1, ...]``.

        >>> y = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2).variance(ctx)
        >>> ctx.compute(y)
        >>> y.shape, [round(v, 4) for v in y.floats().tolist()]
        ((1, 2), [0.6667, 0.6667])
        """
        m = self.mean(ctx).scale(ctx, -1.0)
        d = as_tensor(self).add(ctx, m)
        return d.sqr(ctx).sum_rows(ctx).scale(ctx, 1.0 / self.ne[0])

    def stddev(self, ctx: Context) -> Tensor:
        """Return the population standard deviation of each row.

        >>> y = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2).stddev(ctx)
        >>> ctx.compute(y)
        >>> [round(v, 4) for v in y.floats().tolist()]
        [0.8165, 0.8165]
        """
        return self.variance(ctx).sqrt(ctx)

    def cum_sum(self, ctx: Context) -> Tensor:
        """Return the inclusive prefix sum along dim 0 (accumulated in float32).

        >>> y = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2).cum_sum(ctx)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [1.0, 3.0, 6.0, 4.0, 9.0, 15.0]
        """
        return _row_op("cum_sum", ctx, as_tensor(self))

    def argsort(self, ctx: Context) -> Tensor:
        """Return I32 indices sorting each row ascending (tie order unspecified).

        >>> y = ctx.from_floats([0.1, 0.9, 0.5, 0.3], 4).argsort(ctx)
        >>> ctx.compute(y)
        >>> y.dtype.name, y.to_numpy().tolist()
        ('I32', [0, 3, 2, 1])
        """
        require_dtype("argsort", self, _SORTABLE)
        t = contiguous(ctx, as_tensor(self))
        return node(ctx, "argsort", (t,), DType.I32, t.ne, ArgsortParams("asc"))

    def top_k(self, ctx: Context, k: int) -> Tensor:
        """Return the indices of each row's ``k`` largest values, by value descending.

        The result is an I32 view ``[k, ne1, ne2, ne3]`` of a full descending argsort.

        >>> t = ctx.from_floats([0.1, 0.9, 0.5, 0.3, 4, 3, 2, 1], 4, 2)
        >>> k = t.top_k(ctx, 2)
        >>> k.shape, k.stride(1), k.is_contiguous()
        ((2, 2), 16, False)
        >>> y = k.contiguous(ctx)
        >>> ctx.compute(y)
        >>> y.to_numpy().tolist()
        [[1, 2], [0, 1]]
        """
        k = as_int("top_k", "k", k)
        require(1 <= k <= self.ne[0], "top_k", f"k must be in 1..{self.ne[0]}, got {k}", self)
        require_dtype("top_k", self, _SORTABLE)
        t = contiguous(ctx, as_tensor(self))
        s = node(ctx, "argsort", (t,), DType.I32, t.ne, ArgsortParams("desc"))
        ne = (k, s.ne[1], s.ne[2], s.ne[3])
        return view(ctx, "view", s, ne, s.nb, 0, ViewParams(ne, s.nb, 0))
