"""Row kernels: softmax, norms, sums, means, cumulative sums and argsort."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._registry import Builder, implements

if TYPE_CHECKING:
    from mlplug import Tensor

#: enum ggml_sort_order
_ORDER: Final = {"asc": 0, "desc": 1}


@implements("soft_max", needs=("soft_max",))
def soft_max(b: Builder, t: Tensor) -> int:
    """``ggml_soft_max(a)``."""
    return b.lib.ggml_soft_max(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]


@implements("norm", needs=("norm",))
def norm(b: Builder, t: Tensor) -> int:
    """``ggml_norm(a, eps)``."""
    return b.lib.ggml_norm(b.ctx, b.src(t, 0), t.params[0])  # type: ignore[no-any-return]


@implements("rms_norm", needs=("rms_norm",))
def rms_norm(b: Builder, t: Tensor) -> int:
    """``ggml_rms_norm(a, eps)``."""
    return b.lib.ggml_rms_norm(b.ctx, b.src(t, 0), t.params[0])  # type: ignore[no-any-return]


@implements("l2_norm", needs=("l2_norm",))
def l2_norm(b: Builder, t: Tensor) -> int:
    """``ggml_l2_norm(a, eps)``."""
    return b.lib.ggml_l2_norm(b.ctx, b.src(t, 0), t.params[0])  # type: ignore[no-any-return]


@implements("sum_rows", needs=("sum_rows",))
def sum_rows(b: Builder, t: Tensor) -> int:
    """``ggml_sum_rows(a)``."""
    return b.lib.ggml_sum_rows(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]


@implements("mean", needs=("mean",))
def mean(b: Builder, t: Tensor) -> int:
    """``ggml_mean(a)``."""
    return b.lib.ggml_mean(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]


@implements("cumsum", needs=("cumsum",))
def cumsum(b: Builder, t: Tensor) -> int:
    """``ggml_cumsum(a)``."""
    return b.lib.ggml_cumsum(b.ctx, b.src(t, 0))  # type: ignore[no-any-return]


@implements("argsort", needs=("argsort",))
def argsort(b: Builder, t: Tensor) -> int:
    """``ggml_argsort(a, ASC | DESC)``."""
    return b.lib.ggml_argsort(b.ctx, b.src(t, 0), _ORDER[t.params[0]])  # type: ignore[no-any-return]
