"""Human-readable tensor text, numpy style: :func:`dump` and its pure part :func:`format_array`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np

from .dtypes import DType
from .errors import GraphError

if TYPE_CHECKING:
    from .context import Context
    from .tensor import Tensor

__all__ = ["dump", "format_array"]

#: What :func:`dump` returns for a dtype it cannot print.
UNSUPPORTED: Final = "<unsupported>"

_CONVERTED: Final = frozenset({DType.F16, DType.Q8_0, DType.Q4_0})


def _format_float(value: float, precision: int) -> str:
    """Return Go's ``strconv.FormatFloat(value, 'f', precision, 32)``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if precision < 0:  # Go: the shortest text that reads back as the same float32
        return np.format_float_positional(np.float32(value), unique=True, trim="-")
    return f"{value:.{precision}f}"


def format_array(
    values: np.ndarray,
    shape: Sequence[int],
    *,
    is_int: bool,
    precision: int = 4,
    threshold: int = 1000,
    edge_items: int = 3,
) -> str:
    """Return the text :func:`dump` prints for ``values`` laid out with ggml shape ``shape``.

    The outermost dimension is printed first. When there are more than ``threshold`` values, only
    the first and last ``edge_items`` of each dimension are printed, with ``...,`` between them.
    Rows are separated by ``,`` and newlines; each value not starting with ``-`` gets one leading
    space. An empty shape prints as one value.

    :param values: the values in ggml element order (dim 0 fastest), 1-D.
    :param shape: the extents, innermost first (ggml order).
    :param is_int: print integers instead of fixed-point floats.
    :param precision: decimals of a float; a negative value gives the shortest float32 text.
    :param threshold: the most values printed in full.
    :param edge_items: values printed at each end of an elided dimension.
    :returns: the text.
    :raises ValueError: if ``values`` holds fewer than ``product(shape)`` values.
    """
    dims = tuple(reversed(shape)) or (1,)
    total = math.prod(dims)
    flat = np.asarray(values).reshape(-1)
    if flat.size < total:
        msg = f"format_array: shape {tuple(shape)} needs {total} values, got {flat.size}"
        raise ValueError(msg)
    items = flat[:total].tolist()
    fmt: Callable[[float], str]
    if is_int:
        fmt = lambda v: str(int(v))  # noqa: E731
    else:
        fmt = lambda v: _format_float(float(v), precision)  # noqa: E731
    edge = math.inf if total <= threshold else edge_items
    out: list[str] = []

    def write(rest: tuple[int, ...], base: int) -> None:
        prefix = " " * (len(dims) - len(rest) + 1)
        newlines = "\n" * (len(rest) - 1)
        inner = math.prod(rest[1:])
        out.append("[")
        i = 0
        while i < rest[0]:
            last = i == rest[0] - 1
            if edge <= i < rest[0] - edge:
                out.append("..., ")
                skip = rest[0] - 2 * int(edge)
                if len(rest) > 1:
                    base += skip * inner
                    out.append(newlines + prefix)
                i += skip
                continue
            if len(rest) > 1:
                write(rest[1:], base)
                base += inner
                if not last:
                    out.append("," + newlines + prefix)
            else:
                text = fmt(items[base + i])
                if text and not text.startswith("-"):
                    out.append(" ")
                out.append(text)
                if not last:
                    out.append(", ")
            i += 1
        out.append("]")

    write(dims, 0)
    return "".join(out)


def _shape(t: Tensor) -> tuple[int, ...]:
    """Return ``t.shape`` without trailing size-1 dims (at least one dim), as the reference has."""
    shape = tuple(t.shape)
    while len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def dump(
    ctx: Context, t: Tensor, *, precision: int = 4, threshold: int = 1000, edge_items: int = 3
) -> str:
    """Return ``t`` as text: nested brackets, outermost dimension first, like numpy.

    F32 and I32 print directly; F16, Q8_0 and Q4_0 are first copied into an F32 tensor made in
    ``ctx.input()``; other dtypes give ``<unsupported>``. A tensor that has not been computed is
    computed first (``ctx.forward(t).compute(t)``).

    :param ctx: the context ``t`` belongs to.
    :param t: the tensor.
    :param precision: decimals of a float.
    :param threshold: the most values printed in full; beyond it only edges are printed.
    :param edge_items: values printed at each end of an elided dimension.
    :returns: the text, e.g. ``[ 1.0000, -2.5000,  0.3333]``.
    """
    shape = _shape(t)
    if t.dtype == DType.F32 or t.dtype == DType.I32:
        src = t
    elif t.dtype in _CONVERTED:
        src = t.copy(ctx, ctx.input().empty(DType.F32, *shape))
    else:
        return UNSUPPORTED
    data = src.bytes()
    if data is None:
        ctx.forward(src).compute(src)
        data = src.bytes()
    if data is None:
        msg = "dump: the tensor has no data after compute"
        raise GraphError(msg)
    is_int = src.dtype == DType.I32
    count = math.prod(shape)
    values = np.frombuffer(data, dtype="<i4" if is_int else "<f4", count=count)
    return format_array(
        values,
        shape,
        is_int=is_int,
        precision=precision,
        threshold=threshold,
        edge_items=edge_items,
    )
