"""Backend: the abstract base every backend plugin implements."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .dtypes import DType
from .errors import GraphError, NotSupportedError
from .params import BackendParams, CacheConfig

if TYPE_CHECKING:
    from .context import Context
    from .device import DeviceInfo
    from .memory import BackendMemory
    from .modelfile.config import Config
    from .tensor import Tensor

__all__ = ["Backend", "Kernel"]

#: A backend's implementation of one primitive op: ``kernel(ctx, node)``.
Kernel = Callable[..., Any]

_DEFAULT_MAX_NODES = 1024


class Backend(ABC):
    """A compute backend: devices, contexts, and (when given a model) the model's weights.

    Subclasses set :attr:`name`, :attr:`kernels` (primitive op name -> implementation),
    :attr:`dtypes` (dtypes it can store) and implement :meth:`_make_context` and
    :meth:`devices`. Everything about graphs, validation and model files lives in the core.
    """

    #: Backend name as registered (``"cpu_numpy"``, ``"ggml"``, ...).
    name: ClassVar[str] = ""
    #: Primitive op name -> kernel. Ops absent here raise NotSupportedError when built.
    kernels: ClassVar[Mapping[str, Kernel]] = {}
    #: Dtypes this backend can hold in tensors.
    dtypes: ClassVar[frozenset[DType]] = frozenset({DType.F32, DType.F16, DType.I32})

    def __init__(self, model_path: str | None, params: BackendParams | None = None) -> None:
        self.params = params if params is not None else BackendParams()
        self.model_path = model_path
        self.compute_lock = threading.Lock()
        #: Scheduler batch-size hint, set by contexts on compute (persists, as in the seed).
        self.batch_size = 0
        self._closed = False
        self._model: Any = None
        if model_path is not None:
            from .modelfile.model import Model

            self._model = Model.open(self, model_path)

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
        """False for a dry run (``alloc_memory=False`` with a model): sizes only, no data."""
        return self._model is None or self.params.alloc_memory

    @property
    def block_count(self) -> int:
        """Number of repeating layers of the model (0 without a model)."""
        return 0 if self._model is None else int(self._model.block_count)

    def load(
        self,
        progress: Callable[[float], None] | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> None:
        """Read the model's weights into their tensors, reporting ``progress`` up to 1.0.

        Without a model this does nothing. Setting ``cancel`` stops the load cleanly.
        """
        self._check_open()
        if self._model is not None:
            self._model.load(progress, cancel)

    def config(self) -> Config:
        """Return the model's metadata (an empty Config without a model)."""
        from .modelfile.config import Config

        return self._model.config if self._model is not None else Config.empty()

    def get(self, name: str) -> Tensor | None:
        """Return the weight tensor called ``name``, or None."""
        return None if self._model is None else self._model.get(name)

    def backend_memory(self) -> BackendMemory:
        """Return what the model needs (or holds) per device: weights, cache, graph."""
        from .memory import BackendMemory, DeviceMemory

        if self._model is not None:
            return self._model.memory_copy()
        return BackendMemory(cpu=DeviceMemory(name="CPU"))

    def backend_devices(self) -> list[DeviceInfo]:
        """Return the GPU devices of this backend (never CPU or accelerators)."""
        return [d for d in self.devices() if d.library.lower() != "cpu"]

    def cache_config(self) -> CacheConfig:
        """Return how KV caches should be laid out for this backend."""
        return CacheConfig(cache_padding=1, permuted_v=False, mask_dtype=DType.F32)

    def account(self, ctx: Context, t: Tensor) -> None:
        """Count a new constructor tensor of ``ctx`` in the memory record (layer cache)."""
        if self._model is not None:
            self._model.account_cache(ctx, t)

    def reserve_graph(self, ctx: Context, graph: Sequence[Tensor]) -> None:
        """Record the scratch memory ``graph`` needs (default: bytes of its op results)."""
        if self._model is not None:
            self._model.reserve_graph(graph)

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

    def _close(self) -> None:
        """Free backend-specific resources (override in subclasses)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
