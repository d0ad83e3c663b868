"""Layout ops: views (reshape, view, permute, slice, chunk), copies, casts, concat, pad, repeat,
and the row gather/scatter ops (rows, set_rows, set_inplace)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._tensorbase import Shape4, TensorBase, as_tensor, contiguous_strides
from ..dtypes import TRAITS, DType
from ..errors import DTypeError, ShapeError
from ._build import (
    F32,
    F32_ONLY,
    I32,
    I32_ONLY,
    as_int,
    contiguous,
    inplace,
    node,
    packed_dim0,
    pad4,
    require,
    require_dim,
    require_dtype,
    rows_contiguous,
    view,
)
from .records import (
    CastParams,
    ConcatParams,
    PadParams,
    PermuteParams,
    ReshapeParams,
    SetParams,
    ViewParams,
)

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

_FLOAT_CONV = frozenset({DType.F32, DType.F16, DType.BF16})
_QUANT = frozenset(d for d in DType if d.is_quantized)
_REPEATABLE = frozenset({DType.F32, DType.F16, DType.BF16, DType.I32, DType.I16})
_SET_ROWS_DST = _FLOAT_CONV | _QUANT
_INDEX_TYPES = frozenset({DType.I32, DType.I64})


def infer_shape(op: str, nelements: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Resolve one ``-1`` in ``shape``: the element count divided by each other extent in turn."""
    shape = tuple(as_int(op, "shape", d) for d in shape)
    if -1 not in shape:
        return shape
    if shape.count(-1) > 1:
        msg = f"{op}: only one dimension can be inferred, got {list(shape)}"
        raise ShapeError(msg, op=op)
    n = nelements
    for d in shape:
        if d == -1:
            continue
        if d == 0:
            msg = f"{op}: dimension cannot be zero in {list(shape)}"
            raise ShapeError(msg, op=op)
        if d < 0 or n % d:
            msg = f"{op}: cannot infer dimension for {list(shape)} from {nelements} elements"
            raise ShapeError(msg, op=op)
        n //= d
    return tuple(n if d == -1 else d for d in shape)


def _target(op: str, t: Tensor, shape: tuple[int, ...]) -> Shape4:
    # The common case first: positive plain ints of the right count and block alignment.
    n = 1
    for d in shape:
        if type(d) is not int or d < 1:
            break
        n *= d
    else:
        if 1 <= len(shape) <= 4 and n == t.nelements and shape[0] % TRAITS[t.dtype].block_size == 0:
            return pad4(shape)
    if not 1 <= len(shape) <= 4:
        msg = f"{op}: unsupported number of dimensions: {len(shape)} (1 to 4)"
        raise ShapeError(msg, op=op, shapes=(t.shape,))
    shape = infer_shape(op, t.nelements, shape)
    n = 1
    for d in shape:
        if d < 1:
            msg = f"{op}: invalid shape {list(shape)}"
            raise ShapeError(msg, op=op, shapes=(t.shape,))
        n *= d
    if n != t.nelements:
        msg = (
            f"{op}: shape {list(shape)} ({n} elements) does not match "
            f"{list(t.shape)} ({t.nelements})"
        )
        raise ShapeError(msg, op=op, shapes=(t.shape, tuple(shape)))
    block = TRAITS[t.dtype].block_size
    if shape[0] % block:
        msg = f"{op}: {t.dtype.name} needs dim 0 to be a multiple of {block}, got {shape[0]}"
        raise ShapeError(msg, op=op, shapes=(t.shape, tuple(shape)))
    return pad4(shape)


def _check_cast(op: str, src: DType, dst: DType) -> None:
    ok = (
        src == dst
        or (src in _FLOAT_CONV and dst in _FLOAT_CONV)
        or (src in _FLOAT_CONV and dst == DType.I32)
        or (src == DType.I32 and dst == DType.F32)
        or (src in _FLOAT_CONV and dst in _QUANT)
        or (src in _QUANT and dst == DType.F32)
    )
    if not ok or dst == DType.OTHER:
        msg = f"{op}: no conversion from {src.name} to {dst.name}"
        raise DTypeError(msg, op=op, dtypes=(src, dst))


def _check_view_bounds(op: str, t: Tensor, ne: Shape4, nb: Shape4, offs: int) -> None:
    root = t.root
    start = t.view_offs + offs
    tr = TRAITS[t.dtype]
    if start < 0:
        msg = f"{op}: negative byte offset {start}"
        raise ShapeError(msg, op=op, shapes=(t.shape,))
    n0, n1, n2, n3 = ne
    if not (n0 and n1 and n2 and n3):
        return
    blocks = n0 // tr.block_size
    contiguous_size = tr.type_size * blocks * n1 * n2 * n3
    extent = tr.type_size + (blocks - 1) * nb[0] + (n1 - 1) * nb[1] + (n2 - 1) * nb[2]
    extent += (n3 - 1) * nb[3]
    if start + max(contiguous_size, extent) > root.nbytes:
        msg = (
            f"{op}: view of shape {list(ne)} strides {list(nb)} at byte offset {start} reaches "
            f"past the end of its {root.nbytes}-byte storage"
        )
        raise ShapeError(msg, op=op, shapes=(t.shape,))


def _ints(op: str, name: str, values: tuple[object, ...]) -> tuple[int, ...]:
    return tuple(as_int(op, name, v) for v in values)


def _slice_len(low: int, high: int, step: int) -> int:
    return high - low if step == 1 else (high - low + 1) // step


class LayoutOps(TensorBase):
    """Tensor methods that rearrange, copy or convert data."""

    __slots__ = ()

    # -- views --------------------------------------------------------------------------------
    def reshape(self, ctx: Context, *shape: int) -> Tensor:
        """Return the data with a new shape (one extent may be -1).

        A view of a contiguous tensor; a contiguous copy of a non-contiguous one.

        >>> t = ctx.zeros(DType.F32, 2, 3, 4)
        >>> t.reshape(ctx, -1, 4).shape, t.reshape(ctx, 2, -1).shape
        ((6, 4), (2, 12))
        >>> t.reshape(ctx, 2, -1, 2, 4)
        Traceback (most recent call last):
            ...
        mlplug.errors.ShapeError: reshape: cannot infer dimension for [2, -1, 2, 4] ...
        """
        t = as_tensor(self)
        if not t.is_contiguous():
            return t.contiguous(ctx, *shape)
        ne = _target("reshape", t, shape)
        nb = contiguous_strides(t.dtype, ne)
        return view(ctx, "reshape", t, ne, nb, 0, ReshapeParams(ne))

    def view(self, ctx: Context, offset: int, *shape: int) -> Tensor:
        """Return a strided window on this tensor's memory.

        ``shape`` interleaves extents and byte strides: ``ne0``, ``ne0, nb1, ne1``,
        ``ne0, nb1, ne1, nb2, ne2`` or ``ne0, nb1, ne1, nb2, ne2, nb3, ne3``; ``offset`` is in
        bytes from this tensor's first element.

        >>> t = ctx.from_floats(np.arange(12), 4, 3)
        >>> v = t.view(ctx, 4, 2, t.stride(1), 3)
        >>> y = v.contiguous(ctx)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((2, 3), [1.0, 2.0, 5.0, 6.0, 9.0, 10.0])

        :raises ShapeError: for another number of values, or a window past the storage's end.
        """
        t = as_tensor(self)
        offset = as_int("view", "offset", offset)
        vals = shape if all(type(v) is int for v in shape) else _ints("view", "shape", shape)
        tr = TRAITS[t.dtype]
        ts = tr.type_size
        n = len(vals)
        if n == 1:
            ne4 = (vals[0], 1, 1, 1)
            nb1 = ts * (vals[0] // tr.block_size)
            nb4 = (ts, nb1, nb1, nb1)
        elif n == 3:
            ne0, nb1, ne1 = vals
            ne4, nb4 = (ne0, ne1, 1, 1), (ts, nb1, nb1 * ne1, nb1 * ne1)
        elif n == 5:
            ne0, nb1, ne1, nb2, ne2 = vals
            ne4, nb4 = (ne0, ne1, ne2, 1), (ts, nb1, nb2, nb2 * ne2)
        elif n == 7:
            ne0, nb1, ne1, nb2, ne2, nb3, ne3 = vals
            ne4, nb4 = (ne0, ne1, ne2, ne3), (ts, nb1, nb2, nb3)
        else:
            msg = f"view: unsupported number of dimensions: {n} values (1, 3, 5 or 7)"
            raise ShapeError(msg, op="view", shapes=(t.shape,))
        if min(ne4) < 0 or ne4[0] % tr.block_size:
            msg = f"view: invalid extents {list(ne4)}"
            raise ShapeError(msg, op="view", shapes=(t.shape,))
        _check_view_bounds("view", t, ne4, nb4, offset)
        return view(ctx, "view", t, ne4, nb4, offset, ViewParams(ne4, nb4, offset))

    def permute(self, ctx: Context, *order: int) -> Tensor:
        """Return a view where input axis ``i`` moves to output position ``order[i]``.

        ``order`` has as many entries as ``shape`` or 4 (padded with the identity).

        >>> x = ctx.from_ints(np.arange(24), 2, 3, 4)
        >>> y = x.permute(ctx, 1, 2, 0)
        >>> y.shape
        (4, 2, 3)
        >>> c = y.contiguous(ctx)
        >>> ctx.compute(c)
        >>> c.to_numpy().ravel().tolist()
        [0, 6, 12, 18, 1, 7, 13, 19, 2, 8, 14, 20, 3, 9, 15, 21, 4, 10, 16, 22, 5, 11, 17, 23]
        """
        t = as_tensor(self)
        order_ = tuple(as_int("permute", "order", o) for o in order)
        if len(order_) != len(t.shape) and len(order_) != 4:
            msg = (
                f"permute: invalid number of dimensions for permute: {len(order_)} axes for "
                f"shape {list(t.shape)}"
            )
            raise ShapeError(msg, op="permute", shapes=(t.shape,))
        full = order_ + tuple(range(len(order_), 4))
        if sorted(full) != [0, 1, 2, 3]:
            msg = f"permute: {list(order_)} is not a permutation of the axes 0..3"
            raise ShapeError(msg, op="permute", shapes=(t.shape,))
        ne, nb = [0] * 4, [0] * 4
        for i, o in enumerate(full):
            ne[o], nb[o] = t.ne[i], t.nb[i]
        return view(ctx, "permute", t, pad4(ne), pad4(nb), 0, PermuteParams(pad4(full)))

    def slice(self, ctx: Context, dim: int, low: int, high: int, step: int) -> Tensor:
        """Return indices ``low, low+step, ...`` below ``high`` of dimension ``dim``.

        The length is ``high - low`` for step 1, else ``(high - low + 1) // step`` (ollama's rule,
        not Python's slicing; docs/layout.md). A view, except along dim 0 with a step > 1, which
        copies.

        >>> t = ctx.from_floats([0, 1, 2, 3, 4, 5, 6], 7)
        >>> y = t.slice(ctx, 0, 0, 7, 3)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((2,), [0.0, 3.0])
        >>> t.slice(ctx, 0, 0, 4, 3).shape, t.slice(ctx, 0, 0, 1, 3).shape
        ((1,), (0,))
        """
        t = as_tensor(self)
        if not isinstance(dim, int) or not 0 <= dim < 4:
            msg = f"slice: invalid dimension {dim!r}"
            raise ShapeError(msg, op="slice", shapes=(t.shape,))
        if low < 0 or high > t.ne[dim] or low >= high or step < 1:
            msg = (
                f"slice: invalid slice parameters low={low} high={high} step={step} for "
                f"dim {dim} of extent {t.ne[dim]}"
            )
            raise ShapeError(msg, op="slice", shapes=(t.shape,))
        n = _slice_len(low, high, step)
        block = TRAITS[t.dtype].block_size
        if dim == 0 and block > 1 and (low % block or step > 1 or n % block):
            msg = f"slice: cannot cut through the {block}-element blocks of a {t.dtype.name} tensor"
            raise ShapeError(msg, op="slice", shapes=(t.shape,))
        offs = (low // block if dim == 0 else low) * t.nb[dim]
        ne = list(t.ne)
        ne[dim] = n
        nb = list(t.nb)
        if dim == 0 and step > 1:
            if n == 0:
                return view(ctx, "view", t, pad4(ne), t.nb, offs, ViewParams(pad4(ne), t.nb, offs))
            vne = (1, n, t.ne[1], t.ne[2] * t.ne[3])
            vnb = (t.nb[0], step * t.nb[0], t.nb[1], t.nb[2])
            v = view(ctx, "view", t, vne, vnb, offs, ViewParams(vne, vnb, offs))
            return v.contiguous(ctx, n, t.ne[1], t.ne[2], t.ne[3])
        nb[dim] = step * t.nb[dim]
        ne4, nb4 = pad4(ne), pad4(nb)
        return view(ctx, "view", t, ne4, nb4, offs, ViewParams(ne4, nb4, offs))

    def chunk(self, ctx: Context, dim: int, size: int) -> list[Tensor]:
        """Split ``dim`` into views of ``size`` (the last one holds the remainder).

        >>> t = ctx.from_floats(np.arange(12), 3, 4)
        >>> a, b = t.chunk(ctx, 0, 2)
        >>> a.shape, b.shape
        ((2, 4), (1, 4))
        >>> y = b.contiguous(ctx)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [2.0, 5.0, 8.0, 11.0]
        """
        t = as_tensor(self)
        require_dim("chunk", dim)
        if size <= 0:
            msg = f"chunk: size must be positive, got {size}"
            raise ShapeError(msg, op="chunk", shapes=(t.shape,))
        d = t.ne[dim]
        sections = [size] * (d // size) + ([d % size] if d % size else [])
        return t.chunk_sections(ctx, dim, *sections)

    def chunk_sections(self, ctx: Context, dim: int, *sections: int) -> list[Tensor]:
        """Split ``dim`` into consecutive views of the given sizes (which must sum to it).

        >>> t = ctx.from_floats(np.arange(12), 6, 2)
        >>> a, b = t.chunk_sections(ctx, 0, 4, 2)
        >>> a.shape, b.shape
        ((4, 2), (2, 2))
        >>> y = b.contiguous(ctx)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [4.0, 5.0, 10.0, 11.0]
        """
        t = as_tensor(self)
        require_dim("chunk_sections", dim)
        out, o = [], 0
        for s in sections:
            out.append(t.slice(ctx, dim, o, o + s, 1))
            o += s
        if o != t.ne[dim]:
            msg = f"chunk_sections: sections do not sum to tensor dimension ({o} != {t.ne[dim]})"
            raise ShapeError(msg, op="chunk_sections", shapes=(t.shape,))
        return out

    # -- copies -------------------------------------------------------------------------------
    def contiguous(self, ctx: Context, *shape: int) -> Tensor:
        """Return a contiguous copy, optionally with a new shape (one extent may be -1).

        >>> t = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2)
        >>> p = t.permute(ctx, 1, 0)
        >>> y = p.contiguous(ctx)
        >>> p.is_contiguous(), y.is_contiguous(), y.shape
        (False, True, (2, 3))
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        """
        t = as_tensor(self)
        if len(shape) > 4:
            msg = f"contiguous: unsupported number of dimensions: {len(shape)}"
            raise ShapeError(msg, op="contiguous", shapes=(t.shape,))
        ne = _target("contiguous", t, shape) if shape else t.ne
        if t.dtype.is_quantized and not t._dim0_packed():
            msg = f"contiguous: dim 0 of a {t.dtype.name} tensor must be packed"
            raise ShapeError(msg, op="contiguous", shapes=(t.shape,))
        return node(ctx, "contiguous", (t,), t.dtype, ne)

    def duplicate(self, ctx: Context) -> Tensor:
        """Return a contiguous copy with the same shape and dtype.

        >>> t = ctx.from_floats([1, 2, 3], 3)
        >>> y = t.duplicate(ctx)
        >>> ctx.compute(y)
        >>> y.floats().tolist(), y.root is t
        ([1.0, 2.0, 3.0], False)
        """
        return self.contiguous(ctx)

    def copy(self, ctx: Context, t2: Tensor) -> Tensor:
        """Write this tensor's values into ``t2`` (converted to its dtype); return ``t2``'s alias.

        Element k of self in logical order goes to element k of ``t2``.

        >>> h = ctx.zeros(DType.F32, 2, 3)
        >>> img = ctx.from_floats([7, 8], 2)
        >>> y = img.copy(ctx, h.view(ctx, 1 * h.stride(1), 2))
        >>> ctx.compute(y, h)
        >>> h.floats().tolist()
        [0.0, 0.0, 7.0, 8.0, 0.0, 0.0]
        """
        t = as_tensor(self)
        if t.nelements != t2.nelements:
            msg = f"copy: {t.nelements} elements cannot be copied into {t2.nelements}"
            raise ShapeError(msg, op="copy", shapes=(t.shape, t2.shape))
        _check_cast("copy", t.dtype, t2.dtype)
        if t2.dtype.is_quantized and t2.dtype != t.dtype:
            require(t2.is_contiguous(), "copy", "a quantised destination must be contiguous", t2)
        if t.dtype.is_quantized:
            t = packed_dim0(ctx, t)
        return inplace(ctx, "copy", (t, t2), into=t2)

    def cast(self, ctx: Context, dtype: DType) -> Tensor:
        """Return a contiguous copy converted to ``dtype`` (F32->I32 truncates toward zero).

        >>> t = ctx.from_floats([3.7, -3.7, 1.5], 3)
        >>> i, h = t.cast(ctx, DType.I32), t.cast(ctx, DType.F16)
        >>> ctx.compute(i, h)
        >>> i.to_numpy().tolist(), h.floats().tolist()
        ([3, -3, 1], [3.69921875, -3.69921875, 1.5])
        """
        t = as_tensor(self)
        _check_cast("cast", t.dtype, dtype)
        if dtype.is_quantized and dtype != t.dtype:
            block = TRAITS[dtype].block_size
            require(t.ne[0] % block == 0, "cast", f"dim 0 must be a multiple of {block}", t)
            t = packed_dim0(ctx, t)
        return node(ctx, "cast", (t,), dtype, t.ne, CastParams(dtype))

    def pad(self, ctx: Context, *shape: int) -> Tensor:
        """Append ``shape[i]`` zeros at the end of dim i (negative values crop from the end).

        >>> t = ctx.from_floats([1, 2], 2, 1)
        >>> y = t.pad(ctx, 1, 2, 0, 0)
        >>> ctx.compute(y)
        >>> y.shape, y.to_numpy().tolist()
        ((3, 3), [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> z = y.pad(ctx, -1, -2, 0, 0)
        >>> ctx.compute(z)
        >>> z.shape, z.floats().tolist()
        ((2,), [1.0, 2.0])
        """
        t = as_tensor(self)
        if len(shape) != 4:
            msg = f"pad: expected 4 dimensions, got {len(shape)}"
            raise ShapeError(msg, op="pad", shapes=(t.shape,))
        p = tuple(as_int("pad", "padding", v) for v in shape)
        if p[3] != 0:
            msg = "pad: padding dim 3 is not supported (cuda does not support 4d tensors)"
            raise ShapeError(msg, op="pad", shapes=(t.shape,))
        require_dtype("pad", t, F32_ONLY)
        ne = tuple(a + b for a, b in zip(t.ne, p))
        if min(ne) < 1:
            msg = f"pad: padding {list(p)} crops shape {list(t.shape)} to nothing"
            raise ShapeError(msg, op="pad", shapes=(t.shape,))
        return node(ctx, "pad", (t,), t.dtype, ne, PadParams(*p))

    def concat(self, ctx: Context, t2: Tensor, dim: int) -> Tensor:
        """Return ``self`` followed by ``t2`` along ``dim`` (other extents must be equal).

        >>> a = ctx.from_floats([1, 2, 3, 4], 2, 2)
        >>> b = ctx.from_floats([9, 9], 1, 2)
        >>> y = a.concat(ctx, b, 0)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((3, 2), [1.0, 2.0, 9.0, 3.0, 4.0, 9.0])
        """
        t = as_tensor(self)
        require_dim("concat", dim)
        if t.dtype != t2.dtype or t.dtype.is_quantized:
            msg = (
                f"concat: dtypes {t.dtype.name} and {t2.dtype.name} (must be equal, not quantised)"
            )
            raise DTypeError(msg, op="concat", dtypes=(t.dtype, t2.dtype))
        same = all(a == b for i, (a, b) in enumerate(zip(t.ne, t2.ne)) if i != dim)
        require(same, "concat", f"extents other than dim {dim} must be equal", t, t2)
        ne = list(t.ne)
        ne[dim] += t2.ne[dim]
        return node(ctx, "concat", (t, t2), t.dtype, ne, ConcatParams(dim))

    def stack(self, ctx: Context, dim: int, *s: Tensor) -> Tensor:
        """Concatenate self and ``s`` along the existing ``dim`` (no new axis, unlike ``np.stack``).

        >>> a, b, c = (ctx.from_floats([i, i + 1], 2) for i in (1, 3, 5))
        >>> y = a.stack(ctx, 0, b, c)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((6,), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        """
        if not s:
            return as_tensor(self)
        return self.concat(ctx, s[0].stack(ctx, dim, *s[1:]), dim)

    def repeat(self, ctx: Context, dim: int, n: int) -> Tensor:
        """Tile the whole tensor ``n`` times along ``dim`` (``np.tile``, not element repeat).

        >>> y = ctx.from_floats([1, 2], 2).repeat(ctx, 0, 3)
        >>> ctx.compute(y)
        >>> y.floats().tolist()
        [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
        """
        t = as_tensor(self)
        if not isinstance(dim, int) or not 0 <= dim < 4:
            msg = f"repeat: invalid dimension {dim!r}"
            raise ShapeError(msg, op="repeat", shapes=(t.shape,))
        require(n >= 1, "repeat", f"count must be >= 1, got {n}", t)
        ne = list(t.ne)
        ne[dim] *= n
        return t.repeat_4d(ctx, *ne)

    def repeat_4d(self, ctx: Context, dim0: int, dim1: int, dim2: int, dim3: int) -> Tensor:
        """Tile to exactly ``[dim0, dim1, dim2, dim3]`` (each a multiple of the input's extent).

        >>> t = ctx.from_floats([1, 2], 1, 2)
        >>> y = t.repeat_4d(ctx, 2, 4, 1, 1)
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((2, 4), [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0])
        """
        t = as_tensor(self)
        ne = tuple(as_int("repeat_4d", "dim", d) for d in (dim0, dim1, dim2, dim3))
        ok = all(d >= 1 and d % e == 0 for d, e in zip(ne, t.ne))
        require(ok, "repeat_4d", f"target {list(ne)} must be a multiple of each extent", t)
        require_dtype("repeat_4d", t, _REPEATABLE)
        t = packed_dim0(ctx, t)  # ggml copies whole dim-0 rows
        return node(ctx, "repeat", (t,), t.dtype, ne)

    # -- gather / scatter ---------------------------------------------------------------------
    def rows(self, ctx: Context, ids: Tensor) -> Tensor:
        """Gather rows: ``out[:, i, j, k] = self[:, ids[i, j, k], j, k]`` (F32, or I32 for I32).

        >>> table = ctx.from_floats(np.arange(1, 13), 3, 4)
        >>> y = table.rows(ctx, ctx.from_ints([2, 0], 2))
        >>> ctx.compute(y)
        >>> y.shape, y.floats().tolist()
        ((3, 2), [7.0, 8.0, 9.0, 1.0, 2.0, 3.0])
        """
        t = as_tensor(self)
        require_dtype("rows", ids, I32_ONLY, "ids")
        require(ids.ne[3] == 1, "rows", "ids must have at most 3 dims", ids)
        require(
            t.ne[2] == ids.ne[1] and t.ne[3] == ids.ne[2],
            "rows",
            "table dims 2, 3 must equal ids dims 1, 2",
            t,
            ids,
        )
        out = I32 if t.dtype == I32 else F32
        t = packed_dim0(ctx, t)
        return node(ctx, "rows", (t, ids), out, (t.ne[0], ids.ne[0], ids.ne[1], ids.ne[2]))

    def set_rows(self, ctx: Context, src: Tensor, idxs: Tensor) -> Tensor:
        """Write row i of ``src`` to row ``idxs[i]`` of self; return self's alias.

        >>> dst = ctx.zeros(DType.F32, 3, 4)
        >>> src = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2)
        >>> y = dst.set_rows(ctx, src, ctx.from_ints([3, 1], 2))
        >>> ctx.compute(y)
        >>> y.to_numpy().tolist()
        [[0.0, 0.0, 0.0], [4.0, 5.0, 6.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]
        """
        dst = as_tensor(self)
        op = "set_rows"
        require_dtype(op, src, F32_ONLY, "src")
        require_dtype(op, idxs, _INDEX_TYPES, "idxs")
        require_dtype(op, dst, _SET_ROWS_DST, "destination")
        require(
            dst.ne[0] == src.ne[0] and dst.ne[2] == src.ne[2] and dst.ne[3] == src.ne[3],
            op,
            "destination and src must agree in dims 0, 2, 3",
            dst,
            src,
        )
        require(src.ne[1] == idxs.ne[0], op, "src dim 1 must equal idxs dim 0", src, idxs)
        require(
            idxs.ne[3] == 1 and src.ne[2] % idxs.ne[1] == 0 and src.ne[3] % idxs.ne[2] == 0,
            op,
            "idxs dims 1, 2 must divide src dims 2, 3",
            src,
            idxs,
        )
        require(dst._dim0_packed(), op, "destination rows must be contiguous", dst)
        src = packed_dim0(ctx, src)
        return inplace(ctx, "set_rows", (dst, src, idxs))

    def set_inplace(
        self, ctx: Context, src: Tensor, nb1: int, nb2: int, nb3: int, offset: int
    ) -> Tensor:
        """Copy ``src`` into a byte-strided window of self; return self's alias.

        >>> dst = ctx.zeros(DType.F32, 3, 2)
        >>> src = ctx.from_floats([7, 8], 2)
        >>> offset = 1 * dst.stride(1) + 1 * dst.stride(0)
        >>> y = dst.set_inplace(ctx, src, dst.stride(1), dst.stride(2), dst.stride(3), offset)
        >>> ctx.compute(y)
        >>> y.to_numpy().tolist()
        [[0.0, 0.0, 0.0], [0.0, 7.0, 8.0]]
        """
        dst = as_tensor(self)
        op = "set_inplace"
        require_dtype(op, dst, frozenset({DType.F32, DType.I32}))
        if src.dtype != dst.dtype:
            msg = f"{op}: src is {src.dtype.name}, destination {dst.dtype.name}; they must match"
            raise DTypeError(msg, op=op, dtypes=(dst.dtype, src.dtype))
        require(dst.is_contiguous(), op, "destination must be contiguous", dst)
        require(
            src.nelements <= dst.nelements, op, "src has more elements than destination", dst, src
        )
        strides = (TRAITS[dst.dtype].type_size, nb1, nb2, nb3)
        if min(nb1, nb2, nb3, offset) < 0 or offset >= 1 << 30:
            msg = f"{op}: invalid strides {list(strides)} or offset {offset}"
            raise ShapeError(msg, op=op, shapes=(dst.shape, src.shape))
        last = offset + sum((n - 1) * s for n, s in zip(src.ne, strides)) + strides[0]
        require(
            last <= dst.nbytes,
            op,
            f"the window (offset {offset}, strides {list(strides)}) ends past the destination",
            dst,
            src,
        )
        src = rows_contiguous(ctx, src)
        return inplace(ctx, "set_inplace", (dst, src), SetParams(nb1, nb2, nb3, offset))


__all__ = ["LayoutOps", "contiguous", "infer_shape"]
