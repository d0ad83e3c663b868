"""CpuNumpyBackend: the numpy implementation of mlplug's Backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from mlplug import Backend
from mlplug.plugin_api import DType, WeightCopies, can_quantize

from .context import NumpyContext
from .device import devices
from .ops import KERNELS
from .ops.elementwise import PREPARERS

if TYPE_CHECKING:
    from mlplug import DeviceInfo, Tensor

# The kernels import the context module, so the context's table is filled in here.
NumpyContext.preparers = PREPARERS


class CpuNumpyBackend(Backend):
    """Every op in numpy on the host CPU, with ggml's semantics (a portable reference)."""

    name: ClassVar[str] = "cpu_numpy"
    kernels = KERNELS
    plain_library = "numpy"
    dtypes = frozenset(d for d in DType if d not in (DType.OTHER, DType.F64))
    dequantized_copies = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Float32 copies of weights (``BackendParams.dequantize``); mulmat prefers them.
        self.weight_copies: WeightCopies = WeightCopies()

    def hook_copy_weights(self, weights: Sequence[Tensor]) -> None:
        """Decode each weight once into a float32 copy (the user asked for copies)."""
        for t in weights:
            ctx = t.ctx
            assert isinstance(ctx, NumpyContext)
            self.weight_copies.make(t, ctx.arr(t), t.dtype, t.ne)

    def hook_make_context(self, max_nodes: int) -> NumpyContext:
        return NumpyContext(self, max_nodes)

    def devices(self) -> list[DeviceInfo]:
        """Return the host CPU."""
        return devices()

    def hook_unsupported_reason(self, node: Tensor) -> str | None:
        """Quantising needs a host quantiser for the type (:func:`~mlplug.host.can_quantize`)."""
        d = node.dtype
        if node.op in ("cast", "copy", "set_rows") and d.is_quantized and not can_quantize(d):
            return f"quantising to {node.dtype.name} (no host quantiser for it)"
        return None
