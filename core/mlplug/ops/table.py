"""The op table: every public op and every primitive graph op, in one place.

One :class:`Op` row per name. A row may be a public ``Tensor`` method, a public ``Context``
constructor, a primitive graph op (``kind`` set: what backends implement, with the record type
of its parameters) or several at once, when the public method and the primitive are the same
op (``add``, ``mulmat``, ``softmax``, ``rows``, ...). Every list the core and the plugins use
(:data:`PRIMITIVES`, :data:`TENSOR_METHODS`, :data:`UNARY_PRIMITIVES`, ...) is derived from
:data:`OPS`, so adding an op is adding one row.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

from .records import (
    ArangeParams,
    ArgsortParams,
    AttentionParams,
    CastParams,
    ClampParams,
    ConcatParams,
    Conv3dParams,
    FillParams,
    GluParams,
    Im2colParams,
    InterpolateParams,
    MulmatParams,
    NoParams,
    NormParams,
    OpParams,
    PadParams,
    PermuteParams,
    Pool2dParams,
    ReshapeParams,
    RopeParams,
    ScaleParams,
    SetParams,
    SwigluOaiParams,
    TriParams,
    ViewParams,
)

__all__ = [
    "CONTEXT_CONSTRUCTORS",
    "OPS",
    "PRIMITIVES",
    "TENSOR_METHODS",
    "UNARY_METHODS",
    "UNARY_PRIMITIVES",
    "VIEW_OPS",
    "WRITE_OPS",
    "Op",
    "OpKind",
    "OpSpec",
]

#: What a primitive's result is: a ``view`` of its source's storage (no computation), a
#: ``write`` into an existing tensor (the result aliases the destination), or a ``compute``.
OpKind = Literal["view", "write", "compute"]


class OpSpec(NamedTuple):
    """One primitive graph op: its name, what kind of result it makes, its operands and the
    record type of its parameters (``node.params``)."""

    name: str
    kind: OpKind
    operands: str
    params: type[OpParams] = NoParams


class Op(NamedTuple):
    """One row of the op table (see the module docstring)."""

    name: str
    #: Set for a primitive graph op.
    kind: OpKind | None = None
    #: A primitive's operands, in order (documentation).
    operands: str = ""
    #: A primitive's parameter record type.
    params: type[OpParams] = NoParams
    #: A public ``Tensor`` method of this name exists.
    method: bool = False
    #: A public ``Context`` constructor of this name exists.
    constructor: bool = False
    #: Element-wise unary (one input, same shape and dtype out).
    unary: bool = False


def _prim(
    name: str,
    kind: OpKind,
    operands: str,
    params: type[OpParams] = NoParams,
    *,
    method: bool = True,
    unary: bool = False,
    constructor: bool = False,
) -> Op:
    """A primitive (by default also the public method of the same name)."""
    return Op(name, kind, operands, params, method, constructor, unary)


def _method(name: str, *, unary: bool = False, constructor: bool = False) -> Op:
    """A public Tensor method built from primitives (composite, or a variant of one)."""
    return Op(name, method=True, constructor=constructor, unary=unary)


def _unary(name: str, *, method: bool = True) -> Op:
    return _prim(name, "compute", "a", method=method, unary=True)


OPS: Final[tuple[Op, ...]] = (
    # -- element-wise: binary (second operand tiled onto the first), scale, clamp, fill
    _prim("add", "compute", "a, b (tiled)"),
    _prim("sub", "compute", "a, b (tiled)"),
    _prim("mul", "compute", "a, b (tiled)"),
    _prim("div", "compute", "a, b (tiled)"),
    _prim("scale", "compute", "a", ScaleParams),
    _prim("clamp", "compute", "a", ClampParams),
    _prim("fill", "compute", "a", FillParams),
    # -- element-wise unary functions (F32 and F16)
    _unary("sin"),
    _unary("cos"),
    _unary("tanh"),
    _unary("sqr"),
    _unary("sqrt"),
    _unary("exp"),
    _unary("neg"),
    _unary("softplus"),
    _unary("sigmoid"),
    _method("sigmoid_out", unary=True),
    _unary("gelu"),
    _unary("gelu_erf"),
    _unary("gelu_quick", method=False),
    _method("quick_gelu", unary=True),
    _unary("silu"),
    _unary("relu"),
    # -- gated forms: activation(gate) * up
    _prim("glu", "compute", "gate, up", GluParams, method=False),
    _prim("swiglu_oai", "compute", "gate, up", SwigluOaiParams, method=False),
    _method("silu_alpha_limit"),
    # -- matrices
    _prim("mulmat", "compute", "a, b", MulmatParams),
    _method("mulmat_full_prec"),
    _prim("mulmat_id", "compute", "experts, b, ids"),
    _prim("add_id", "compute", "a, bias, ids"),
    _prim("diag", "compute", "a"),
    _prim("tri", "compute", "a", TriParams),
    _prim("solve_tri", "compute", "A, b"),
    # -- row reductions and normalisations
    _prim("softmax", "compute", "a"),
    _prim("l2_norm", "compute", "a", NormParams),
    _prim("rms_norm", "compute", "a", NormParams),
    _prim("norm", "compute", "a", NormParams, method=False),
    _method("layer_norm"),
    _prim("sum_rows", "compute", "a"),
    _prim("mean", "compute", "a"),
    _method("variance"),
    _method("stddev"),
    _prim("cum_sum", "compute", "a"),
    _prim("argsort", "compute", "a", ArgsortParams),
    _method("top_k"),
    # -- views: no kernel needed by array backends (storage + strides say it all)
    _prim("reshape", "view", "a", ReshapeParams),
    _prim("view", "view", "a", ViewParams),
    _prim("permute", "view", "a", PermuteParams),
    _method("slice"),
    _method("chunk"),
    _method("chunk_sections"),
    # -- layout (a node with view_src set is in-place: it writes its input's storage)
    _prim("contiguous", "compute", "a (logical order into the node's shape)"),
    _method("duplicate"),
    _prim("copy", "write", "src, dst"),
    _prim("cast", "compute", "a", CastParams),
    _prim("pad", "compute", "a", PadParams),
    _prim("concat", "compute", "a, b", ConcatParams),
    _method("stack"),
    _prim("repeat", "compute", "a (tiled to the node's shape)"),
    _method("repeat_4d"),
    _prim("rows", "compute", "table, ids"),
    _prim("set_rows", "write", "dst, src, idxs"),
    _prim("set_inplace", "write", "dst, src", SetParams),
    # -- neural-network ops
    _prim("pool_2d", "compute", "a", Pool2dParams, method=False),
    _method("avg_pool_2d"),
    _prim("im2col", "compute", "kernel, image", Im2colParams),
    _method("conv_2d"),
    _prim("conv_3d", "compute", "weight, input", Conv3dParams),
    _prim("ssm_conv", "compute", "sx, kernel"),
    _prim("ssm_scan", "compute", "s, x, dt, A, B, C, ids"),
    _prim("interpolate", "compute", "a", InterpolateParams),
    _prim("rope", "compute", "x, positions[, factors]", RopeParams),
    _prim("scaled_dot_product_attention", "compute", "q, k, v[, mask][, sinks]", AttentionParams),
    # -- data in and out, constructors
    _prim("arange", "compute", "(none)", ArangeParams, method=False, constructor=True),
    _method("from_bytes", constructor=True),
    _method("from_floats", constructor=True),
    _method("from_ints", constructor=True),
    _method("bytes"),
    _method("floats"),
    Op("empty", constructor=True),
    Op("zeros", constructor=True),
)

#: Primitive graph ops by name (what a backend's kernel table may name).
PRIMITIVES: Final[dict[str, OpSpec]] = {
    o.name: OpSpec(o.name, o.kind, o.operands, o.params) for o in OPS if o.kind is not None
}
#: Primitives whose result is a view of their source's storage.
VIEW_OPS: Final[frozenset[str]] = frozenset(n for n, s in PRIMITIVES.items() if s.kind == "view")
#: Primitives that write into an existing tensor (the result aliases the destination).
WRITE_OPS: Final[frozenset[str]] = frozenset(n for n, s in PRIMITIVES.items() if s.kind == "write")
#: Element-wise unary primitives (one input, same shape and dtype out).
UNARY_PRIMITIVES: Final[tuple[str, ...]] = tuple(
    o.name for o in OPS if o.unary and o.kind is not None
)
#: Public Tensor methods that are element-wise unary functions (F32 and F16).
UNARY_METHODS: Final[tuple[str, ...]] = tuple(o.name for o in OPS if o.unary and o.method)
#: Public Tensor op methods, for completeness checks.
TENSOR_METHODS: Final[tuple[str, ...]] = tuple(o.name for o in OPS if o.method)
#: Public Context constructors.
CONTEXT_CONSTRUCTORS: Final[tuple[str, ...]] = tuple(o.name for o in OPS if o.constructor)
