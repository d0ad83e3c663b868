"""CpuNumpyBackend: the numpy implementation of mlplug's Backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mlplug import Backend
from mlplug.plugin_api import DType, can_quantize

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

    def hook_make_context(self, max_nodes: int) -> NumpyContext:
        return NumpyContext(self, max_nodes)

    def devices(self) -> list[DeviceInfo]:
        """Return the host CPU."""
        return devices()

    def hook_unsupported_reason(self, node: Tensor) -> str | None:
        """Quantising to k-quant types needs a quantiser numpy does not have."""
        d = node.dtype
        if node.op in ("cast", "copy", "set_rows") and d.is_quantized and not can_quantize(d):
            return f"quantising to {node.dtype.name} (no host quantiser for k-quants)"
        return None
