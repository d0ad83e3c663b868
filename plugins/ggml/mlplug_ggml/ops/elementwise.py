"""Element-wise kernels: binary arithmetic, unary functions (plain and in place), GLUs, scale,
clamp and fill."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mlplug.plugin_api import (
    UNARY_PRIMITIVES,
    ClampParams,
    FillParams,
    GluParams,
    NotSupportedError,
    ScaleParams,
    SwigluOaiParams,
)

from ._layout import packed_src
from ._registry import Builder, implements

if TYPE_CHECKING:
    from mlplug import Tensor

#: mlplug's gate kind -> ggml's split GLU builder (gate ``a``, linear ``b``).
_GLU: Final = {
    "gelu": "geglu_split",
    "gelu_quick": "geglu_quick_split",
    "silu": "swiglu_split",
    "relu": "reglu_split",
}


@implements("add", needs=("add", "repeat_4d"))
def add(b: Builder, t: Tensor) -> int:
    """``ggml_add(a, b)``: b tiled onto a.

    ggml's CPU kernel for a quantised ``a`` needs ``b`` of the same shape: a smaller ``b`` is
    tiled first with ``ggml_repeat_4d`` (the same values the broadcast would read).
    """
    a, y = t.src
    other = b.src(t, 1)
    if a.dtype.is_quantized and y.ne != a.ne:
        ne = a.ne
        other = b.lib.ggml_repeat_4d(b.ctx, other, ne[0], ne[1], ne[2], ne[3])
    return b.lib.ggml_add(b.ctx, b.src(t, 0), other)  # type: ignore[no-any-return]


@implements("sub", needs=("sub",))
def sub(b: Builder, t: Tensor) -> int:
    """``ggml_sub(a, b)``."""
    return b.lib.ggml_sub(b.ctx, b.src(t, 0), b.src(t, 1))  # type: ignore[no-any-return]


@implements("mul", needs=("mul",))
def mul(b: Builder, t: Tensor) -> int:
    """``ggml_mul(a, b)``."""
    return b.lib.ggml_mul(b.ctx, b.src(t, 0), b.src(t, 1))  # type: ignore[no-any-return]


@implements("div", needs=("div",))
def div(b: Builder, t: Tensor) -> int:
    """``ggml_div(a, b)``."""
    return b.lib.ggml_div(b.ctx, b.src(t, 0), b.src(t, 1))  # type: ignore[no-any-return]


def _unary(name: str) -> None:
    plain = f"ggml_{name}"
    inplace = f"ggml_{name}_inplace"

    def kernel(b: Builder, t: Tensor) -> int:
        # A node with view_src set overwrites its input (ggml's *_inplace builders).
        fn = getattr(b.lib, inplace if t.view_src is not None else plain)
        return fn(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]

    kernel.__name__ = name
    kernel.__qualname__ = name
    kernel.__doc__ = f"``ggml_{name}`` (``ggml_{name}_inplace`` for an in-place node)."
    implements(name, needs=(name, f"{name}_inplace"))(kernel)


for _name in UNARY_PRIMITIVES:
    _unary(_name)


@implements("glu", needs=tuple(_GLU.values()))
def glu(b: Builder, t: Tensor) -> int:
    """Split GLU: ``act(gate) * up`` with ggml's ``*_split`` builders."""
    kind = GluParams.of(t).kind
    fn = _GLU.get(kind)
    if fn is None:
        reason = f"gate kind {kind!r}"
        raise NotSupportedError(b.BACKEND, "glu", reason)
    gate, up = packed_src(b, t, 0, c1=True), packed_src(b, t, 1, c1=True)
    return getattr(b.lib, f"ggml_{fn}")(b.ctx, gate, up)  # type: ignore[no-any-return]


@implements("swiglu_oai", needs=("swiglu_oai",))
def swiglu_oai(b: Builder, t: Tensor) -> int:
    """``ggml_swiglu_oai(gate, up, alpha, limit)``."""
    p = SwigluOaiParams.of(t)
    alpha, limit = p.alpha, p.limit
    gate, up = packed_src(b, t, 0, c1=True), packed_src(b, t, 1, c1=True)
    return b.lib.ggml_swiglu_oai(b.ctx, gate, up, alpha, limit)  # type: ignore[no-any-return]


@implements("scale", needs=("scale",))
def scale(b: Builder, t: Tensor) -> int:
    """``ggml_scale(a, f32(s))``."""
    return b.lib.ggml_scale(b.ctx, b.src(t, 0), ScaleParams.of(t).s)  # type: ignore[no-any-return]


@implements("clamp", needs=("clamp",))
def clamp(b: Builder, t: Tensor) -> int:
    """``ggml_clamp_inplace(a, lo, hi)``, or ``ggml_clamp`` in builds without it (there
    ``ggml_clamp`` is itself a view of its input, written in place)."""
    p = ClampParams.of(t)
    lo, hi = p.lo, p.hi
    fn = b.lib.ggml_clamp_inplace or b.lib.ggml_clamp
    return fn(b.ctx, b.src(t, 0), lo, hi)  # type: ignore[no-any-return]


@implements("fill", needs=("fill_inplace",))
def fill(b: Builder, t: Tensor) -> int:
    """``ggml_fill_inplace(a, value)``."""
    return b.lib.ggml_fill_inplace(b.ctx, b.src(t, 0), FillParams.of(t).value)  # type: ignore[no-any-return]
