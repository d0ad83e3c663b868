"""Layout kernels: views, copies and casts, gather/scatter, concat, repeat, pad and arange."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mlplug.plugin_api import (
    TRAITS,
    ArangeParams,
    ConcatParams,
    DType,
    PadParams,
    PermuteParams,
    SetParams,
    ViewParams,
)

from .._lib import GGMLTensor
from ._layout import canonical_strides, packed_src
from ._registry import Builder, implements

if TYPE_CHECKING:
    from mlplug import Tensor


#: Integers up to this magnitude are exact in F32.
_F32_EXACT: Final = 1 << 24
_GGML_F32: Final = TRAITS[DType.F32].ggml_type


def ggml_type(t: Tensor) -> int:
    """The ggml type id of ``t``'s dtype."""
    return TRAITS[t.dtype].ggml_type


@implements("reshape", needs=("reshape_4d",))
def reshape(b: Builder, t: Tensor) -> int:
    """``ggml_reshape_4d`` (the source is contiguous: the core copies otherwise)."""
    ne = t.ne
    return b.lib.ggml_reshape_4d(b.ctx, b.src(t, 0), ne[0], ne[1], ne[2], ne[3])  # type: ignore[no-any-return]


def _set_strides(ptr: int, t: Tensor) -> int:
    """Give the ggml view the node's strides, with size-1 dims' strides made canonical (what
    ggml computed already, unless ``nb[0]`` differs or a size-1 dim's stride does)."""
    s = GGMLTensor.at(ptr)
    s.nb[0], s.nb[1], s.nb[2], s.nb[3] = canonical_strides(t)
    return ptr


@implements("view", needs=("view_4d",))
def view(b: Builder, t: Tensor) -> int:
    """``ggml_view_4d`` (``nb[0]``, which ggml always sets to the element size, is patched when
    the node's differs; strides of size-1 dims are made canonical)."""
    p = ViewParams.of(t)
    ne, nb, offset = p.ne, p.nb, p.offset
    ptr: int = b.lib.ggml_view_4d(
        b.ctx, b.src(t, 0), ne[0], ne[1], ne[2], ne[3], nb[1], nb[2], nb[3], offset
    )
    return _set_strides(ptr, t)


@implements("permute", needs=("permute",))
def permute(b: Builder, t: Tensor) -> int:
    """``ggml_permute``: input axis i goes to position ``axes[i]`` (size-1 dims' strides made
    canonical)."""
    a = PermuteParams.of(t).axes
    ptr: int = b.lib.ggml_permute(b.ctx, b.src(t, 0), a[0], a[1], a[2], a[3])
    return _set_strides(ptr, t)


@implements("contiguous", needs=("cont_4d",))
def cont(b: Builder, t: Tensor) -> int:
    """``ggml_cont_4d``: a contiguous copy in logical order, with the node's shape."""
    ne = t.ne
    return b.lib.ggml_cont_4d(b.ctx, b.src(t, 0), ne[0], ne[1], ne[2], ne[3])  # type: ignore[no-any-return]


def _convertible(b: Builder, t: Tensor) -> int:
    """Source 0 of a cast/copy, widened to F32 first when ggml has no direct conversion.

    Today's CPU copy kernel has no F16/BF16 -> I32 path (it crashes): going through F32 is
    exact and truncates toward zero as the direct conversion does.
    """
    a = b.src(t, 0)
    if t.dtype == DType.I32 and t.src[0].dtype in (DType.F16, DType.BF16):
        a = b.lib.ggml_cast(b.ctx, a, _GGML_F32)
    return a


@implements("cast", needs=("cast",))
def cast(b: Builder, t: Tensor) -> int:
    """``ggml_cast(a, type)``."""
    return b.lib.ggml_cast(b.ctx, _convertible(b, t), ggml_type(t))  # type: ignore[no-any-return]


@implements("copy", needs=("cpy", "cast"))
def copy(b: Builder, t: Tensor) -> int:
    """``ggml_cpy(src, dst)``: writes into the destination's storage (a view of it)."""
    return b.lib.ggml_cpy(b.ctx, _convertible(b, t), b.src(t, 1))  # type: ignore[no-any-return]


@implements("rows", needs=("get_rows",))
def rows(b: Builder, t: Tensor) -> int:
    """``ggml_get_rows(table, ids)`` (ids checked against the table before compute)."""
    return b.lib.ggml_get_rows(b.ctx, b.src(t, 0), b.src(t, 1))  # type: ignore[no-any-return]


@implements("set_rows", needs=("set_rows",))
def set_rows(b: Builder, t: Tensor) -> int:
    """``ggml_set_rows(dst, src, idxs)``: writes into the destination's storage."""
    return b.lib.ggml_set_rows(b.ctx, b.src(t, 0), b.src(t, 1), b.src(t, 2))  # type: ignore[no-any-return]


@implements("set_inplace", needs=("set_inplace",))
def set_(b: Builder, t: Tensor) -> int:
    """``ggml_set_inplace(dst, src, nb1, nb2, nb3, offset)``."""
    r = SetParams.of(t)
    nb1, nb2, nb3, offset = r.nb1, r.nb2, r.nb3, r.offset
    return b.lib.ggml_set_inplace(b.ctx, b.src(t, 0), b.src(t, 1), nb1, nb2, nb3, offset)  # type: ignore[no-any-return]


@implements("concat", needs=("concat",))
def concat(b: Builder, t: Tensor) -> int:
    """``ggml_concat(a, b, dim)``."""
    return b.lib.ggml_concat(b.ctx, b.src(t, 0), b.src(t, 1), ConcatParams.of(t).dim)  # type: ignore[no-any-return]


@implements("repeat", needs=("repeat_4d",))
def repeat(b: Builder, t: Tensor) -> int:
    """``ggml_repeat_4d`` to the node's shape (tiling)."""
    ne = t.ne
    a = packed_src(b, t, 0)  # the CPU kernel reads rows with dim 0 packed
    return b.lib.ggml_repeat_4d(b.ctx, a, ne[0], ne[1], ne[2], ne[3])  # type: ignore[no-any-return]


@implements("pad", needs=("pad",))
def pad(b: Builder, t: Tensor) -> int:
    """``ggml_pad(a, p0, p1, p2, p3)``: zeros at the end (negative amounts crop)."""
    p = PadParams.of(t)
    a = packed_src(b, t, 0)  # the CPU kernel needs dim 0 packed
    return b.lib.ggml_pad(b.ctx, a, p.p0, p.p1, p.p2, p.p3)  # type: ignore[no-any-return]


@implements("arange", needs=("arange", "scale", "scale_bias"))
def arange(b: Builder, t: Tensor) -> int:
    """``f32(start + f32(step * i))``, as ``ggml_arange`` of ollama v0.17.5's ggml computed it.

    Today's CPU build evaluates ``start + step * i`` with a fused multiply-add (one rounding
    instead of two: ``arange(-2, 2, 0.1)[20]`` is ``2.98e-08``, not ``0``). The two roundings
    are kept by building it as ``ggml_arange(0, n, 1)`` (exact integers), ``ggml_scale(step)``
    and ``ggml_scale_bias(1, start)``. Beyond 2**24 values (integers no longer exact in F32)
    plain ``ggml_arange`` is used.
    """
    r = ArangeParams.of(t)
    start, stop, step = r.start, r.stop, r.step
    lib, ctx = b.lib, b.ctx
    n = t.ne[0]
    if n > _F32_EXACT:
        return lib.ggml_arange(ctx, start, stop, step)  # type: ignore[no-any-return]
    i = lib.ggml_arange(ctx, 0.0, float(n), 1.0)
    return lib.ggml_scale_bias(ctx, lib.ggml_scale(ctx, i, step), 1.0, start)  # type: ignore[no-any-return]
