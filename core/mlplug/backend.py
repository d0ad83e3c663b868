"""Backend: the abstract base every backend plugin implements."""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ._tensorbase import LEAF
from .dtypes import DType, align_up
from .errors import GraphError, NotSupportedError
from .graph import node_devices
from .memory import BackendMemory, DeviceMemory
from .params import BackendParams, CacheConfig
from .quantmm import WeightCopies
from .writers import HostWriter, StagedWriter, WeightWriter

if TYPE_CHECKING:
    import os

    from .context import Context
    from .device import DeviceInfo
    from .modelfile.config import Config
    from .tensor import Tensor

__all__ = ["AttachedModel", "Backend", "Kernel"]

#: A backend's implementation of one primitive op: ``kernel(ctx, node)``.
Kernel = Callable[..., Any]

_DEFAULT_MAX_NODES = 1024
_HOST_ALIGNMENT = 32
_TRACK_LOCK = threading.Lock()  # guards every backend's weak set of contexts


#: The default cache layout (a frozen record, shared: attention's builder asks for it per node).
_PLAIN_CACHE = CacheConfig(cache_padding=1, permuted_v=False, mask_dtype=DType.F32)


class AttachedModel(Protocol):
    """What a backend needs from the model file opened on it (the model-file layer's Model).

    The abstract layer declares this and never imports model-file code: the model-file layer
    opens the file and attaches the result with :meth:`Backend._attach_model`
    (``mlplug.modelfile.model.open_model``, which :func:`mlplug.new_backend` calls).
    """

    #: Number of tensors in the file (sizes :attr:`Backend.max_graph_nodes`).
    tensor_count: int
    #: Number of repeating layers.
    block_count: int

    @property
    def config(self) -> Config:
        """The file's metadata."""
        ...

    @property
    def used_gpus(self) -> Collection[int]:
        """Indices into :meth:`Backend.hook_gpu_devices` that received weights."""
        ...

    def get(self, name: str) -> Tensor | None:
        """Return the weight tensor created as ``name``, or None."""
        ...

    def memory_copy(self) -> BackendMemory:
        """Return a copy of the memory record."""
        ...

    def load(
        self, progress: Callable[[float], None] | None, cancel: threading.Event | None
    ) -> None:
        """Read the weights from the file."""
        ...

    def layer_device(self, layer: int) -> int:
        """Return the device of model layer ``layer``."""
        ...

    def account_cache(self, ctx: Context, t: Tensor) -> None:
        """Count a constructor tensor of a layer context as KV cache."""
        ...

    def reserve_graph(self, ctx: Context, graph: Sequence[Tensor]) -> None:
        """Record the scratch memory ``graph`` needs per device."""
        ...

    def close(self) -> None:
        """Free the weight tensors."""
        ...


class Backend(ABC):
    """A compute backend: devices, contexts, kernels and the memory it holds.

    Methods say who they are for.

    **Model authors** (ollama's ``ml.Backend``): :meth:`close`, :meth:`load`,
    :meth:`backend_memory`, :meth:`config`, :meth:`get`, :meth:`new_context`,
    :meth:`new_context_size`, :meth:`cache_config`, plus :meth:`devices`,
    :meth:`backend_devices`, and the read-only properties :attr:`max_graph_nodes`,
    :attr:`allocates`, :attr:`block_count`.

    **Plugin hooks** (a backend subclass overrides these; every name starts with ``hook_``):
    :meth:`hook_make_context` (required) and :meth:`devices` (required, also public); then, each
    with a default built on the public Context API, :meth:`hook_unsupported_reason`,
    :meth:`hook_gpu_devices`, :meth:`hook_alignment`, :meth:`hook_weights_context`,
    :meth:`hook_commit_weights`, :meth:`hook_copy_weights`, :meth:`hook_allocation_size`,
    :meth:`hook_host_buffer`,
    :meth:`hook_weight_writer`, :meth:`hook_measure_graph`, :meth:`hook_held_bytes` and
    :meth:`hook_close`. Capabilities the core reads are class attributes with defaults:
    :attr:`name`, :attr:`kernels`, :attr:`dtypes`, :attr:`plain_library`, :attr:`xfails_path`
    and the methods :meth:`known_failures` and :meth:`supported_ops`.

    **Core internals** start with ``_`` (the op layer's :meth:`check_node` excepted) and are
    called by Context, the op builders and the model-file layer only.

    Opening a model file is not done here: :func:`mlplug.new_backend` creates the backend with
    the plugin's factory, then the model-file layer opens the file and attaches it
    (:meth:`_attach_model`). A subclass's ``__init__`` may therefore set up its devices before
    or after ``super().__init__``. A backend constructed directly with a model path has no model
    attached: its model-facing methods raise :class:`~mlplug.errors.GraphError` saying to use
    :func:`mlplug.new_backend`.
    """

    #: Backend name as registered (``"cpu_numpy"``, ``"ggml"``, ...).
    name: ClassVar[str] = ""
    #: Primitive op name -> kernel. Ops absent here raise NotSupportedError when built.
    kernels: ClassVar[Mapping[str, Kernel]] = {}
    #: Dtypes this backend can hold in tensors.
    dtypes: ClassVar[frozenset[DType]] = frozenset({DType.F32, DType.F16, DType.I32})
    #: The plain library ``mlplug bench`` measures this backend against (``"numpy"``,
    #: ``"torch"``); None: the bench picks from the plugin's distribution.
    plain_library: ClassVar[str | None] = None
    #: Whether this backend can keep float32 copies of its block-encoded CPU weights, made once
    #: after loading when the user asks (``BackendParams.dequantize``, ``MLPLUG_DEQUANTIZE``):
    #: the plan then sizes each weight with its copy and :meth:`hook_copy_weights` makes them.
    #: A backend may set it per instance (e.g. only on the CPU).
    dequantized_copies: bool = False
    #: Where such a backend keeps the copies (:class:`~mlplug.quantmm.WeightCopies`, set in its
    #: ``__init__``): the default :meth:`hook_allocation_size` counts them and :meth:`close`
    #: frees them.
    weight_copies: WeightCopies | None = None
    #: Path of the conformance known-failures file; None: ``xfails.txt`` next to the module
    #: defining the backend class, when it exists.
    xfails_path: ClassVar[str | os.PathLike[str] | None] = None

    def __init__(
        self, model_path: str | os.PathLike[str] | None, params: BackendParams | None = None
    ) -> None:
        """Create the backend; the model file (if any) is opened by :func:`mlplug.new_backend`.

        :param model_path: the model file the backend is created for (None: none). With
            ``params.alloc_memory=False`` it makes this a dry run (:attr:`allocates`).
        """
        self.params = params if params is not None else BackendParams()
        self.model_path = model_path
        self.compute_lock = threading.Lock()
        #: Scheduler batch-size hint, set by contexts on compute (persists; a context without a
        #: batch size leaves it as it is).
        self.batch_size = 0
        self._closed = False
        self._dry_run = model_path is not None and not self.params.alloc_memory
        self._model: AttachedModel | None = None

    # -- plugin hooks: what subclasses provide -------------------------------------------------
    @abstractmethod
    def hook_make_context(self, max_nodes: int) -> Context:
        """Return a new root context of this backend with room for ``max_nodes`` ops."""

    @abstractmethod
    def devices(self) -> list[DeviceInfo]:
        """Return every device this backend can use (CPU included), as DeviceInfo."""

    def hook_unsupported_reason(self, node: Tensor) -> str | None:
        """Return why ``node`` cannot run here (a declared unsupported variant), or None."""
        return None

    def known_failures(self) -> dict[str, str]:
        """Return conformance cases known to fail here: case id (or glob) -> reason.

        Default: none besides the :attr:`xfails_path` file. Entries are strict xfails.
        """
        return {}

    def supported_ops(self) -> set[tuple[str, str]] | frozenset[tuple[str, str]] | None:
        """Return the (op, dtype) pairs this backend claims to run, or None to claim nothing.

        An op is a public op name as the conformance suite labels it (``"mulmat"``,
        ``"Context.arange"``), a dtype the case's dtype label (``"f32"``, ``"q8_0"``; see
        ``mlplug conformance``'s matrix). With a declaration, the conformance report lists the
        pairs declared but failing or unsupported (a failure of the run) and the pairs that
        pass without being declared (a warning). Default: None.
        """
        return None

    def hook_gpu_devices(self) -> list[DeviceInfo]:
        """Return the GPUs model layers may go to, in order; their positions are device indices.

        Default: :meth:`devices` whose library is not ``cpu``.
        """
        return [d for d in self.devices() if d.library.lower() != "cpu"]

    def hook_alignment(self, device: int) -> int:
        """Return the allocation alignment of ``device`` (-1 the CPU); sizes round up to it."""
        return _HOST_ALIGNMENT

    def hook_weights_context(self, device: int, n_tensors: int) -> Context:
        """Return a new context that will hold ``n_tensors`` model weights on ``device``.

        ``device`` is -1 for the CPU, else an index into :meth:`hook_gpu_devices`; the core sets
        the returned context's ``device_index`` to it. The context's constructor tensors must
        take that device's memory. Default: a context of this backend (host memory).
        """
        return self.hook_make_context(_DEFAULT_MAX_NODES)

    def hook_commit_weights(self, ctx: Context) -> None:  # noqa: B027 - optional hook
        """Finish a weight context once all its tensors exist (before any data is loaded).

        Default: nothing (each tensor got its storage when created). A backend that allocates
        one buffer per device does it here; a MemoryError becomes ErrNoMem.
        """

    def hook_copy_weights(self, weights: Sequence[Tensor]) -> None:  # noqa: B027 - optional hook
        """Make the float32 copies of ``weights``, once, right after they are loaded.

        Called only for a backend with :attr:`dequantized_copies` when the user asks for copies;
        ``weights`` are the ones the plan sized with a copy
        (:func:`mlplug.modelfile.placement.gets_copy`). The backend counts each copy in
        :meth:`hook_allocation_size` of its weight, so that what it holds equals the estimate.
        """

    def hook_allocation_size(self, t: Tensor) -> int:
        """Return the bytes this backend holds for the storage of root tensor ``t``.

        Default: the storage object's ``nbytes`` (numpy array, torch tensor), or ``t.nbytes``,
        rounded up to :meth:`hook_alignment` of the tensor's device; plus the weight's float32
        copy in :attr:`weight_copies`, if it has one (aligned the same way).
        """
        n = getattr(t.data, "nbytes", None) if t.data is not None else None
        if not isinstance(n, int):
            n = t.nbytes
        align = self.hook_alignment(t.ctx.device_index)
        copy = self.weight_copies.nbytes(t) if self.weight_copies is not None else 0
        return align_up(n, align) + (align_up(copy, align) if copy else 0)

    def hook_host_buffer(self, t: Tensor) -> memoryview | None:
        """Return a writable byte view of root tensor ``t``'s storage in host memory, or None.

        The loader reads file data straight into it. Default: the storage when it exports a
        writable, contiguous buffer of exactly ``t.nbytes`` bytes (a numpy array); else None.
        """
        if t.view_src is not None or t.data is None:
            return None
        try:
            view = memoryview(t.data)
        except TypeError:
            return None
        if view.readonly or not view.c_contiguous or view.nbytes != t.nbytes:
            return None
        return view.cast("B") if view.ndim != 1 or view.format != "B" else view

    def hook_weight_writer(self, t: Tensor) -> WeightWriter:
        """Return a writer of ``t``'s bytes in pieces (for converted data, or no host view).

        Default: writes through :meth:`hook_host_buffer` when there is one, else stages the
        whole tensor and calls ``t.from_bytes``. Override with partial device writes (e.g.
        ``ggml_backend_tensor_set``) to load without staging.
        """
        view = self.hook_host_buffer(t)
        return HostWriter(view) if view is not None else StagedWriter(t)

    def hook_measure_graph(self, ctx: Context, graph: Sequence[Tensor]) -> dict[int, int] | None:
        """Return the scratch bytes per device computing ``graph`` takes, or None to estimate.

        Default None: the core estimates it (:func:`mlplug.graph.estimate_graph`). A backend
        with a graph allocator (ggml's scheduler) returns its reservation here.
        """
        return None

    def hook_held_bytes(self) -> dict[int, int]:
        """Return the bytes of storage this backend holds now, per device (-1 the CPU).

        Counts every live constructor tensor (weights, cache, inputs) and every op result that
        owns storage, with :meth:`hook_allocation_size`. A dry run holds nothing. Backends with
        their own allocators may override this with their buffer sizes.
        """
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
                    device = t.ctx.device_index
                else:
                    if devices is None:
                        devices = node_devices(graph)
                    device = devices[id(t)]
                held[device] = held.get(device, 0) + self.hook_allocation_size(t)
        return held

    def hook_close(self) -> None:  # noqa: B027 - optional hook
        """Free backend-specific resources (called once, after the model's weights)."""

    # -- public API: model authors ----------------------------------------------------------
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
        return self.hook_make_context(n)

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

        :raises GraphError: ``cannot load model without memory allocation`` on a dry run; or the
            backend was constructed directly with a model path (use :func:`mlplug.new_backend`).
        :raises LoadCancelledError: ``cancel`` was set.
        :raises ModelFileError: the file changed since it was opened or ended early.
        """
        self._check_open()
        model = self._attached()
        if model is not None:
            model.load(progress, cancel)

    def config(self) -> Config:
        """Return the model's metadata.

        :raises GraphError: the backend has no model file (create it with
            ``mlplug.new_backend(model_path, ...)``).
        """
        model = self._attached()
        if model is None:
            msg = (
                f"backend {self.name!r} has no model file, so no config: create it with "
                "mlplug.new_backend(model_path, params)"
            )
            raise GraphError(msg)
        return model.config

    def get(self, name: str) -> Tensor | None:
        """Return the weight tensor created as ``name``, or None.

        A tied ``output.weight`` and the per-layer ``blk.{i}.rope_freqs.weight`` copies exist;
        a file's plain ``rope_freqs.weight`` does not.
        """
        model = self._attached()
        return None if model is None else model.get(name)

    def backend_memory(self) -> BackendMemory:
        """Return a copy of what the model needs (or holds) per device: weights, cache, graph."""
        model = self._attached()
        if model is not None:
            return model.memory_copy()
        return BackendMemory(cpu=DeviceMemory(name="CPU"))

    def backend_devices(self) -> list[DeviceInfo]:
        """Return the GPU devices of this backend (never the CPU).

        With a model loaded for real (``alloc_memory=True``), GPUs that received no weights are
        left out, so as not to wake them (docs/devices.md).
        """
        gpus = [d for d in self.devices() if d.library.lower() != "cpu"]
        if self._model is None or not self.params.alloc_memory:
            return gpus
        placed = self.hook_gpu_devices()
        used = {_device_key(placed[i]) for i in self._model.used_gpus if i < len(placed)}
        return [d for d in gpus if _device_key(d) in used]

    def cache_config(self) -> CacheConfig:
        """Return how KV caches should be laid out for this backend."""
        return _PLAIN_CACHE

    def close(self) -> None:
        """Free the model's weights and the backend's resources; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._model is not None:
            self._model.close()
            self._model = None
        if self.weight_copies is not None:
            self.weight_copies.clear()
        self.hook_close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- core internals ------------------------------------------------------------------------
    def check_node(self, node: Tensor) -> None:
        """Raise NotSupportedError if this backend has no kernel for ``node`` (op builders)."""
        if node.op not in self.kernels:
            raise NotSupportedError(self.name, node.op, "no kernel for this op")
        reason = self.hook_unsupported_reason(node)
        if reason is not None:
            raise NotSupportedError(self.name, node.op, reason)

    def _attach_model(self, model: AttachedModel) -> None:
        """Hold ``model`` (opened by the model-file layer for :attr:`model_path`)."""
        self._check_open()
        self._model = model

    def _attached(self) -> AttachedModel | None:
        """Return the attached model; refuse a backend built directly with a model path."""
        if self._model is None and self.model_path is not None and not self._closed:
            msg = (
                f"backend {self.name!r} was constructed directly with model path "
                f"{str(self.model_path)!r}, so no model is open: create backends with "
                "mlplug.new_backend(model_path, params, backend=...)"
            )
            raise GraphError(msg)
        return self._model

    def _account_cache(self, ctx: Context, t: Tensor) -> None:
        """Count a new constructor tensor of ``ctx`` in the memory record (layer cache).

        Called by ``Context`` before the tensor's storage is allocated, so a failed request is
        in the record ErrNoMem carries.
        """
        if self._model is not None:
            self._model.account_cache(ctx, t)

    def _reserve_graph(self, ctx: Context, graph: Sequence[Tensor]) -> None:
        """Record the scratch memory ``graph`` needs per device (``Context.reserve``).

        :raises ErrNoMem: with ``alloc_memory=True``, a device's graph exceeds its free memory.
        """
        if self._model is not None:
            self._model.reserve_graph(ctx, graph)

    def _layer_device(self, layer: int) -> int:
        """Return the device of model layer ``layer``: -1 the CPU, else a GPU index."""
        return -1 if self._model is None else self._model.layer_device(layer)

    def _track_context(self, ctx: Context) -> None:
        """Remember ``ctx`` (weakly) so :meth:`hook_held_bytes` can find its tensors."""
        with _TRACK_LOCK:
            contexts = self.__dict__.get("_contexts")
            if contexts is None:
                contexts = self.__dict__.setdefault("_contexts", weakref.WeakSet())
            contexts.add(ctx)

    def _check_open(self) -> None:
        if self._closed:
            msg = f"backend {self.name!r} is closed"
            raise GraphError(msg)


def _device_key(d: DeviceInfo) -> tuple[str, str]:
    return (d.library, d.id)
