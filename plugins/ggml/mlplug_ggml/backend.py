"""GGMLBackend: mlplug's Backend running on the ggml C library through ctypes.

One ggml backend (stream) does all the work: the best GPU the loaded ggml build registers
(discrete before integrated, then most free memory), or the CPU when there is none;
``MLPLUG_GGML_DEVICE`` names another device (``CPU``, ``CUDA0``, ...). See
:func:`mlplug_ggml.device.compute_device`. CPU threads come from ``BackendParams.num_threads``
(0: ``os.cpu_count()``).
"""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Final

from mlplug import Backend
from mlplug.plugin_api import (
    LEAF,
    VIEW_OPS,
    BackendParams,
    CacheConfig,
    DType,
    FlashAttentionType,
    GraphError,
    HostWriter,
)

from . import _runtime as rt
from ._lib import GGMLTensor
from .context import GGMLContext
from .device import compute_device, device_infos, load_backends, to_device_info
from .ops import KERNELS, REQUIRES

if TYPE_CHECKING:
    from mlplug import Context, DeviceInfo, Tensor
    from mlplug.plugin_api import WeightWriter

    from ._lib import Lib
    from .context import _State

#: Ops that quantise when their result type is quantised.
_QUANTISING = frozenset({"cast", "copy", "set_rows"})

__all__ = ["GGMLBackend"]

#: Quantised types ggml can produce from floats (cast, cpy and set_rows destinations).
_QUANT_TARGETS: Final = frozenset(
    {
        DType.Q8_0,
        DType.Q4_0,
        DType.Q4_1,
        DType.Q5_0,
        DType.Q5_1,
        DType.Q2_K,
        DType.Q3_K,
        DType.Q4_K,
        DType.Q5_K,
        DType.Q6_K,
        DType.MXFP4,
    }
)


class GGMLBackend(Backend):
    """The ``ggml`` backend: graphs are translated into ggml graphs and run by ggml."""

    name: ClassVar[str] = "ggml"
    kernels = KERNELS
    dtypes = frozenset(d for d in DType if d not in (DType.OTHER, DType.F64))

    def __init__(self, model_path: str | None, params: BackendParams | None = None) -> None:
        """Load ggml and open a backend on the compute device (``new_backend`` opens the model).

        :raises BackendLoadError: the ggml library cannot be loaded or the device initialised.
        """
        super().__init__(model_path, params)
        params = self.params
        self.lib = load_backends()
        self.device = compute_device()
        threads = params.num_threads or os.cpu_count() or 1
        self._stream = rt.Backend(self.device, n_threads=threads)
        weakref.finalize(self, self._stream.free)  # also when dropped without close()
        self.backend_ptr: int = self._stream._require()
        self.buffer_type: int = self._stream.buffer_type
        self.is_cpu = self.device.type == "CPU"
        self.threads = threads if self._stream.supports_threads else 0
        self.flash = params.flash_attention == FlashAttentionType.ENABLED
        #: Largest and latest compute-buffer sizes measured by :meth:`hook_measure_graph`.
        self.reserved_graph_size = 0
        self.last_graph_size = 0
        #: The ggml state of every context made (for :meth:`hook_held_bytes`).
        self.states: weakref.WeakSet[_State] = weakref.WeakSet()
        self._missing = {
            op: [fn for fn in fns if not self.lib.has(fn)] for op, fns in REQUIRES.items()
        }

    # -- Backend API --------------------------------------------------------------------------
    def hook_make_context(self, max_nodes: int) -> GGMLContext:
        return GGMLContext(self, max_nodes)

    def devices(self) -> list[DeviceInfo]:
        """Return every device of the loaded ggml build (CPU and GPUs)."""
        return device_infos()

    def cache_config(self) -> CacheConfig:
        """Flash attention: F16 mask, V as is; otherwise V stored permuted (ggml's layouts)."""
        if self.flash:
            return CacheConfig(cache_padding=256, permuted_v=False, mask_dtype=DType.F16)
        return CacheConfig(cache_padding=256, permuted_v=True, mask_dtype=DType.OTHER)

    def hook_unsupported_reason(self, node: Tensor) -> str | None:
        """Declare what this ggml backend cannot do: ops whose ggml function the build lacks,
        quantising to types that need an importance matrix, zero-element operands."""
        op = node.op
        missing = self._missing.get(op)
        if missing:
            return f"this ggml build lacks {', '.join(missing)}"
        if op not in VIEW_OPS and (0 in node.ne or any(0 in s.ne for s in node.src)):
            return "zero-element operands or results (ggml's allocator cannot place them)"
        if op in _QUANTISING and node.dtype.is_quantized:
            ggml_type = node.dtype.traits.ggml_type
            if node.dtype not in _QUANT_TARGETS or self.lib.ggml_quantize_requires_imatrix(
                ggml_type
            ):
                return f"quantising to {node.dtype.name} needs an importance matrix"
        return None

    def hook_measure_graph(self, ctx: Context, graph: Sequence[Tensor]) -> dict[int, int] | None:
        """Return the compute buffer ggml's graph allocator needs for ``graph``, per device.

        Nothing is allocated or run (``ggml_gallocr_reserve_n_size``); on a dry run the
        weights and caches (which live in their own buffers) are left out. The size is also
        kept in :attr:`last_graph_size` and, the largest seen, :attr:`reserved_graph_size`.
        """
        if not isinstance(ctx, GGMLContext):
            return None
        size = ctx.graph_size(graph)
        self.last_graph_size = size
        self.reserved_graph_size = max(self.reserved_graph_size, size)
        return {self.device_index: size}

    @property
    def device_index(self) -> int:
        """The compute device as the core numbers devices: -1 the CPU, else 0 (the GPU)."""
        return -1 if self.is_cpu else 0

    def hook_gpu_devices(self) -> list[DeviceInfo]:
        """Return the GPU this backend computes on (empty when it computes on the CPU).

        Every tensor lives on the one compute device, so model layers are placed on it.
        """
        if self.is_cpu:
            return []
        return [to_device_info(self.device)]

    def hook_alignment(self, device: int) -> int:
        """Return the alignment of the compute device's buffers."""
        return int(self.lib.ggml_backend_buft_get_alignment(self.buffer_type))

    def hook_allocation_size(self, t: Tensor) -> int:
        """Return the bytes ggml allocates for root tensor ``t`` (padding included)."""
        n = t.nbytes
        if t.handle is not None and t.op == LEAF:
            n = int(self.lib.ggml_backend_buft_get_alloc_size(self.buffer_type, t.handle))
        align = self.hook_alignment(-1)
        return n + (-n % align)

    def hook_held_bytes(self) -> dict[int, int]:
        """Return the bytes held now on the compute device: every open context's constructor
        tensors (padded as ggml allocates them) and the compute buffers of its cached graphs."""
        held = {-1: 0, self.device_index: 0}
        held[self.device_index] = sum(st.held_bytes() for st in list(self.states))
        return held

    def hook_host_buffer(self, t: Tensor) -> memoryview | None:
        """Return a writable view of ``t``'s storage when it is in host memory (the CPU)."""
        if (
            t.op != LEAF
            or t.view_src is not None
            or t.data is None
            or t.nbytes == 0
            or not self.lib.ggml_backend_buft_is_host(self.buffer_type)
        ):
            return None
        data = GGMLTensor.at(t.handle).data
        if not data:
            return None
        return memoryview((ctypes.c_char * t.nbytes).from_address(data)).cast("B")

    def hook_weight_writer(self, t: Tensor) -> WeightWriter:
        """Return a writer that puts pieces straight into ``t``'s storage (any device)."""
        view = self.hook_host_buffer(t)
        if view is not None:
            return HostWriter(view)
        return _TensorSetWriter(self.lib, t)

    def hook_close(self) -> None:
        self._stream.free()

    def __repr__(self) -> str:
        return f"<GGMLBackend {self.device.name} ggml {self.lib.version}>"


class _TensorSetWriter:
    """Writes a weight's pieces with ``ggml_backend_tensor_set`` (device memory)."""

    def __init__(self, lib: Lib, t: Tensor) -> None:
        if t.data is None or t.handle is None:
            msg = f"{t!r} has no storage to load into"
            raise GraphError(msg)
        self._lib = lib
        self._ptr: int = t.handle
        self._n = t.nbytes

    def write(self, offset: int, data: memoryview) -> None:
        """Copy ``data`` to byte ``offset`` of the tensor."""
        n = len(data)
        if offset < 0 or offset + n > self._n:
            msg = f"write of {n} bytes at {offset} past the tensor's {self._n} bytes"
            raise GraphError(msg)
        if n:
            buf = (ctypes.c_char * n).from_buffer_copy(data)
            self._lib.ggml_backend_tensor_set(self._ptr, buf, offset, n)

    def finish(self) -> None:
        """Nothing to flush: every piece is already on the device."""
