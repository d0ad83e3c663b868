"""Data-movement kernels: copies, casts, concat, repeat, pad, gather/scatter, arange."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from mlplug.plugin_api import (
    TRAITS,
    ArangeParams,
    ConcatParams,
    DType,
    PadParams,
    SetParams,
    Step,
)

from .. import quant
from ..context import TORCH_DTYPES, geometry
from ._registry import implements, prepares

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import TorchContext


def _units(t: Tensor) -> tuple[int, ...]:
    """Storage-unit shape of ``t`` (the shape :meth:`TorchContext.arr` returns)."""
    return geometry(t)[0]


def _rev(ne: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(reversed(ne))


@implements("contiguous")
def cont(ctx: TorchContext, t: Tensor) -> None:
    """Copy in logical order into a contiguous tensor of the node's shape."""
    ctx.put_raw(t, ctx.arr(t.src[0]).reshape(_units(t)))


@implements("copy", "cast")
def copy(ctx: TorchContext, t: Tensor) -> None:
    """Convert src into the node (a new tensor for cast, the destination's alias for cpy).

    Element k of the source in logical order goes to element k of the destination; values
    are converted as ggml's cpy does (F32->I32 truncates toward zero, F16 rounds to nearest
    even, quantised types quantise per block).
    """
    src = t.src[0]
    if src.dtype == t.dtype:
        ctx.put_raw(t, ctx.arr(src).reshape(_units(t)))
        return
    ctx.put(t, ctx.values(src).reshape(_rev(t.ne)))


@implements("rows")
def rows(ctx: TorchContext, t: Tensor) -> None:
    """``out[:, i, j, k] = table[:, ids[i, j, k], j, k]`` (F32, or I32 for an I32 table)."""
    table, ids = t.src
    tbl = ctx.arr(table)
    idx = ctx.indices(ids, table.ne[1], "rows")[0]  # (i2, i1, i0)
    if table.ne[2] == 1 and table.ne[3] == 1:
        rows = tbl[0, 0].index_select(0, idx.reshape(-1)).reshape(*idx.shape, *tbl.shape[3:])
    else:
        k = torch.arange(idx.shape[0], device=idx.device)[:, None, None]
        j = torch.arange(idx.shape[1], device=idx.device)[None, :, None]
        rows = tbl[k, j, idx]
    d = table.dtype
    if d == DType.I32:
        ctx.put_raw(t, rows)
    elif d.is_quantized:
        ctx.put(t, quant.dequantize(rows, d))
    else:
        ctx.put(t, rows.float())


#: Element types a planned one-row copy reads or writes as they are (converting on copy).
_PLAIN_ROWS = frozenset({DType.F32, DType.F16, DType.BF16})


@prepares(rows)
def _prepare_rows(ctx: TorchContext, t: Tensor) -> Step | None:
    """One row of a plain 2-D table (a decode step's embedding): a row copy."""
    table, ids = t.src
    if (
        ids.nelements != 1
        or table.dtype not in _PLAIN_ROWS
        or table.ne[2] != 1
        or table.ne[3] != 1
        or t.view_src is not None
        or t.dtype != DType.F32
    ):
        return None
    tbl, out = ctx.arr(table)[0, 0], ctx.arr(t).reshape(-1)
    read = ctx.index_reader(ids, table.ne[1], "rows")
    return lambda: out.copy_(tbl[read()])


@implements("set_rows")
def set_rows(ctx: TorchContext, t: Tensor) -> None:
    """``dst[:, idxs[i, j % n1, k % n2], j, k] = src[:, i, j, k]`` (converted to dst's dtype)."""
    dst, src, ids = t.src
    s = ctx.values(src)  # (n3, n2, n1, n0)
    d = dst.dtype
    v = quant.quantize(s, d) if d.is_quantized else s.to(TORCH_DTYPES[d])
    if ctx.env is None and s.shape[:3] == (1, 1, 1) and ids.nelements == 1:
        # one row (a decode step's cache write): a plain row copy, without index tensors
        ctx.arr(t)[0, 0, ctx.index(ids, dst.ne[1], "set_rows")] = v[0, 0, 0]
        return
    idx = ctx.indices(ids, dst.ne[1], "set_rows")[0]  # (i2, i1, i0)
    n3, n2, n1 = s.shape[:3]
    dev = s.device
    if n3 == 1 and n2 == 1:
        ctx.index_write(
            t, (torch.zeros((), dtype=torch.long, device=dev),) * 2 + (idx[0, 0],), v[0, 0]
        )
        return
    kk = torch.arange(n3, device=dev)[:, None, None]
    jj = torch.arange(n2, device=dev)[None, :, None]
    ii = torch.arange(n1, device=dev)[None, None, :]
    rows = idx[kk % idx.shape[0], jj % idx.shape[1], ii]
    ctx.index_write(t, (kk, jj, rows), v)


@prepares(set_rows)
def _prepare_set_rows(ctx: TorchContext, t: Tensor) -> Step | None:
    """One F32 row written into a plain table (a decode step's cache write): a row copy, which
    rounds to F16/BF16 to nearest even as the kernel's conversion does."""
    dst, src, ids = t.src
    if (
        ids.nelements != 1
        or src.dtype != DType.F32
        or src.ne[1:] != (1, 1, 1)
        or dst.dtype not in _PLAIN_ROWS
    ):
        return None
    table, row = ctx.arr(t)[0, 0], ctx.arr(src).reshape(-1)
    read = ctx.index_reader(ids, dst.ne[1], "set_rows")
    return lambda: table[read()].copy_(row)


@implements("set_inplace")
def set_(ctx: TorchContext, t: Tensor) -> None:
    """Write src into a byte-strided window of the destination (``set_inplace``)."""
    src = t.src[1]
    r = SetParams.of(t)
    nb1, nb2, nb3, offset = r.nb1, r.nb2, r.nb3, r.offset
    es = TRAITS[t.dtype].type_size
    size = _rev(src.ne)
    stride = (nb3 // es, nb2 // es, nb1 // es, 1)
    ctx.put_window(t, ctx.arr(src), size, stride, (t.view_offs + offset) // es)


@implements("concat")
def concat(ctx: TorchContext, t: Tensor) -> None:
    """Join along a dim."""
    a, b = t.src
    ctx.put_raw(t, torch.cat((ctx.arr(a), ctx.arr(b)), dim=3 - ConcatParams.of(t).dim))


@implements("repeat")
def repeat(ctx: TorchContext, t: Tensor) -> None:
    """Tile to the node's shape (np.tile order)."""
    a = ctx.arr(t.src[0])
    reps = tuple(o // i for o, i in zip(_rev(t.ne), a.shape, strict=True))
    ctx.put_raw(t, a.repeat(reps))


@implements("pad")
def pad(ctx: TorchContext, t: Tensor) -> None:
    """Zero-pad (or, for negative amounts, crop) at the end of each dim."""
    r = PadParams.of(t)
    p0, p1, p2, p3 = r.p0, r.p1, r.p2, r.p3
    ctx.put(t, F.pad(ctx.values(t.src[0]), (0, p0, 0, p1, 0, p2, 0, p3)))


@implements("arange")
def arange(ctx: TorchContext, t: Tensor) -> None:
    """``f32(start + f32(step * i))``."""
    r = ArangeParams.of(t)
    start, step = r.start, r.step
    i = torch.arange(t.ne[0], dtype=torch.float32, device=ctx.device)
    ctx.put(t, i * float(np.float32(step)) + float(np.float32(start)))


@implements("reshape", "view", "permute")
def view(ctx: TorchContext, t: Tensor) -> None:
    """Views need no work: the node reads its root's storage through its own strides."""
