"""Row kernels: softmax, norms, sums, means, cumulative sums and argsort."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mlplug.plugin_api import TRAITS, ArgsortParams, DType, NormParams

from ._registry import Builder, implements

if TYPE_CHECKING:
    from mlplug import Tensor

#: enum ggml_sort_order
_ORDER: Final = {"asc": 0, "desc": 1}
_GGML_F32: Final = TRAITS[DType.F32].ggml_type


@implements("softmax", needs=("soft_max",))
def softmax(b: Builder, t: Tensor) -> int:
    """``ggml_soft_max(a)``."""
    return b.lib.ggml_soft_max(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]


@implements("norm", needs=("norm",))
def norm(b: Builder, t: Tensor) -> int:
    """``ggml_norm(a, eps)``."""
    return b.lib.ggml_norm(b.ctx, b.src(t, 0), NormParams.of(t).eps)  # type: ignore[no-any-return]


@implements("rms_norm", needs=("rms_norm",))
def rms_norm(b: Builder, t: Tensor) -> int:
    """``ggml_rms_norm(a, eps)``."""
    return b.lib.ggml_rms_norm(b.ctx, b.src(t, 0), NormParams.of(t).eps)  # type: ignore[no-any-return]


@implements("l2_norm", needs=("l2_norm",))
def l2_norm(b: Builder, t: Tensor) -> int:
    """``ggml_l2_norm(a, eps)``."""
    return b.lib.ggml_l2_norm(b.ctx, b.src(t, 0), NormParams.of(t).eps)  # type: ignore[no-any-return]


@implements("sum_rows", needs=("sum_rows",))
def sum_rows(b: Builder, t: Tensor) -> int:
    """``ggml_sum_rows(a)``."""
    return b.lib.ggml_sum_rows(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]


@implements("mean", needs=("mean",))
def mean(b: Builder, t: Tensor) -> int:
    """``ggml_mean(a)``."""
    return b.lib.ggml_mean(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]


@implements("cum_sum", needs=("cumsum",))
def cum_sum(b: Builder, t: Tensor) -> int:
    """``ggml_cumsum(a)``."""
    return b.lib.ggml_cumsum(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]


@implements("argsort", needs=("argsort", "cast"))
def argsort(b: Builder, t: Tensor) -> int:
    """``ggml_argsort(a, ASC | DESC)``.

    Today's CPU kernel sorts F32 keys only: I32 keys are cast to F32 first, which is exact
    for ``|x| <= 2**24`` (checked before compute, see ``_graph``).
    """
    a = b.src(t, 0)
    if t.src[0].dtype == DType.I32:
        a = b.lib.ggml_cast(b.ctx, a, _GGML_F32)
    return b.lib.ggml_argsort(b.ctx, a, _ORDER[ArgsortParams.of(t).order])  # type: ignore[no-any-return]
