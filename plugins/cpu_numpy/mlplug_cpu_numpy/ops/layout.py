"""Data-movement kernels: copies, casts, concat, repeat, pad, gather/scatter, arange."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mlplug.plugin_api import TRAITS, ArangeParams, ConcatParams, DType, SetParams

from ..context import _UNIT
from ._registry import implements
from .linalg import check_ids

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import NumpyContext

F32 = np.float32


def _rev(v: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(reversed(v))


def _convert_into(ctx: NumpyContext, src: Tensor, dst: Tensor) -> None:
    """Write src's elements (logical order) into dst's, converting dtypes as ggml's cpy."""
    out = ctx.arr(dst)
    if src.dtype == dst.dtype:
        out[...] = ctx.arr(src).reshape(out.shape)
        return
    v = ctx.values(src).reshape(_rev(dst.ne))
    if dst.dtype == DType.I32:
        with np.errstate(invalid="ignore"):
            out[...] = np.trunc(v)
        return
    ctx.put(dst, v)


@implements("contiguous")
def cont(ctx: NumpyContext, t: Tensor) -> None:
    """Copy in logical order into a contiguous tensor of the node's shape."""
    out = ctx.arr(t)
    out[...] = ctx.arr(t.src[0]).reshape(out.shape)


@implements("copy", "cast")
def copy(ctx: NumpyContext, t: Tensor) -> None:
    """Convert src into the node (a new tensor for cast, the destination's alias for cpy)."""
    _convert_into(ctx, t.src[0], t)


@implements("rows")
def rows(ctx: NumpyContext, t: Tensor) -> None:
    """``out[:, i, j, k] = table[:, ids[i, j, k], j, k]``."""
    table, ids = t.src
    tbl = ctx.arr(table)
    idx = ctx.arr(ids)[0]  # (i2, i1, i0)
    check_ids(idx, table.ne[1], "rows")
    k = np.arange(idx.shape[0])[:, None, None]
    j = np.arange(idx.shape[1])[None, :, None]
    rows = tbl[k, j, idx]
    if table.dtype == DType.I32:
        ctx.arr(t)[...] = rows
    elif table.dtype.is_quantized or table.dtype == DType.BF16:
        from mlplug.plugin_api import dequantize

        ctx.arr(t)[...] = dequantize(rows, table.dtype).reshape(ctx.arr(t).shape)
    else:
        ctx.arr(t)[...] = rows


@implements("set_rows")
def set_rows(ctx: NumpyContext, t: Tensor) -> None:
    """``dst[:, idxs[i, j % n1, k % n2], j, k] = src[:, i, j, k]``."""
    dst, src, ids = t.src
    d = ctx.arr(t)
    idx = ctx.arr(ids)[0]  # (i2, i1, i0)
    check_ids(idx, dst.ne[1], "set_rows")
    s = ctx.values(src)
    kk = np.arange(s.shape[0])[:, None, None]
    jj = np.arange(s.shape[1])[None, :, None]
    rows = idx[kk % idx.shape[0], jj % idx.shape[1], np.arange(s.shape[2])[None, None, :]]
    if dst.dtype == DType.F32:
        d[kk, jj, rows] = s
    elif dst.dtype == DType.F16:
        d[kk, jj, rows] = s.astype(np.float16)
    else:
        from mlplug.plugin_api import quantize

        q = quantize(s, dst.dtype)
        d[kk, jj, rows] = q.view(_UNIT[dst.dtype]).reshape(*s.shape[:3], -1)


@implements("set_inplace")
def set_(ctx: NumpyContext, t: Tensor) -> None:
    """Write src into a byte-strided window of the destination."""
    dst, src = t.src
    p = SetParams.of(t)
    nb1, nb2, nb3, offset = p.nb1, p.nb2, p.nb3, p.offset
    esize = TRAITS[dst.dtype].type_size
    window = np.ndarray(
        _rev(src.ne),
        _UNIT[dst.dtype],
        buffer=t.root.data,
        offset=t.view_offs + offset,
        strides=_rev((esize, nb1, nb2, nb3)),
    )
    window[...] = ctx.arr(src)


@implements("concat")
def concat(ctx: NumpyContext, t: Tensor) -> None:
    """Join along a dim."""
    a, b = t.src
    np.concatenate([ctx.arr(a), ctx.arr(b)], axis=3 - ConcatParams.of(t).dim, out=ctx.arr(t))


@implements("repeat")
def repeat(ctx: NumpyContext, t: Tensor) -> None:
    """Tile to the node's shape."""
    a = ctx.arr(t.src[0])
    out = ctx.arr(t)
    out[...] = np.tile(a, tuple(o // i for o, i in zip(out.shape, a.shape)))


@implements("pad")
def pad(ctx: NumpyContext, t: Tensor) -> None:
    """Zero-pad (or crop) at the end of each dim."""
    a = ctx.arr(t.src[0])
    out = ctx.arr(t)
    out[...] = 0
    overlap = tuple(slice(0, min(x, y)) for x, y in zip(a.shape, out.shape))
    out[overlap] = a[overlap]


@implements("arange")
def arange(ctx: NumpyContext, t: Tensor) -> None:
    """``f32(start + f32(step * i))``."""
    p = ArangeParams.of(t)
    start, step = p.start, p.step
    i = np.arange(t.ne[0], dtype=F32)
    ctx.arr(t)[0, 0, 0] = F32(start) + F32(step) * i


@implements("reshape", "view", "permute")
def view(ctx: NumpyContext, t: Tensor) -> None:
    """Views need no work: the node reads its root's storage through its own strides."""
