"""GGMLBackend: mlplug's Backend running on the ggml C library through ctypes.

One ggml backend (stream) does all the work: the best GPU the loaded ggml build registers
(discrete before integrated, then most free memory), or the CPU when there is none;
``MLPLUG_GGML_DEVICE`` names another device (``CPU``, ``CUDA0``, ...). See
:func:`mlplug_ggml.device.compute_device`. CPU threads come from ``BackendParams.num_threads``
(0: ``os.cpu_count()``).

Remote devices: the servers of ``BackendParams.rpc_servers`` (else ``$MLPLUG_RPC_SERVERS``) are
added (:mod:`mlplug_ggml.rpc`) and their devices follow the compute GPU (if any) in
:meth:`GGMLBackend.hook_gpu_devices`, so ``--gpu-layers 'RPC:0=0-4'`` places layers there:
their weights and caches live in the remote device's memory, and graphs reading them run over
the devices with ggml's scheduler (see :meth:`GGMLContext._split_plan`).
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
    DeviceInfo,
    DType,
    FlashAttentionType,
    GraphError,
    HostWriter,
    env_endpoints,
)

from . import _runtime as rt
from . import rpc
from ._lib import GGMLTensor
from .context import GGMLContext
from .device import (
    GGMLDevice,
    compute_device,
    cpu_device,
    device_infos,
    devices,
    load_backends,
    to_device_info,
)
from .ops import KERNELS, REQUIRES

if TYPE_CHECKING:
    from mlplug import Context, Tensor
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


#: ggml's two KV cache layouts (frozen records; attention's builder asks for one per node).
_FLASH_CACHE = CacheConfig(cache_padding=256, permuted_v=False, mask_dtype=DType.F16)
_PERMUTED_CACHE = CacheConfig(cache_padding=256, permuted_v=True, mask_dtype=DType.OTHER)


def _has_zero_extent(node: Tensor) -> bool:
    if 0 in node.ne:
        return True
    for s in node.src:
        if 0 in s.ne:
            return True
    return False


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
        endpoints = params.rpc_servers or tuple(str(e) for e in env_endpoints())
        # Servers first: MLPLUG_GGML_DEVICE may name a remote device (RPC0) to compute on.
        added = set(rpc.add_servers(self.lib, endpoints)) if endpoints else set()
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
        self._init_remote(added)
        self._missing = {
            op: [fn for fn in fns if not self.lib.has(fn)] for op, fns in REQUIRES.items()
        }

    def _init_remote(self, added: set[int]) -> None:
        """Open a stream on each device of the added servers (but the compute device)."""
        #: Placement (device index) -> (device, stream) of every remote device holding layers.
        self._remote: dict[int, tuple[GGMLDevice, rt.Backend]] = {}
        self._cpu_stream: rt.Backend | None = None
        base = 0 if self.is_cpu else 1
        remote = [d for d in devices() if d.dev in added and d.dev != self.device.dev]
        if not remote:
            return
        threads = self.threads or None
        for i, d in enumerate(remote):
            self._remote[base + i] = (d, rt.Backend(d))
        if not self.is_cpu:
            self._cpu_stream = rt.Backend(cpu_device(), n_threads=threads)

    @property
    def remote_places(self) -> frozenset[int]:
        """Device indices (positions in :meth:`hook_gpu_devices`) of the remote devices."""
        return frozenset(self._remote)

    @property
    def compute_place(self) -> int:
        """The compute device as the core numbers devices (same as :attr:`device_index`)."""
        return self.device_index

    def placement(self, device_index: int) -> int:
        """Where tensors of core device ``device_index`` live: a remote device's index, else
        the compute device's."""
        return device_index if device_index in self._remote else self.device_index

    def buffer_type_of(self, place: int) -> int:
        """The ``ggml_backend_buffer_type_t`` of placement ``place``."""
        if place in self._remote:
            return self._remote[place][1].buffer_type
        return self.buffer_type

    def sched_places(self) -> list[tuple[int, int]]:
        """``(placement, ggml_backend_t)`` for ggml's scheduler: remote devices, the compute
        device, and the CPU last (the scheduler requires it)."""
        out = [(p, s.ptr or 0) for p, (_, s) in sorted(self._remote.items())]
        out.append((self.device_index, self.backend_ptr))
        if self._cpu_stream is not None:
            out.append((-1, self._cpu_stream._require()))
        return out

    # -- Backend API --------------------------------------------------------------------------
    def hook_make_context(self, max_nodes: int) -> GGMLContext:
        return GGMLContext(self, max_nodes)

    def hook_weights_context(self, device: int, n_tensors: int) -> GGMLContext:
        """Return a context for model weights; its buffers are marked as weights, so ggml's
        scheduler runs the ops reading them on their device."""
        ctx = GGMLContext(self, max(1024, n_tensors))
        ctx._gg.weights = True
        return ctx

    def devices(self) -> list[DeviceInfo]:
        """Return every device of the loaded ggml build (CPU and GPUs)."""
        return device_infos()

    def cache_config(self) -> CacheConfig:
        """Flash attention: F16 mask, V as is; otherwise V stored permuted (ggml's layouts)."""
        return _FLASH_CACHE if self.flash else _PERMUTED_CACHE

    def hook_unsupported_reason(self, node: Tensor) -> str | None:
        """Declare what this ggml backend cannot do: ops whose ggml function the build lacks,
        quantising to types that need an importance matrix, zero-element operands."""
        op = node.op
        missing = self._missing.get(op)
        if missing:
            return f"this ggml build lacks {', '.join(missing)}"
        if op not in VIEW_OPS and _has_zero_extent(node):
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
        sizes = ctx.graph_size(graph)
        size = sum(sizes.values())
        self.last_graph_size = size
        self.reserved_graph_size = max(self.reserved_graph_size, size)
        return sizes

    @property
    def device_index(self) -> int:
        """The compute device as the core numbers devices: -1 the CPU, else 0 (the GPU)."""
        return -1 if self.is_cpu else 0

    def hook_gpu_devices(self) -> list[DeviceInfo]:
        """Return the GPU this backend computes on (none when it computes on the CPU), then
        the remote devices of the RPC servers in the order given.

        Model layers placed on the compute GPU live there; layers placed on a remote device
        keep their weights and caches in its memory.
        """
        out = [] if self.is_cpu else [to_device_info(self.device)]
        out.extend(to_device_info(d) for _, (d, _) in sorted(self._remote.items()))
        return out

    def hook_alignment(self, device: int) -> int:
        """Return the alignment of the buffers of ``device`` (its placement's buffer type)."""
        buft = self.buffer_type_of(self.placement(device))
        return int(self.lib.ggml_backend_buft_get_alignment(buft))

    def hook_allocation_size(self, t: Tensor) -> int:
        """Return the bytes ggml allocates for root tensor ``t`` (padding included) on the
        device of its context."""
        place = self.placement(t.ctx.device_index)
        buft = self.buffer_type_of(place)
        n = t.nbytes
        if t.handle is not None and t.op == LEAF:
            n = int(self.lib.ggml_backend_buft_get_alloc_size(buft, t.handle))
        align = int(self.lib.ggml_backend_buft_get_alignment(buft))
        return n + (-n % align)

    def hook_held_bytes(self) -> dict[int, int]:
        """Return the bytes held now per device: every open context's constructor tensors
        (padded as ggml allocates them) and the compute buffers of its cached graphs."""
        held = {-1: 0, self.device_index: 0, **dict.fromkeys(self._remote, 0)}
        for st in list(self.states):
            for place, n in st.held_bytes().items():
                held[place] = held.get(place, 0) + n
        return held

    def hook_host_buffer(self, t: Tensor) -> memoryview | None:
        """Return a writable view of ``t``'s storage when it is in host memory (the CPU)."""
        if (
            t.op != LEAF
            or t.view_src is not None
            or t.data is None
            or t.nbytes == 0
            or not self.lib.ggml_backend_buft_is_host(
                self.buffer_type_of(self.placement(t.ctx.device_index))
            )
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
        for _, stream in self._remote.values():
            stream.free()
        if self._cpu_stream is not None:
            self._cpu_stream.free()
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
