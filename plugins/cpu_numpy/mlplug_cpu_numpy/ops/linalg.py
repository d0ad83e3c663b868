"""Matrix products and matrix construction kernels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mlplug.plugin_api import (
    DOT_ROUNDINGS,
    FAST_DECODE_TYPES,
    OutOfRangeError,
    TriParams,
    decode_rows,
    dot_rounding,
    mulmat_rows,
)

from ._registry import implements

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import NumpyContext

F32 = np.float32


def _right(ctx: NumpyContext, a: Tensor, b: Tensor) -> np.ndarray:
    """The right operand as ggml's CPU sees it: rounded to a's dot type (:func:`dot_rounding`),
    once per compute for the products that share it (q, k and v; gate and up)."""
    kind = dot_rounding(a.dtype, b.dtype)
    if kind is None:
        return ctx.values(b)
    return ctx.shared(("right", id(b), kind), lambda: DOT_ROUNDINGS[kind](ctx.values(b)))


def check_ids(ids: np.ndarray, n: int, op: str) -> None:
    """Raise OutOfRangeError if any id is outside ``[0, n)``."""
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = int(ids[(ids < 0) | (ids >= n)].flat[0])
        msg = f"{op}: index {bad} out of range 0..{n - 1}"
        raise OutOfRangeError(msg)


def weight_copy(ctx: NumpyContext, a: Tensor) -> np.ndarray | None:
    """The float32 copy of weight ``a`` made at load (``BackendParams.dequantize``), or None."""
    copies = getattr(ctx.backend, "weight_copies", None)
    return None if copies is None else copies.get(a)  # type: ignore[no-any-return]


def kept_as_blocks(a: Tensor, columns: int = 2) -> bool:
    """Whether a product of ``columns`` columns with ``a`` decodes it a tile at a time: one
    encoded (block or half) matrix.

    A weight stays in its file encoding and only a tile of rows is decoded at once
    (:func:`mlplug.plugin_api.mulmat_rows`); batched operands (KV caches) are decoded whole.
    The types without a vectorised decoder (Q2_K, Q3_K, MXFP4: tiles through the gguf codecs)
    only for one column (a decode step): 4096 x 2048 weights, Q2_K 57.9 -> 31.4 ms, Q3_K
    56.2 -> 36.1, MXFP4 75.7 -> 54.1, where a 512-column Q2_K product ran faster on the whole
    weight (166 against 218 ms). The same values either way.
    """
    if a.ne[2] != 1 or a.ne[3] != 1:
        return False
    return a.dtype in FAST_DECODE_TYPES or (columns == 1 and a.dtype.is_quantized)


@implements("mulmat")
def mulmat(ctx: NumpyContext, t: Tensor) -> None:
    """``out = b @ a^T`` with a's batches repeated over consecutive groups of b's."""
    a, b = t.src
    copy = weight_copy(ctx, a)
    if copy is None and kept_as_blocks(a, b.ne[1] * b.ne[2] * b.ne[3]):
        mulmat_rows(ctx.arr(a)[0, 0], a.dtype, a.ne[0], _right(ctx, a, b), out=ctx.arr(t))
        return
    av = ctx.values(a) if copy is None else copy
    bv = _right(ctx, a, b)
    r2, r3 = b.ne[2] // a.ne[2], b.ne[3] // a.ne[3]
    if r2 > 1:
        av = np.repeat(av, r2, axis=1)
    if r3 > 1:
        av = np.repeat(av, r3, axis=0)
    np.matmul(bv, av.swapaxes(-1, -2), out=ctx.arr(t))


@implements("mulmat_id")
def mulmat_id(ctx: NumpyContext, t: Tensor) -> None:
    """Per-token expert products."""
    a, b, ids = t.src
    x = _right(ctx, a, b)[0]  # (T, B1, K)
    idx = ctx.arr(ids)[0, 0]  # (T, U)
    check_ids(idx, a.ne[2], "mulmat_id")
    u = idx.shape[1]
    xs = x[:, np.arange(u) % x.shape[1]]  # (T, U, K)
    used = np.unique(idx)
    copy = weight_copy(ctx, a)
    if copy is not None:
        w = copy[0]
    elif a.ne[3] == 1 and a.dtype in FAST_DECODE_TYPES and used.size < a.ne[2]:
        # decode only the experts the ids use; ids index the decoded stack
        raw = ctx.arr(a)[0]
        w = np.stack([decode_rows(raw[e], a.dtype, a.ne[0]) for e in used])
        idx = np.searchsorted(used, idx)
    else:
        w = ctx.values(a)[0]  # (E, R, K)
    ctx.arr(t)[0] = np.einsum("tuk,turk->tur", xs, w[idx], dtype=F32)


@implements("add_id")
def add_id(ctx: NumpyContext, t: Tensor) -> None:
    """``t[i, u, tok] + bias[i, ids[u, tok]]``."""
    a, bias, ids = t.src
    idx = ctx.arr(ids)[0, 0]
    bv = ctx.values(bias)[0, 0]
    check_ids(idx, bv.shape[0], "add_id")
    np.add(ctx.values(a), bv[idx], out=ctx.arr(t))


@implements("diag")
def diag(ctx: NumpyContext, t: Tensor) -> None:
    """Vectors onto diagonals."""
    v = ctx.values(t.src[0])  # (n3, n2, 1, n)
    out = np.zeros(ctx.arr(t).shape, F32)
    i = np.arange(v.shape[-1])
    out[:, :, i, i] = v[:, :, 0, :]
    ctx.put(t, out)


@implements("tri")
def tri(ctx: NumpyContext, t: Tensor) -> None:
    """Keep one triangle (column = dim 0, row = dim 1)."""
    x = ctx.values(t.src[0])
    kind = TriParams.of(t).tri_type
    if kind in (0, 1):
        y = np.triu(x, kind)
    else:
        y = np.tril(x, 0 if kind == 2 else -1)
    ctx.put(t, y)


@implements("solve_tri")
def solve_tri(ctx: NumpyContext, t: Tensor) -> None:
    """Forward substitution ``A X = B`` with lower-triangular A."""
    a = np.tril(ctx.values(t.src[0]).astype(np.float64))
    b = ctx.values(t.src[1]).astype(np.float64)
    with np.errstate(all="ignore"):
        try:
            x = np.linalg.solve(a, b)
        except np.linalg.LinAlgError:
            x = np.full(b.shape, np.nan)
    ctx.put(t, x.astype(F32))
