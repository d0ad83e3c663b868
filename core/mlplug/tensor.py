"""Tensor: the ggml-shaped graph node models are written against (all op methods)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._tensorbase import register_tensor_class
from .ops.elementwise import ElementwiseOps
from .ops.layout import LayoutOps
from .ops.linalg import LinalgOps
from .ops.nn import NNOps
from .ops.reduce import ReduceOps

if TYPE_CHECKING:
    from .context import Context

__all__ = ["ScaledDotProductAttention", "Tensor"]


class Tensor(ElementwiseOps, LinalgOps, ReduceOps, LayoutOps, NNOps):
    """A tensor of at most 4 dims in ggml order (dim 0 fastest), created by a Context.

    Op methods record graph nodes (shape, dtype and strides are known at once); values exist
    after ``ctx.compute``. Every method validates its operands before any backend sees them,
    so a mistake raises the same typed error (``ShapeError``, ``DTypeError``) everywhere.
    """

    __slots__ = ()


register_tensor_class(Tensor)


@runtime_checkable
class ScaledDotProductAttention(Protocol):
    """Optional capability of query tensors: a fused attention op."""

    def scaled_dot_product_attention(
        self,
        ctx: Context,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None,
        sinks: Tensor | None,
        vmla: Tensor | None,
        scale: float,
        cache_config_applied: bool,
    ) -> Tensor:
        """Return attention of this query over ``key``/``value`` (see Tensor's method)."""
        ...
