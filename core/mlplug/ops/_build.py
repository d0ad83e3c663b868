"""Helpers every op builder uses: node creation and the shared validation rules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._tensorbase import Shape4, TensorBase, contiguous_strides, tensor_class
from ..dtypes import DType
from ..errors import DTypeError, GraphError, ShapeError
from .records import NO_PARAMS, OpParams

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor


# The members op builders name, as module constants: ``DType.F32`` is a class attribute lookup
# through the enum's metaclass, about 70 ns, on every op of every graph built.
F32 = DType.F32
F16 = DType.F16
I32 = DType.I32
OTHER = DType.OTHER

FLOATS = frozenset({F32, F16})
F32_ONLY = frozenset({F32})
I32_ONLY = frozenset({I32})


def node(
    ctx: Context,
    op: str,
    srcs: tuple[Tensor, ...],
    dtype: DType,
    ne: Iterable[int],
    params: OpParams = NO_PARAMS,
) -> Tensor:
    """Create a new op node with fresh contiguous storage and check the backend can run it."""
    _check_ctx(ctx, srcs, op)
    n0, n1, n2, n3 = ne
    shape = (n0, n1, n2, n3)
    t = tensor_class()(ctx, dtype, shape, contiguous_strides(dtype, shape), op, srcs, params)
    ctx.backend.check_node(t)
    return t


def inplace(
    ctx: Context,
    op: str,
    srcs: tuple[Tensor, ...],
    params: OpParams = NO_PARAMS,
    *,
    into: Tensor | None = None,
) -> Tensor:
    """Create a node whose result overwrites (and aliases) ``into`` (default ``srcs[0]``)."""
    a = srcs[0] if into is None else into
    _check_ctx(ctx, srcs, op)
    root = a.view_src if a.view_src is not None else a
    t = tensor_class()(ctx, a.dtype, a.ne, a.nb, op, srcs, params, root, a.view_offs)
    ctx.backend.check_node(t)
    return t


def view(
    ctx: Context,
    op: str,
    a: Tensor,
    ne: Shape4,
    nb: Shape4,
    offs: int,
    params: OpParams = NO_PARAMS,
    *,
    dtype: DType | None = None,
) -> Tensor:
    """Create a view of ``a``'s storage: ``offs`` bytes past ``a``'s first element."""
    _check_ctx(ctx, (a,), op)
    t = tensor_class()(
        ctx,
        a.dtype if dtype is None else dtype,
        ne,
        nb,
        op,
        (a,),
        params,
        a.view_src if a.view_src is not None else a,
        a.view_offs + offs,
    )
    ctx.backend.check_node(t)
    return t


def _check_ctx(ctx: Context, srcs: tuple[Tensor, ...], op: str) -> None:
    if ctx._shared.closed:
        ctx.check_open()
    for s in srcs:
        sc = s.ctx
        # An operand of ctx itself is on its backend, and ctx is open (checked above).
        if sc is not ctx and (sc.backend is not ctx.backend or sc._shared.closed):
            _foreign_operand(ctx, s, op)


def _foreign_operand(ctx: Context, s: Tensor, op: str) -> None:
    backend = ctx.backend
    sc = s.ctx
    if sc.backend is not backend:
        msg = f"{op}: operand {s!r} belongs to backend {sc.backend.name!r}, not {backend.name!r}"
        raise GraphError(msg)
    msg = f"{op}: operand {s!r} belongs to a closed context"
    raise GraphError(msg)


# -- validation -------------------------------------------------------------------------------
def shape_str(t: TensorBase) -> str:
    """Return ``t``'s shape as a list literal, for messages."""
    return str(list(t.shape))


def require_dtype(op: str, t: TensorBase, allowed: frozenset[DType], what: str = "input") -> None:
    """Raise DTypeError unless ``t.dtype`` is in ``allowed``."""
    if t.dtype not in allowed:
        names = ", ".join(sorted(d.name for d in allowed))
        msg = f"{op}: {what} has dtype {t.dtype.name}, expected one of {names}"
        raise DTypeError(msg, op=op, dtypes=(t.dtype,))


def require(cond: bool, op: str, message: str, *shapes: TensorBase) -> None:
    """Raise ShapeError with ``message`` (and the operands' shapes) unless ``cond``."""
    if not cond:
        raise shape_error(op, message, *shapes)


def shape_error(op: str, message: str, *shapes: TensorBase) -> ShapeError:
    """Return the ShapeError :func:`require` raises (for checks on hot paths: ``if not ...``)."""
    detail = ", ".join(shape_str(s) for s in shapes)
    msg = f"{op}: {message}" + (f" (shapes {detail})" if shapes else "")
    return ShapeError(msg, op=op, shapes=tuple(s.shape for s in shapes))


def require_repeatable(op: str, t: TensorBase, t2: TensorBase) -> None:
    """ggml's tile rule: every extent of ``t2`` divides the matching extent of ``t``."""
    b0, b1, b2, b3 = t2.ne
    if b0 > 0 and b1 > 0 and b2 > 0 and b3 > 0:
        a0, a1, a2, a3 = t.ne
        if not (a0 % b0 or a1 % b1 or a2 % b2 or a3 % b3):
            return
    msg = (
        f"{op}: shape {shape_str(t2)} cannot be tiled onto shape {shape_str(t)} "
        "(each extent of the second operand must divide the first's)"
    )
    raise ShapeError(msg, op=op, shapes=(t.shape, t2.shape))


def require_same_shape(op: str, t: TensorBase, t2: TensorBase) -> None:
    """Raise ShapeError unless both tensors have the same 4-D shape."""
    if t.ne != t2.ne:
        msg = f"{op}: operands must have the same shape, got {shape_str(t)} and {shape_str(t2)}"
        raise ShapeError(msg, op=op, shapes=(t.shape, t2.shape))


def require_dim(op: str, d: int) -> None:
    """Raise ShapeError unless ``d`` is a dimension index 0..3."""
    if not isinstance(d, int) or not 0 <= d < 4:
        msg = f"{op}: invalid dimension {d!r} (expected 0..3)"
        raise ShapeError(msg, op=op)


def pad4(values: Iterable[int]) -> Shape4:
    v = (*values, 1, 1, 1, 1)
    return (v[0], v[1], v[2], v[3])


# -- layout normalisation: make an operand meet a kernel's layout need by copying ----------
def packed_dim0(ctx: Context, t: Tensor) -> Tensor:
    """Return ``t`` if its dim 0 is packed, else a contiguous copy."""
    return t if t._dim0_packed() else t.contiguous(ctx)


def rows_contiguous(ctx: Context, t: Tensor) -> Tensor:
    """Return ``t`` if its rows are contiguous (``contiguous_1``), else a contiguous copy."""
    return t if t.is_rows_contiguous() else t.contiguous(ctx)


def contiguous(ctx: Context, t: Tensor) -> Tensor:
    """Return ``t`` if contiguous, else a contiguous copy."""
    return t if t.is_contiguous() else t.contiguous(ctx)


def as_int(op: str, name: str, v: Any) -> int:
    """Return ``v`` as an int or raise ShapeError naming the parameter."""
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        msg = f"{op}: {name} must be an integer, got {v!r}"
        raise ShapeError(msg, op=op)
    return int(v)
