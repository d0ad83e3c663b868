"""Matrix products and matrix construction kernels.

``mul_mat`` is one ``torch.matmul`` in float32: the left operand's batches serve consecutive
groups of the right operand's (grouped-query layout) by folding each group into the row
dimension, without materialising repeated weights. An F16 left operand rounds the right
operand to f16 first, as ggml's CPU does. On the CPU (not while tracing), a weight in a block
or half type stays in its encoding: the product decodes a tile of rows at a time (the spans of
:func:`mlplug.plugin_api.tile_spans`; the types of :data:`..quant.TORCH_DECODED` with torch
ops, the other types with :func:`mlplug.plugin_api.row_tiles`) and multiplies each tile with
``torch.mm``; one F32 column against Q8_0, Q4_0 or Q5_0 (a decode step) is taken in integers
instead (:mod:`.intdot`). Otherwise quantised operands are dequantised whole, on the device
(Q8_0, Q4_0, MXFP4) or on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

import torch

from mlplug.plugin_api import (
    DOT_ROUNDINGS,
    FAST_DECODE_TYPES,
    WIDE_TILE_BYTES,
    DType,
    Step,
    TriParams,
    dot_rounding,
    row_tiles,
    tile_spans,
)

from .. import quant
from ..quant import TORCH_DECODED, decode_tile
from ._registry import implements, prepares
from .elementwise import f16_round
from .gemv import GEMV_TYPES, kernel_of
from .intdot import INT_DOT_TYPES, Column, int_column, int_mm_works

if TYPE_CHECKING:
    from mlplug import Tensor

    from ..context import TorchContext


def _div(num: float, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` correctly rounded in float32, as C's ``num / den`` is.

    torch evaluates ``float / tensor`` as ``reciprocal(tensor) * float``: rounded twice, it is
    an ulp off in about a quarter of cases, enough to move an activation quantised by its
    result to the next integer (issue 14: k-quant products off by one Q8_K step).
    """
    return torch.full_like(den, num) / den


def q8_0_round(x: torch.Tensor) -> torch.Tensor:
    """Round float32 rows (length a multiple of 32) through Q8_0 as ggml's x86 CPU does.

    Each block is scaled by ``127 / amax`` in float32 and rounded to the nearest integer with
    halves to even (``torch.round``); the values are ``q * f16(amax / 127)``.
    """
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    zero = amax == 0
    scale = torch.where(zero, torch.zeros_like(amax), _div(127.0, torch.where(zero, 1.0, amax)))
    q = torch.round(blocks * scale)
    return (q * f16_round(amax / 127.0)).reshape(x.shape)


def q8_k_round(x: torch.Tensor) -> torch.Tensor:
    """Round float32 rows (length a multiple of 256) through Q8_K as ggml's CPU does.

    The first value of largest magnitude ``m`` of each super-block sets ``iscale = -127 / m``;
    ``q = min(127, round(iscale * x))`` (halves to even) and the values are ``q * (1 / iscale)``.
    """
    blocks = x.reshape(*x.shape[:-1], -1, 256)
    pick = blocks.abs().argmax(dim=-1, keepdim=True)
    m = torch.gather(blocks, -1, pick)
    zero = m == 0
    iscale = torch.where(zero, torch.zeros_like(m), _div(-127.0, torch.where(zero, 1.0, m)))
    q = torch.clamp(torch.round(blocks * iscale), max=127.0)
    d = torch.where(zero, torch.zeros_like(m), 1.0 / torch.where(zero, 1.0, iscale))
    return (q * d).reshape(x.shape)


_ROUNDINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "f16": f16_round,
    "bf16": lambda x: x.to(torch.bfloat16).float(),
    "q8_0": q8_0_round,
    "q8_k": q8_k_round,
}


def _right(ctx: TorchContext, a: Tensor, b: Tensor) -> torch.Tensor:
    """The right operand as ggml's CPU sees it: rounded to a's dot type (:func:`dot_rounding`),
    once per compute for the products that share it (q, k and v; gate and up)."""
    kind = dot_rounding(a.dtype, b.dtype)
    if kind is None:
        return ctx.values(b)
    return ctx.shared(("right", id(b), kind), lambda: _rounded(ctx, ctx.values(b), kind))


def _rounded(ctx: TorchContext, x: torch.Tensor, kind: str) -> torch.Tensor:
    """``x`` rounded as ``kind`` names; one CPU column (a decode step's) through core's numpy
    rounding, whose per-call cost is about half torch's (Q8_K of 1024 values: 16 vs 29 us);
    a prompt's activations through one compiled kernel where compiled kernels are on."""
    if x.device.type == "cpu" and not ctx.tracing and x.numel() <= _HOST_ROUNDING:
        return torch.from_numpy(DOT_ROUNDINGS[kind](x.numpy()))
    kernels = ctx.backend.compiled
    if not ctx.tracing and x.is_contiguous() and kernels.wants(4 * x.numel()):
        flat = x.reshape(-1)  # blocks of 32 or 256 never straddle rows (K is their multiple)
        kernel = kernels.kernel(
            ("round", kind), _ROUNDINGS[kind], lambda: (flat,), dynamic=True, exact=True
        )
        if kernel is not None:
            return kernel(flat).view(x.shape)
    return _ROUNDINGS[kind](x)


#: Values from which a CPU operand is rounded with torch ops (its threads), not numpy. From
#: there (and the compiled kernels' threshold) the rounding is one compiled loop, equal to the
#: torch ops bit for bit (casts to f16 rounded as eagerly): about 3x faster, Gemma 3's prompt
#: rounded its activations through Q8_0 and Q8_K in 69 ms eagerly.
_HOST_ROUNDING = 16384


def _weight_copy(ctx: TorchContext, a: Tensor) -> torch.Tensor | None:
    """The float32 copy of weight ``a`` made at load (``BackendParams.dequantize``), or None."""
    copies = None if ctx.tracing else getattr(ctx.backend, "weight_copies", None)
    copy = None if copies is None else copies.get(a)
    return None if copy is None else torch.from_numpy(copy)


def _tiled(ctx: TorchContext, a: Tensor) -> bool:
    """Whether a product with ``a`` decodes it a tile at a time (one encoded CPU matrix, eager)."""
    return (
        a.ne[2] == 1
        and a.ne[3] == 1
        and (a.dtype in FAST_DECODE_TYPES or a.dtype in TORCH_DECODED)
        and not ctx.tracing
        and ctx.device.type == "cpu"
    )


def _int_column(ctx: TorchContext, a: Tensor, b: Tensor) -> bool:
    """Whether ``a @ b`` (``a`` tiled) is one F32 column against Q8_0/Q4_0/Q5_0: integer dots."""
    return (
        a.dtype in INT_DOT_TYPES
        and b.dtype == DType.F32
        and b.ne[1] == b.ne[2] == b.ne[3] == 1
        and int_mm_works()
    )


def _scratch(ctx: TorchContext, n: int) -> torch.Tensor:
    """A float32 CPU buffer of ``n`` values, kept by the backend (one per thread) and reused by
    every tiled product: a fresh megabyte per product cost the allocator's page faults more
    than the decoding (tiny q8_0 decode after a 512-token prompt: 76 -> 30 ms per token)."""
    local = ctx.backend.tile_scratch
    buf: torch.Tensor | None = getattr(local, "buf", None)
    if buf is None or buf.numel() < n:
        buf = local.buf = torch.empty(n, dtype=torch.float32)
    return buf[:n]


def _mulmat_tiled(ctx: TorchContext, a: Tensor, bv: torch.Tensor) -> torch.Tensor:
    """``bv @ a^T`` (``bv``: ``(B3, B2, N, K)``) with ``a`` decoded a tile of rows at a time."""
    raw = ctx.arr(a)[0, 0]
    b3, b2, n, k = bv.shape
    m = a.ne[1]
    x = bv[0, 0] if b3 == 1 and b2 == 1 else bv
    tiles: Iterator[tuple[int, torch.Tensor]]
    if a.dtype in TORCH_DECODED:
        # Wide tiles even for one column: torch's threads split a bigger op better (the
        # Gemma 3 output product: 74 -> 47 ms), and a row's sum does not depend on its tile.
        spans = list(tile_spans(m, k, columns=n, tile_bytes=WIDE_TILE_BYTES))
        buf = _scratch(ctx, max(r for _, r in spans) * k).view(-1, k)
        if len(spans) == 1 and x.dim() == 2:
            # one tile: the product is the result, adopted as the node's storage uncopied
            # (Gemma 3's prompt copied 230 MB of products into their outputs before)
            return gemm(ctx, x, decode_tile(raw, a.dtype, buf[:m])).view(1, 1, n, m)
        tiles = ((r0, decode_tile(raw[r0 : r0 + rows], a.dtype, buf[:rows])) for r0, rows in spans)
    else:
        host = (raw if raw.dtype == torch.uint8 else raw.view(torch.uint8)).numpy()
        tiles = (
            (r0, torch.from_numpy(t))
            for r0, t in row_tiles(host, a.dtype, k, columns=n, reuse=True)
        )
    out = torch.empty((b3, b2, n, m), dtype=torch.float32)
    res = out[0, 0] if x.dim() == 2 else out
    for r0, tile in tiles:
        dest = res[..., r0 : r0 + tile.shape[0]]
        dest[...] = gemm(ctx, x, tile) if x.dim() == 2 else torch.matmul(x, tile.t())
    return out


#: Weight bytes from which a one-column product on the CPU splits its rows over the threads.
GEMV_BYTES = 1 << 20

#: Weight bytes from which a one-column product on the CPU goes through oneDNN's linear.
ONEDNN_BYTES = 8 << 20

_onednn: list[bool] = []  # whether oneDNN's linear runs here (probed once)


def _onednn_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """``x @ w^T`` through oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``), or None
    where this torch has no oneDNN or the probe failed.

    torch's own CPU product runs a one-column gemv through MKL on one thread; oneDNN's linear
    streams the weight on all threads. Measured on the 2-core AMD EPYC here, the tiny llama's
    32000x512 f32 output product: 6.4 ms through ``torch.mm``, 3.3 through one batch per
    thread, 2.4 through oneDNN; on its 1 MB layer weights, between decode's other ops, oneDNN
    lost to the batches (a decode step, tokens interleaved: 15.9 ms all through oneDNN, 14.7
    all through batches, 14.1 with oneDNN from :data:`ONEDNN_BYTES`). Each row's dot product
    is an ordinary float32 sum (its order is the library's).
    """
    if not _onednn:
        try:
            probe = torch.ops.mkldnn._linear_pointwise(
                torch.ones(1, 2), torch.ones(3, 2), None, "none", [], ""
            )
            _onednn.append(bool(torch.equal(probe, torch.full((1, 3), 2.0))))
        except (AttributeError, RuntimeError, NotImplementedError):
            _onednn.append(False)
    if not _onednn[0]:
        return None
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")  # type: ignore[no-any-return]


def _host_f32(ctx: TorchContext, x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``x @ w^T`` may take the CPU routes below: eager, on the CPU, float32 and
    contiguous operands."""
    return (
        not ctx.tracing
        and w.device.type == "cpu"
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and x.is_contiguous()
        and w.is_contiguous()
    )


def gemm(ctx: TorchContext, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w^T`` for 2-D float32 ``x`` ``(N, K)`` and ``w`` ``(M, K)``, through oneDNN's
    linear on the CPU (eagerly, contiguous operands).

    The MKL behind ``torch.mm`` runs float32 products on this AMD EPYC at about 190 GFLOP/s
    where oneDNN's reach about 410 (512 x 640 times 640 x 2048: 6.7 -> 2.9 ms; from 2 columns
    up it is never slower). Both are ordinary float32 sums, in their libraries' orders.
    """
    out = _onednn_linear(x, w) if _host_f32(ctx, x, w) else None
    return torch.mm(x, w.t()) if out is None else out


def _mm(ctx: TorchContext, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w^T`` for 2-D float32 ``x`` ``(N, K)`` and ``w`` ``(M, K)``.

    Products of several columns go through :func:`gemm`. On the CPU (eagerly) a one-column
    product (a decode step) with a weight of :data:`ONEDNN_BYTES` or more goes through oneDNN's
    linear (:func:`_onednn_linear`). Other one-column products from :data:`GEMV_BYTES` up cut
    the rows into one batch per thread and run them as one ``torch.bmm``, which torch spreads
    over its threads (torch's BLAS runs a gemv on one thread: about 2x on two cores).
    """
    if x.shape[0] != 1:
        return gemm(ctx, x, w)
    if not _host_f32(ctx, x, w):
        return torch.mm(x, w.t())
    size = w.numel() * w.element_size()
    out = _onednn_linear(x, w) if size >= ONEDNN_BYTES else None
    if out is not None:
        return out
    threads = torch.get_num_threads()
    m, k = w.shape
    if threads < 2 or m % threads or size < GEMV_BYTES:
        return torch.mm(x, w.t())
    parts = w.view(threads, m // threads, k)
    return torch.bmm(x.expand(threads, 1, k), parts.transpose(1, 2)).reshape(1, m)


def _column(ctx: TorchContext, b: Tensor) -> Column:
    """F32 column ``b`` quantised to Q8_0 once per compute (q, k and v; gate and up share it)."""
    return ctx.shared(("int-column", id(b)), lambda: Column(ctx.values(b).reshape(-1).numpy()))


def _gemv(ctx: TorchContext, a: Tensor, b: Tensor) -> Callable[[], torch.Tensor] | None:
    """A function computing ``a @ b`` for one F32 column through the backend's compiled
    one-column product (:mod:`.gemv`), bound to ``a``'s blocks and ``b``'s node (the column is
    read, and rounded or quantised, on each call); None where none applies (or its compilation
    failed)."""
    if not (
        b.dtype == DType.F32
        and b.ne[1] == b.ne[2] == b.ne[3] == 1
        and a.ne[2] == a.ne[3] == 1
        and a.dtype in GEMV_TYPES
        and ctx.backend.compiled.wants(a.nbytes)
        and not ctx.tracing
    ):
        return None
    raw = ctx.arr(a)[0, 0]
    if not raw.is_contiguous():
        return None
    args: Callable[[], tuple[torch.Tensor, ...]]
    if GEMV_TYPES[a.dtype]:

        def args() -> tuple[torch.Tensor, ...]:
            x = _column(ctx, b)
            if a.dtype == DType.Q5_0:
                return (raw, x.quants_t, x.scales, x.bit_table())
            return (raw, x.quants_t, x.scales)

    else:

        def args() -> tuple[torch.Tensor, ...]:
            return (raw, _right(ctx, a, b).reshape(raw.shape[1], -1).squeeze(-1))

    kernel = kernel_of(ctx.backend.compiled, a.dtype, raw.shape, args)
    if kernel is None:
        return None
    if a.dtype == DType.F32:  # the column as it lies: bound once
        return partial(kernel, *args())
    return lambda: kernel(*args())


@implements("mulmat")
def mulmat(ctx: TorchContext, t: Tensor) -> None:
    """``out = b @ a^T`` with a's batches repeated over consecutive groups of b's."""
    a, b = t.src
    copy = _weight_copy(ctx, a)
    gemv = None if copy is not None else _gemv(ctx, a, b)
    if gemv is not None:
        ctx.put(t, gemv().reshape(1, 1, 1, -1))
        return
    if copy is None and _tiled(ctx, a):
        if _int_column(ctx, a, b):
            ctx.put(t, int_column(ctx.arr(a)[0, 0], a.dtype, _column(ctx, b)).reshape(1, 1, 1, -1))
            return
        ctx.put(t, _mulmat_tiled(ctx, a, _right(ctx, a, b)))
        return
    av = ctx.values(a) if copy is None else copy  # (A3, A2, M, K)
    bv = _right(ctx, a, b)  # (B3, B2, N, K)
    a3, a2, m, k = av.shape
    b3, b2, n, _ = bv.shape
    if a3 == 1 and a2 == 1:
        if b3 == 1 and b2 == 1:
            out = _mm(ctx, bv[0, 0], av[0, 0]).reshape(1, 1, n, m)
        else:
            out = torch.matmul(bv, av[0, 0].t())
    elif b3 == a3:
        r2 = b2 // a2
        # batch j of b uses batch j // r2 of a: fold each group of r2 into the rows
        out = torch.matmul(bv.reshape(b3, a2, r2 * n, k), av.transpose(-1, -2))
        out = out.reshape(b3, b2, n, m)
    else:
        av = av.repeat_interleave(b3 // a3, dim=0).repeat_interleave(b2 // a2, dim=1)
        out = torch.matmul(bv, av.transpose(-1, -2))
    ctx.put(t, out)


@prepares(mulmat)
def _prepare_mulmat(ctx: TorchContext, t: Tensor) -> Step | None:
    """A decode step's compiled one-column product, bound to the weight and the result."""
    a, b = t.src
    if t.view_src is not None or t.dtype != DType.F32 or _weight_copy(ctx, a) is not None:
        return None
    gemv = _gemv(ctx, a, b)
    if gemv is None:
        return None
    out = ctx.arr(t).view(-1)
    return lambda: out.copy_(gemv())


def _expert(ctx: TorchContext, a: Tensor, e: int) -> torch.Tensor:
    """Float32 weights ``(R, K)`` of expert ``e`` (only that expert is dequantised)."""
    copy = _weight_copy(ctx, a)
    if copy is not None:
        return copy[0, e]
    raw = ctx.arr(a)[0, e]
    if a.dtype == DType.F32:
        return raw
    if a.dtype.is_quantized:
        return quant.dequantize(raw, a.dtype)
    return raw.float()


@implements("mulmat_id")
def mulmat_id(ctx: TorchContext, t: Tensor) -> None:
    """Per-token expert products: ``out[r,u,t] = sum_k a[k,r,ids[u,t]] b[k,u%B1,t]``.

    Eagerly, the (token, slot) pairs are grouped by expert and each used expert runs one
    matmul; while tracing for torch.compile, the selected weights are gathered instead.
    """
    a, b, ids = t.src
    n_exp, r = a.ne[2], a.ne[1]
    x = _right(ctx, a, b)[0]  # (T, B1, K)
    idx = ctx.indices(ids, n_exp, "mulmat_id")[0, 0]  # (T, U)
    n_tok, u = idx.shape
    xs = x[:, torch.arange(u, device=x.device) % x.shape[1]]  # (T, U, K)
    if ctx.tracing:
        w = ctx.values(a)[0][idx]  # (T, U, R, K)
        ctx.put(t, torch.einsum("tuk,turk->tur", xs, w).unsqueeze(0))
        return
    flat_ids = idx.reshape(-1)
    flat_x = xs.reshape(-1, xs.shape[-1])
    order = torch.argsort(flat_ids, stable=True)
    counts = torch.bincount(flat_ids, minlength=n_exp).tolist()
    out = torch.empty(flat_ids.shape[0], r, dtype=torch.float32, device=x.device)
    start = 0
    for e, c in enumerate(counts):
        if c:
            sel = order[start : start + c]
            out.index_copy_(0, sel, flat_x.index_select(0, sel) @ _expert(ctx, a, e).t())
            start += c
    ctx.put(t, out.reshape(1, n_tok, u, r))


@implements("add_id")
def add_id(ctx: TorchContext, t: Tensor) -> None:
    """``t[i, u, tok] + bias[i, ids[u, tok]]``."""
    a, bias, ids = t.src
    bv = ctx.values(bias)[0, 0]  # (E, N)
    idx = ctx.indices(ids, bv.shape[0], "add_id")[0, 0]  # (T, U)
    ctx.put(t, ctx.values(a) + bv[idx])


@implements("diag")
def diag(ctx: TorchContext, t: Tensor) -> None:
    """Put each dim-0 vector on the diagonal of a square matrix."""
    v = ctx.values(t.src[0])  # (n3, n2, 1, n)
    ctx.put(t, torch.diag_embed(v[:, :, 0, :]))


@implements("tri")
def tri(ctx: TorchContext, t: Tensor) -> None:
    """Keep one triangle (column = dim 0, row = dim 1)."""
    x = ctx.values(t.src[0])
    kind = TriParams.of(t).tri_type
    out = (
        torch.triu(x, 0 if kind == 0 else 1)
        if kind in (0, 1)
        else torch.tril(x, 0 if kind == 2 else -1)
    )
    ctx.put(t, out)


@implements("solve_tri")
def solve_tri(ctx: TorchContext, t: Tensor) -> None:
    """Forward substitution ``A X = B`` with lower-triangular A (in float64 where available)."""
    acc = ctx.acc_dtype
    a = torch.tril(ctx.values(t.src[0]).to(acc))
    b = ctx.values(t.src[1]).to(acc)
    ctx.put(t, torch.linalg.solve_triangular(a, b, upper=False).float())
