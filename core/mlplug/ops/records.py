"""The typed parameter records of the primitive ops.

Each primitive declares what it carries besides its operands as one frozen record: the op
builders of :mod:`mlplug.ops` create it, kernels read it by field name. Records are immutable,
hashable and compare by value (and type), so a backend may key a graph cache on them. Ops
without parameters share the empty record :data:`NO_PARAMS`.

A kernel gets its node's record, checked and typed, with ``RecordClass.of(node)``::

    p = RopeParams.of(t)
    p.n_dims, p.mode, p.base
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from ..errors import GraphError

if TYPE_CHECKING:
    from .._tensorbase import Shape4, TensorBase
    from ..dtypes import DType

__all__ = [
    "NO_PARAMS",
    "ArangeParams",
    "ArgsortParams",
    "AttentionParams",
    "CastParams",
    "ClampParams",
    "ConcatParams",
    "Conv3dParams",
    "FillParams",
    "GluParams",
    "Im2colParams",
    "InterpolateParams",
    "MulmatParams",
    "NoParams",
    "NormParams",
    "OpParams",
    "PadParams",
    "PermuteParams",
    "Pool2dParams",
    "ReshapeParams",
    "RopeParams",
    "ScaleParams",
    "SetParams",
    "SwigluOaiParams",
    "TriParams",
    "ViewParams",
]

P = TypeVar("P", bound="OpParams")


@dataclass(frozen=True, slots=True)
class OpParams:
    """Base of every parameter record (a primitive without parameters uses :class:`NoParams`)."""

    @classmethod
    def of(cls: type[P], t: TensorBase) -> P:
        """Return ``t.params`` typed as this record.

        :raises GraphError: ``t`` carries another record (the node is not of this op).
        """
        p = t.params
        if not isinstance(p, cls):
            msg = f"{t.op}: node carries {type(p).__name__}, not {cls.__name__}"
            raise GraphError(msg)
        return p


@dataclass(frozen=True, slots=True)
class NoParams(OpParams):
    """The record of a primitive that has no parameters (one shared instance)."""


#: The shared empty record.
NO_PARAMS: NoParams = NoParams()


# -- views and writes -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReshapeParams(OpParams):
    """``reshape``: the new 4-D shape."""

    ne: Shape4


@dataclass(frozen=True, slots=True)
class ViewParams(OpParams):
    """``view``: the view's shape, byte strides and byte offset into its source."""

    ne: Shape4
    nb: Shape4
    offset: int


@dataclass(frozen=True, slots=True)
class PermuteParams(OpParams):
    """``permute``: input axis ``i`` goes to position ``axes[i]``."""

    axes: Shape4


@dataclass(frozen=True, slots=True)
class SetParams(OpParams):
    """``set_inplace``: destination strides (dims 1..3) and byte offset the source is put at."""

    nb1: int
    nb2: int
    nb3: int
    offset: int


# -- layout -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CastParams(OpParams):
    """``cast``: the target dtype."""

    dtype: DType


@dataclass(frozen=True, slots=True)
class ConcatParams(OpParams):
    """``concat``: the dimension joined along (0..3)."""

    dim: int


@dataclass(frozen=True, slots=True)
class PadParams(OpParams):
    """``pad``: elements added at the end of dims 0..3."""

    p0: int
    p1: int
    p2: int
    p3: int


@dataclass(frozen=True, slots=True)
class ArangeParams(OpParams):
    """``arange``: ``start, start + step, ...`` below ``stop``."""

    start: float
    stop: float
    step: float


@dataclass(frozen=True, slots=True)
class FillParams(OpParams):
    """``fill``: the value written everywhere."""

    value: float


# -- element-wise -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ScaleParams(OpParams):
    """``scale``: the factor."""

    s: float


@dataclass(frozen=True, slots=True)
class ClampParams(OpParams):
    """``clamp``: the bounds."""

    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class GluParams(OpParams):
    """``glu``: the activation applied to the gate (a unary primitive's name)."""

    kind: str


@dataclass(frozen=True, slots=True)
class SwigluOaiParams(OpParams):
    """``swiglu_oai``: the sigmoid slope and the clamp limit."""

    alpha: float
    limit: float


# -- matrices, reductions ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MulmatParams(OpParams):
    """``mulmat``: ``"default"`` or ``"f32"`` (accumulate in full precision)."""

    precision: Literal["default", "f32"]


@dataclass(frozen=True, slots=True)
class TriParams(OpParams):
    """``tri``: which triangle is kept (a ``TriType`` value)."""

    tri_type: int


@dataclass(frozen=True, slots=True)
class NormParams(OpParams):
    """``norm``, ``rms_norm``, ``l2_norm``: the epsilon."""

    eps: float


@dataclass(frozen=True, slots=True)
class ArgsortParams(OpParams):
    """``argsort``: ``"asc"`` or ``"desc"``."""

    order: Literal["asc", "desc"]


# -- neural-network ops -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Pool2dParams(OpParams):
    """``pool_2d``: pooling kind, kernel size, stride and padding (both spatial dims)."""

    kind: Literal["avg"]
    k: int
    s: int
    p: float


@dataclass(frozen=True, slots=True)
class Im2colParams(OpParams):
    """``im2col``: strides, paddings and dilations of dims 0 and 1."""

    s0: int
    s1: int
    p0: int
    p1: int
    d0: int
    d1: int


@dataclass(frozen=True, slots=True)
class Conv3dParams(OpParams):
    """``conv_3d``: input channels, then strides, paddings and dilations of dims 0..2."""

    c: int
    s0: int
    s1: int
    s2: int
    p0: int
    p1: int
    p2: int
    d0: int
    d1: int
    d2: int


@dataclass(frozen=True, slots=True)
class InterpolateParams(OpParams):
    """``interpolate``: the sampling mode (a ``SamplingMode`` value)."""

    mode: int


@dataclass(frozen=True, slots=True)
class RopeParams(OpParams):
    """``rope``: rotary embedding settings (ggml's ``rope_ext`` / ``rope_multi`` arguments)."""

    n_dims: int
    mode: int
    n_ctx_orig: int
    base: float
    freq_scale: float
    ext_factor: float
    attn_factor: float
    beta_fast: float
    beta_slow: float
    sections: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class AttentionParams(OpParams):
    """``scaled_dot_product_attention``: the score scale and which optional operands exist."""

    scale: float
    has_mask: bool
    has_sinks: bool
