"""The op catalogue: every Tensor method and the primitive graph ops backends implement.

Tensor methods validate their operands (same error on every backend), then build graph nodes
out of a small set of primitive ops; composite methods (``variance``, ``conv_2d``, ``stack``, ...)
are written once here from primitives. A backend implements each primitive it supports in its
``kernels`` table; building a node whose primitive has no kernel raises ``NotSupportedError``.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "CONTEXT_CONSTRUCTORS",
    "PRIMITIVES",
    "TENSOR_METHODS",
    "UNARY_METHODS",
    "UNARY_PRIMITIVES",
    "VIEW_OPS",
    "WRITE_OPS",
    "OpSpec",
]


class OpSpec(NamedTuple):
    """One primitive graph op: its name, what kind of result it makes, and its operands."""

    name: str
    kind: str  # "view" (no computation), "compute", "write" (result aliases a destination)
    operands: str


_SPECS: Final[tuple[OpSpec, ...]] = (
    # views: no kernel needed by array backends (storage + strides say it all)
    OpSpec("reshape", "view", "a; params (ne,)"),
    OpSpec("view", "view", "a; params (ne, nb, offset_bytes)"),
    OpSpec("permute", "view", "a; params (axes,)"),
    # writes into an existing tensor
    OpSpec("cpy", "write", "src, dst"),
    OpSpec("set_rows", "write", "dst, src, idxs"),
    OpSpec("set", "write", "dst, src; params (nb1, nb2, nb3, offset)"),
    # computations (a node with view_src set is in-place: it writes its input's storage)
    OpSpec("cont", "compute", "a (logical order into the node's shape)"),
    OpSpec("cast", "compute", "a; params (dtype,)"),
    OpSpec("get_rows", "compute", "table, ids"),
    OpSpec("concat", "compute", "a, b; params (dim,)"),
    OpSpec("repeat", "compute", "a (tiled to the node's shape)"),
    OpSpec("pad", "compute", "a; params (p0, p1, p2, p3)"),
    OpSpec("arange", "compute", "params (start, stop, step)"),
    OpSpec("fill", "compute", "a; params (value,)"),
    OpSpec("diag", "compute", "a"),
    OpSpec("tri", "compute", "a; params (type,)"),
    OpSpec("add", "compute", "a, b (tiled)"),
    OpSpec("sub", "compute", "a, b (tiled)"),
    OpSpec("mul", "compute", "a, b (tiled)"),
    OpSpec("div", "compute", "a, b (tiled)"),
    OpSpec("add_id", "compute", "a, bias, ids"),
    OpSpec("mul_mat", "compute", "a, b; params (precision,)"),
    OpSpec("mul_mat_id", "compute", "experts, b, ids"),
    OpSpec("scale", "compute", "a; params (s,)"),
    OpSpec("clamp", "compute", "a; params (lo, hi)"),
    OpSpec("sin", "compute", "a"),
    OpSpec("cos", "compute", "a"),
    OpSpec("tanh", "compute", "a"),
    OpSpec("sqr", "compute", "a"),
    OpSpec("sqrt", "compute", "a"),
    OpSpec("exp", "compute", "a"),
    OpSpec("neg", "compute", "a"),
    OpSpec("softplus", "compute", "a"),
    OpSpec("sigmoid", "compute", "a"),
    OpSpec("relu", "compute", "a"),
    OpSpec("silu", "compute", "a"),
    OpSpec("gelu", "compute", "a"),
    OpSpec("gelu_erf", "compute", "a"),
    OpSpec("gelu_quick", "compute", "a"),
    OpSpec("glu", "compute", "gate, up; params (kind,)"),
    OpSpec("swiglu_oai", "compute", "gate, up; params (alpha, limit)"),
    OpSpec("soft_max", "compute", "a"),
    OpSpec("norm", "compute", "a; params (eps,)"),
    OpSpec("rms_norm", "compute", "a; params (eps,)"),
    OpSpec("l2_norm", "compute", "a; params (eps,)"),
    OpSpec("sum_rows", "compute", "a"),
    OpSpec("mean", "compute", "a"),
    OpSpec("cumsum", "compute", "a"),
    OpSpec("argsort", "compute", "a; params (order,)"),
    OpSpec("solve_tri", "compute", "A, b"),
    OpSpec("pool_2d", "compute", "a; params ('avg', k, s, p)"),
    OpSpec("im2col", "compute", "kernel, image; params (s0, s1, p0, p1, d0, d1)"),
    OpSpec("conv_3d", "compute", "weight, input; params (c, s0, s1, s2, p0, p1, p2, d0, d1, d2)"),
    OpSpec("ssm_conv", "compute", "sx, kernel"),
    OpSpec("ssm_scan", "compute", "s, x, dt, A, B, C, ids"),
    OpSpec("interpolate", "compute", "a; params (mode,)"),
    OpSpec(
        "rope",
        "compute",
        "x, positions[, factors]; params (dim, mode, n_ctx_orig, base, "
        "freq_scale, ext_factor, attn_factor, beta_fast, beta_slow, sections)",
    ),
    OpSpec("sdpa", "compute", "q, k, v[, mask][, sinks]; params (scale, has_mask, has_sinks)"),
)

PRIMITIVES: Final[dict[str, OpSpec]] = {s.name: s for s in _SPECS}
VIEW_OPS: Final[frozenset[str]] = frozenset(s.name for s in _SPECS if s.kind == "view")
WRITE_OPS: Final[frozenset[str]] = frozenset(s.name for s in _SPECS if s.kind == "write")

#: Element-wise unary primitives (one input, same shape and dtype out).
UNARY_PRIMITIVES: Final[tuple[str, ...]] = (
    "sin", "cos", "tanh", "sqr", "sqrt", "exp", "neg", "softplus", "sigmoid", "relu", "silu",
    "gelu", "gelu_erf", "gelu_quick",
)  # fmt: skip

#: Public Tensor methods that are element-wise unary functions (F32 and F16).
UNARY_METHODS: Final[tuple[str, ...]] = (
    "sin", "cos", "tanh", "sqr", "sqrt", "exp", "neg", "softplus", "sigmoid", "sigmoid_out",
    "gelu", "gelu_erf", "quick_gelu", "silu", "relu",
)  # fmt: skip

#: Public Tensor op methods (the seed's Tensor interface plus ``rope``), for completeness checks.
TENSOR_METHODS: Final[tuple[str, ...]] = (
    "add",
    "sub",
    "mul",
    "div",
    "scale",
    "clamp",
    "fill",
    "sin",
    "cos",
    "tanh",
    "sqr",
    "sqrt",
    "exp",
    "neg",
    "softplus",
    "sigmoid",
    "sigmoid_out",
    "gelu",
    "gelu_erf",
    "quick_gelu",
    "silu",
    "relu",
    "silu_alpha_limit",
    "mulmat",
    "mulmat_full_prec",
    "mulmat_id",
    "add_id",
    "diag",
    "tri",
    "solve_tri",
    "softmax",
    "l2_norm",
    "rms_norm",
    "layer_norm",
    "sum_rows",
    "mean",
    "variance",
    "stddev",
    "cum_sum",
    "argsort",
    "top_k",
    "reshape",
    "view",
    "permute",
    "slice",
    "chunk",
    "chunk_sections",
    "contiguous",
    "duplicate",
    "copy",
    "cast",
    "pad",
    "concat",
    "stack",
    "repeat",
    "repeat_4d",
    "rows",
    "set_rows",
    "set_inplace",
    "avg_pool_2d",
    "im2col",
    "conv_2d",
    "conv_3d",
    "ssm_conv",
    "ssm_scan",
    "interpolate",
    "rope",
    "scaled_dot_product_attention",
    "from_bytes",
    "from_floats",
    "from_ints",
    "bytes",
    "floats",
)

#: Public Context constructors.
CONTEXT_CONSTRUCTORS: Final[tuple[str, ...]] = (
    "empty",
    "zeros",
    "from_bytes",
    "from_floats",
    "from_ints",
    "arange",
)
