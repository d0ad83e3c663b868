"""Backend: the abstract base every backend plugin implements."""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ._tensorbase import LEAF
from .dtypes import DType, align_up
from .errors import GraphError, NotSupportedError
from .params import BackendParams, CacheConfig

if TYPE_CHECKING:
    import os

    from .context import Context
    from .device import DeviceInfo
    from .memory import BackendMemory
    from .modelfile.config import Config
    from .modelfile.loader import WeightWriter
    from .modelfile.model import Model
    from .tensor import Tensor

__all__ = ["Backend", "Kernel"]

#: A backend's implementation of one primitive op: ``kernel(ctx, node)``.
Kernel = Callable[..., Any]

_DEFAULT_MAX_NODES = 1024
_HOST_ALIGNMENT = 32
_TRACK_LOCK = threading.Lock()  # guards every backend's weak set of contexts


class Backend(ABC):
    """A compute backend: devices, contexts, and (when given a model) the model's weights.

    Subclasses set :attr:`name`, :attr:`kernels` (primitive op name -> implementation),
    :attr:`dtypes` (dtypes it can store) and implement :meth:`_make_context` and
    :meth:`devices`. Everything about graphs, validation and model files lives in the core.

    Model files work on every backend through the hooks under "memory and device hooks"; each
    has a default built on the public Context API. A backend with device memory of its own
    overrides :meth:`gpu_devices`, :meth:`weights_context`, :meth:`commit_weights`,
    :meth:`alignment`, :meth:`allocation_size`, :meth:`held_bytes`, :meth:`measure_graph`,
    :meth:`host_buffer` and :meth:`weight_writer` as it needs.
    """

    #: Backend name as registered (``"cpu_numpy"``, ``"ggml"``, ...).
    name: ClassVar[str] = ""
    #: Primitive op name -> kernel. Ops absent here raise NotSupportedError when built.
    kernels: ClassVar[Mapping[str, Kernel]] = {}
    #: Dtypes this backend can hold in tensors.
    dtypes: ClassVar[frozenset[DType]] = frozenset({DType.F32, DType.F16, DType.I32})

    def __init__(
        self, model_path: str | os.PathLike[str] | None, params: BackendParams | None = None
    ) -> None:
        """Create the backend and, given a model file, its weights (see :meth:`load`).

        A subclass sets up its devices *before* calling this: opening a model calls
        :meth:`devices`, :meth:`gpu_devices`, :meth:`weights_context` and
        :meth:`commit_weights`. If opening fails, :meth:`_close` runs and the error propagates.

        :raises ModelFileError: the model file is missing or malformed.
        :raises ErrNoMem: a device cannot hold its weights (``alloc_memory=True``).
        """
        self.params = params if params is not None else BackendParams()
        self.model_path = model_path
        self.compute_lock = threading.Lock()
        #: Scheduler batch-size hint, set by contexts on compute (persists, as in the seed).
        self.batch_size = 0
        self._closed = False
        self._dry_run = model_path is not None and not self.params.alloc_memory
        self._model: Model | None = None
        if model_path is not None:
            from .modelfile.model import Model

            try:
                self._model = Model.open(self, model_path)
            except BaseException:
                self._closed = True
                try:
                    self._close()
                except Exception:  # the open error is the one to report
                    pass
                raise

    # -- what subclasses provide ------------------------------------------------------------
    @abstractmethod
    def _make_context(self, max_nodes: int) -> Context:
        """Return a new root context of this backend with room for ``max_nodes`` ops."""

    @abstractmethod
    def devices(self) -> list[DeviceInfo]:
        """Return every device this backend can use (CPU included), as DeviceInfo."""

    def unsupported_reason(self, node: Tensor) -> str | None:
        """Return why ``node`` cannot run here (a declared unsupported variant), or None."""
        return None

    # -- op support ---------------------------------------------------------------------------
    def check_node(self, node: Tensor) -> None:
        """Raise NotSupportedError if this backend has no kernel for ``node``."""
        if node.op not in self.kernels:
            raise NotSupportedError(self.name, node.op, "no kernel for this op")
        reason = self.unsupported_reason(node)
        if reason is not None:
            raise NotSupportedError(self.name, node.op, reason)

    # -- contexts -----------------------------------------------------------------------------
    @property
    def max_graph_nodes(self) -> int:
        """Largest context capacity: ``max(1024, 32 * tensors in the model file)``."""
        if self._model is not None:
            return int(max(_DEFAULT_MAX_NODES, 32 * self._model.tensor_count))
        return _DEFAULT_MAX_NODES * 64

    def new_context(self) -> Context:
        """Return a new context with the largest capacity (see :meth:`new_context_size`)."""
        return self.new_context_size(self.max_graph_nodes)

    def new_context_size(self, n: int) -> Context:
        """Return a new context whose graph may hold ``n`` op nodes.

        :raises GraphError: if ``n`` exceeds :attr:`max_graph_nodes`.
        """
        self._check_open()
        if n > self.max_graph_nodes:
            msg = (
                f"requested number of graph nodes ({n}) for new context exceeds maximum "
                f"({self.max_graph_nodes})"
            )
            raise GraphError(msg)
        return self._make_context(n)

    # -- model-facing API (delegates to the core's model loader) -----------------------------
    @property
    def allocates(self) -> bool:
        """False for a dry run (``alloc_memory=False`` with a model): sizes only, no storage."""
        return not self._dry_run

    @property
    def block_count(self) -> int:
        """Number of repeating layers of the model (0 without a model)."""
        return 0 if self._model is None else self._model.block_count

    def load(
        self,
        progress: Callable[[float], None] | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> None:
        """Read the model's weights into their tensors, reporting ``progress`` up to 1.0.

        ``progress`` is called from this thread only, with the fraction of the file's tensor
        bytes read so far: non-decreasing, ending at exactly 1.0 (also for a file without
        tensors). Setting ``cancel`` stops before the next chunk. Without a model this does
        nothing. After a failed or cancelled load the backend is closed (its weights freed).

        :raises GraphError: ``cannot load model without memory allocation`` on a dry run.
        :raises LoadCancelledError: ``cancel`` was set.
        :raises ModelFileError: the file changed since it was opened or ended early.
        """
        self._check_open()
        if self._model is not None:
            self._model.load(progress, cancel)

    def config(self) -> Config:
        """Return the model's metadata (an empty Config without a model)."""
        from .modelfile.config import Config

        return self._model.config if self._model is not None else Config({})

    def get(self, name: str) -> Tensor | None:
        """Return the weight tensor created as ``name``, or None.

        A tied ``output.weight`` and the per-layer ``blk.{i}.rope_freqs.weight`` copies exist;
        a file's plain ``rope_freqs.weight`` does not.
        """
        return None if self._model is None else self._model.get(name)

    def backend_memory(self) -> BackendMemory:
        """Return a copy of what the model needs (or holds) per device: weights, cache, graph."""
        from .memory import BackendMemory, DeviceMemory

        if self._model is not None:
            return self._model.memory_copy()
        return BackendMemory(cpu=DeviceMemory(name="CPU"))

    def backend_devices(self) -> list[DeviceInfo]:
        """Return the GPU devices of this backend (never the CPU).

        With a model loaded for real (``alloc_memory=True``), GPUs that received no weights are
        left out, as the seed does to avoid waking them.
        """
        gpus = [d for d in self.devices() if d.library.lower() != "cpu"]
        if self._model is None or not self.params.alloc_memory:
            return gpus
        placed = self.gpu_devices()
        used = {_device_key(placed[i]) for i in self._model.plan.used_gpus if i < len(placed)}
        return [d for d in gpus if _device_key(d) in used]

    def cache_config(self) -> CacheConfig:
        """Return how KV caches should be laid out for this backend."""
        return CacheConfig(cache_padding=1, permuted_v=False, mask_dtype=DType.F32)

    def account(self, ctx: Context, t: Tensor) -> None:
        """Count a new constructor tensor of ``ctx`` in the memory record (layer cache).

        Called by ``Context`` before the tensor's storage is allocated, so a failed request is
        in the record ErrNoMem carries.
        """
        if self._model is not None:
            self._model.account_cache(ctx, t)

    def reserve_graph(self, ctx: Context, graph: Sequence[Tensor]) -> None:
        """Record the scratch memory ``graph`` needs per device (``Context.reserve``).

        :raises ErrNoMem: with ``alloc_memory=True``, a device's graph exceeds its free memory.
        """
        if self._model is not None:
            self._model.reserve_graph(ctx, graph)

    def layer_device(self, layer: int) -> int:
        """Return the device of model layer ``layer``: -1 the CPU, else a GPU index."""
        return -1 if self._model is None else self._model.layer_device(layer)

    # -- memory and device hooks (override for real device memory) ---------------------------
    def gpu_devices(self) -> list[DeviceInfo]:
        """Return the GPUs model layers may go to, in order; their positions are device indices.

        Default: :meth:`devices` whose library is not ``cpu``.
        """
        return [d for d in self.devices() if d.library.lower() != "cpu"]

    def alignment(self, device: int) -> int:
        """Return the allocation alignment of ``device`` (-1 the CPU); sizes round up to it."""
        return _HOST_ALIGNMENT

    def weights_context(self, device: int, n_tensors: int) -> Context:
        """Return a new context that will hold ``n_tensors`` model weights on ``device``.

        ``device`` is -1 for the CPU, else an index into :meth:`gpu_devices`; the core sets the
        returned context's ``device_index`` to it. The context's constructor tensors must take
        that device's memory. Default: a context of this backend (host memory).
        """
        return self._make_context(_DEFAULT_MAX_NODES)

    def commit_weights(self, ctx: Context) -> None:  # noqa: B027 - optional hook
        """Finish a weight context once all its tensors exist (before any data is loaded).

        Default: nothing (each tensor got its storage when created). A backend that allocates
        one buffer per device does it here; a MemoryError becomes ErrNoMem.
        """

    def allocation_size(self, t: Tensor) -> int:
        """Return the bytes this backend holds for the storage of root tensor ``t``.

        Default: the storage object's ``nbytes`` (numpy array, torch tensor), or ``t.nbytes``,
        rounded up to :meth:`alignment` of the tensor's device.
        """
        n = getattr(t.data, "nbytes", None) if t.data is not None else None
        if not isinstance(n, int):
            n = t.nbytes
        return align_up(n, self.alignment(getattr(t.ctx, "device_index", -1)))

    def host_buffer(self, t: Tensor) -> memoryview | None:
        """Return a writable byte view of root tensor ``t``'s storage in host memory, or None.

        The loader reads file data straight into it. Default: the storage of an
        :class:`~mlplug.array_context.ArrayContext` tensor when it exports a writable,
        contiguous buffer of exactly ``t.nbytes`` bytes (a numpy array); else None.
        """
        from .array_context import ArrayContext

        if t.view_src is not None or t.data is None or not isinstance(t.ctx, ArrayContext):
            return None
        try:
            view = memoryview(t.data)
        except TypeError:
            return None
        if view.readonly or not view.c_contiguous or view.nbytes != t.nbytes:
            return None
        return view.cast("B") if view.ndim != 1 or view.format != "B" else view

    def weight_writer(self, t: Tensor) -> WeightWriter:
        """Return a writer of ``t``'s bytes in pieces (for converted data, or no host view).

        Default: writes through :meth:`host_buffer` when there is one, else stages the whole
        tensor and calls ``t.from_bytes``. Override with partial device writes (e.g.
        ``ggml_backend_tensor_set``) to load without staging.
        """
        from .modelfile.loader import HostWriter, StagedWriter

        view = self.host_buffer(t)
        return HostWriter(view) if view is not None else StagedWriter(t)

    def measure_graph(self, ctx: Context, graph: Sequence[Tensor]) -> dict[int, int] | None:
        """Return the scratch bytes per device computing ``graph`` takes, or None to estimate.

        Default None: the core estimates it (:func:`mlplug.modelfile.model.estimate_graph`).
        A backend with a graph allocator (ggml's scheduler) returns its reservation here.
        """
        return None

    def track_context(self, ctx: Context) -> None:
        """Remember ``ctx`` (weakly) so :meth:`held_bytes` can find its tensors."""
        with _TRACK_LOCK:
            contexts = self.__dict__.get("_contexts")
            if contexts is None:
                contexts = self.__dict__.setdefault("_contexts", weakref.WeakSet())
            contexts.add(ctx)

    def held_bytes(self) -> dict[int, int]:
        """Return the bytes of storage this backend holds now, per device (-1 the CPU).

        Counts every live constructor tensor (weights, cache, inputs) and every op result that
        owns storage, with :meth:`allocation_size`. A dry run holds nothing. Backends with
        their own allocators may override this with their buffer sizes.
        """
        from .modelfile.model import node_devices

        held: dict[int, int] = {-1: 0}
        seen: set[int] = set()
        with _TRACK_LOCK:
            live = list(self.__dict__.get("_contexts", ()))
        for ctx in live:
            if ctx.closed:
                continue
            graph = ctx.graph
            devices: dict[int, int] | None = None
            for t in (*ctx._shared.tensors, *graph):
                if id(t) in seen or t.data is None or t.view_src is not None:
                    continue
                seen.add(id(t))
                if t.op == LEAF:
                    device = getattr(t.ctx, "device_index", -1)
                else:
                    if devices is None:
                        devices = node_devices(graph)
                    device = devices[id(t)]
                held[device] = held.get(device, 0) + self.allocation_size(t)
        return held

    # -- lifetime -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            msg = f"backend {self.name!r} is closed"
            raise GraphError(msg)

    def close(self) -> None:
        """Free the model's weights and the backend's resources; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._model is not None:
            self._model.close()
            self._model = None
        self._close()

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Free backend-specific resources (override in subclasses)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _device_key(d: DeviceInfo) -> tuple[str, str]:
    return (d.library, d.id)
