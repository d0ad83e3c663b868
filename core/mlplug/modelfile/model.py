"""Model: a GGUF model's weights on a backend (docs/models-and-memory.md).

:meth:`Model.open` decodes the file read-only, plans placement (:func:`plan_placement`), fills the
BackendMemory record, checks every device can hold its weights and creates the weight tensors in
per-device weight contexts through the backend's hooks. It then serves ``get``/``config``, counts
KV-cache tensors of ``ctx.layer(i)`` contexts, estimates graph scratch on ``ctx.reserve()`` and
streams the weights in on ``load`` (:mod:`mlplug.modelfile.loader`). Everything here works through
the public Context API and the Backend hooks, so every backend plugin gets it unchanged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

from ..backend import Backend as _Backend
from ..dtypes import align_up
from ..errors import ErrNoMem, GraphError, ModelFileError
from ..graph import estimate_graph, node_devices, result_owners
from ..memory import BackendMemory, DeviceMemory
from ..params import DequantizeMode, dequantize_mode
from .config import Config
from .loader import FileIdentity, LoadJob, load_weights, swap_size
from .placement import CPU, PlacementPlan, PlannedTensor, gets_copy, plan_placement
from .reader import GGUFFile

if TYPE_CHECKING:
    from ..backend import Backend
    from ..context import Context
    from ..device import DeviceInfo
    from ..tensor import Tensor

__all__ = ["Model", "estimate_graph", "node_devices", "open_model", "result_owners"]

_log = logging.getLogger("mlplug.modelfile")
B = TypeVar("B", bound="Backend")
_FIRST_OPEN = threading.Event()
_NOT_LOADABLE: Final = "cannot load model without memory allocation"


class Model:
    """A model file's metadata, placement, memory record and weight tensors on one backend.

    Create it with :meth:`open`; :class:`~mlplug.Backend` delegates ``load``, ``get``,
    ``config``, ``backend_memory`` and the cache/graph accounting to it.
    """

    def __init__(
        self,
        backend: Backend,
        path: str,
        gguf: GGUFFile,
        identity: FileIdentity,
        plan: PlacementPlan,
        memory: BackendMemory,
        devices: tuple[DeviceInfo | None, list[DeviceInfo]],
    ) -> None:
        self.backend = backend
        self.path = path
        self.config = Config(gguf.metadata)
        self.tensor_count = len(gguf.tensors)
        self.block_count = plan.block_count
        self.plan = plan
        self.memory = memory
        self._identity = identity
        self._byte_order = gguf.byte_order
        self._files = gguf.tensors
        self._cpu_info, self._gpu_infos = devices
        self._lock = threading.Lock()
        self._contexts: list[Context] = []
        self._by_name: dict[str, Tensor] = {}
        self._by_created: dict[str, list[Tensor]] = {}
        #: Weights that get a float32 copy after loading (``BackendParams.dequantize``).
        self._copied: list[Tensor] = []
        self._closed = False

    # -- creation ------------------------------------------------------------------------------
    @classmethod
    def open(cls, backend: Backend, path: str | os.PathLike[str]) -> Model:
        """Open ``path`` for ``backend``: plan placement, fill memory, create the weight tensors.

        The model is attached to the backend (``Backend._attach_model``) before its weights are
        created, so memory errors raised meanwhile carry its record.

        :raises ModelFileError: the file is missing, not GGUF, malformed, or has a tensor the
            placement rules reject (a layer index >= block_count, an uncreatable type).
        :raises ErrNoMem: a device cannot hold its weights (``alloc_memory=True`` only); the
            error carries the complete record and nothing stays allocated.
        """
        spath = os.fspath(path)
        with GGUFFile(spath) as gguf:
            try:
                identity = FileIdentity.of(os.stat(spath))
            except OSError as exc:
                message = f"cannot stat model file: {exc.strerror or exc}"
                raise ModelFileError(spath, message) from exc
            config = Config(gguf.metadata)
            if not _FIRST_OPEN.is_set():
                _FIRST_OPEN.set()
                _log.info(
                    "model metadata: architecture=%s file_type=%s name=%r description=%r "
                    "num_tensors=%d num_key_values=%d",
                    config.architecture(),
                    config.file_type(),
                    config.string("general.name"),
                    config.string("general.description"),
                    len(gguf.tensors),
                    len(gguf.metadata),
                )
            infos = backend.devices()
            cpu_info = next((d for d in infos if d.library.lower() == "cpu"), None)
            gpus = backend.hook_gpu_devices()
            plan = plan_placement(
                gguf.tensors,
                config.block_count(),
                path=spath,
                block_count_key=config.key("block_count"),
                gpus=gpus,
                gpu_layers=backend.params.gpu_layers,
                alignment=backend.hook_alignment(CPU),
                gpu_alignment={g: backend.hook_alignment(g) for g in range(len(gpus))},
                weight_copies=_weight_copies(backend),
            )
            memory = _memory_record(plan, cpu_info, gpus)
            model = cls(backend, spath, gguf, identity, plan, memory, (cpu_info, gpus))
        backend._attach_model(model)
        model._create_weights()
        return model

    def _create_weights(self) -> None:
        by_device: dict[int, list[PlannedTensor]] = {}
        for p in self.plan.tensors:
            by_device.setdefault(p.device, []).append(p)
        if self.backend.allocates:
            self._check_fits(by_device)
        try:
            for device, planned in by_device.items():
                ctx = self.backend.hook_weights_context(device, len(planned))
                ctx.device_index = device
                self._contexts.append(ctx)
                for p in planned:
                    t = ctx.empty(p.dtype, *(p.ne or (1,)))
                    t.name = p.name
                    if self.plan.weight_copies and gets_copy(p.dtype, p.device, p.layer):
                        self._copied.append(t)
                    self._by_name[p.name] = t
                    self._by_created.setdefault(p.name, []).append(t)
                self.backend.hook_commit_weights(ctx)
        except MemoryError as exc:
            self.close()
            raise ErrNoMem(self.memory_copy()) from exc
        except BaseException:
            self.close()
            raise

    def _check_fits(self, by_device: dict[int, list[PlannedTensor]]) -> None:
        """Raise ErrNoMem if a device's weights exceed its free memory (when it reports any)."""
        for device in by_device:
            info = self._cpu_info if device == CPU else self._gpu_infos[device]
            if info is None or info.total_memory <= 0:
                continue
            entry = self.device_memory(device)
            need = sum(entry.weights) + (self.memory.input_weights if device == CPU else 0)
            if need > info.free_memory:
                _log.warning(
                    "model weights do not fit: device=%s needs=%d free=%d",
                    entry.name,
                    need,
                    info.free_memory,
                )
                raise ErrNoMem(self.memory_copy())

    # -- queries -------------------------------------------------------------------------------
    @property
    def used_gpus(self) -> list[int]:
        """Indices into the backend's GPUs that received weights."""
        return self.plan.used_gpus

    def device_memory(self, device: int) -> DeviceMemory:
        """Return the memory entry of ``device`` (``-1``: the CPU)."""
        return self.memory.cpu if device == CPU else self.memory.gpus[device]

    def layer_device(self, layer: int) -> int:
        """Return the device of ``layer`` (``block_count``: the output layer; else the CPU)."""
        if 0 <= layer <= self.block_count:
            return self.plan.layer_devices[layer]
        return CPU

    def get(self, name: str) -> Tensor | None:
        """Return the weight tensor created as ``name``, or None."""
        return self._by_name.get(name)

    def memory_copy(self) -> BackendMemory:
        """Return a deep copy of the memory record."""
        with self._lock:
            return self.memory.model_copy(deep=True)

    # -- accounting ----------------------------------------------------------------------------
    def account_cache(self, ctx: Context, t: Tensor) -> None:
        """Add a constructor tensor of a ``layer(i)`` context to ``cache[i]`` of i's device."""
        layer = ctx.layer_index
        if not 0 <= layer < self.block_count:
            return
        device = self.plan.layer_devices[layer]
        size = align_up(t.nbytes, self.backend.hook_alignment(device))
        with self._lock:
            self.device_memory(device).cache[layer] += size

    def reserve_graph(self, ctx: Context, graph: Sequence[Tensor]) -> None:
        """Record the scratch memory ``graph`` needs on each device (the last call wins).

        Uses :meth:`Backend.hook_measure_graph` when the backend measures it, else
        :func:`estimate_graph`.

        :raises ErrNoMem: with ``alloc_memory=True``, a device's graph exceeds its free memory.
        """
        backend = self.backend
        sizes = backend.hook_measure_graph(ctx, graph)
        if sizes is None:
            sizes = estimate_graph(
                graph,
                lambda t, d: align_up(t.nbytes, backend.hook_alignment(d)),
                type(ctx).reuses_scratch,
            )
        with self._lock:
            for entry in (self.memory.cpu, *self.memory.gpus):
                entry.graph = 0
            for device, n in sizes.items():
                self.device_memory(device).graph += n
        if not backend.allocates:
            return
        infos = {d.id + "\0" + d.library: d for d in backend.devices()}
        for device, n in sizes.items():
            entry = self.device_memory(device)
            info = infos.get(entry.id + "\0" + entry.library)
            if info is not None and info.total_memory > 0 and n > info.free_memory:
                raise ErrNoMem(self.memory_copy())

    # -- loading -------------------------------------------------------------------------------
    def load(
        self, progress: Callable[[float], None] | None, cancel: threading.Event | None
    ) -> None:
        """Stream the weights from the file (see :func:`~mlplug.modelfile.loader.load_weights`).

        On any failure (cancellation included) the backend is closed, so no weights stay
        half-loaded in memory.

        :raises GraphError: on a dry-run backend (``alloc_memory=False``), or after close.
        :raises LoadCancelledError: ``cancel`` was set.
        :raises ModelFileError: the file changed or ended early.
        """
        if not self.backend.allocates:
            raise GraphError(_NOT_LOADABLE)
        if self._closed:
            msg = "model weights were freed (the backend is closed)"
            raise GraphError(msg)
        self._log_offload()
        jobs = []
        for info in self._files:
            names = dict.fromkeys(self.plan.targets.get(info.name, ()))
            targets = list({id(t): t for n in names for t in self._by_created.get(n, ())}.values())
            if not targets:
                continue
            planned = self.plan.names[next(iter(names))]
            jobs.append(
                LoadJob(info, targets, planned.conversion, swap_size(info.dtype, self._byte_order))
            )
        try:
            load_weights(self.backend, self.path, self._identity, jobs, progress, cancel)
            if self._copied:
                self.backend.hook_copy_weights(self._copied)
        except BaseException:
            self.backend.close()
            raise

    def _log_offload(self) -> None:
        blocks = self.block_count
        layers = self.plan.layer_devices
        n = sum(1 for d in layers[:blocks] if d != CPU)
        _log.info("offloading %d repeating layers to GPU", n)
        if layers[blocks] != CPU:
            n += 1
            _log.info("offloading output layer to GPU")
        else:
            _log.info("offloading output layer to CPU")
        _log.info("offloaded %d/%d layers to GPU", n, blocks + 1)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the weight tensors; idempotent."""
        if self._closed:
            return
        self._closed = True
        contexts, self._contexts = self._contexts, []
        self._by_name = {}
        self._by_created = {}
        self._copied = []
        for ctx in contexts:
            ctx.close()


def _weight_copies(backend: _Backend) -> bool:
    """Whether ``backend`` keeps float32 copies of its weights (it can, and the user asks)."""
    return backend.dequantized_copies and dequantize_mode(backend.params) == DequantizeMode.F32


def open_model(backend: B, model_path: str | os.PathLike[str] | None) -> B:
    """Open ``model_path`` for a freshly created ``backend`` and attach it; return the backend.

    :func:`mlplug.new_backend` calls this on what the plugin's factory returned. With no path
    it does nothing (also for an object that is not a :class:`~mlplug.Backend`, such as a test
    double). If opening fails the backend is closed and the error propagates.

    :raises ModelFileError: the model file is missing or malformed.
    :raises ErrNoMem: a device cannot hold its weights (``alloc_memory=True``).
    """
    if model_path is None or not isinstance(backend, _Backend):
        return backend
    try:
        Model.open(backend, model_path)
    except BaseException:
        try:
            backend.close()
        except Exception:  # the open error is the one to report
            _log.debug("closing the backend after a failed open raised", exc_info=True)
        raise
    return backend


def _memory_record(
    plan: PlacementPlan, cpu: DeviceInfo | None, gpus: Sequence[DeviceInfo]
) -> BackendMemory:
    """Return the BackendMemory of a fresh plan: weights filled in, cache and graph zero."""
    slots = plan.block_count + 1
    return BackendMemory(
        input_weights=plan.input_weights,
        cpu=DeviceMemory(
            id=cpu.id if cpu is not None else "",
            library=cpu.library if cpu is not None else "",
            name="CPU",
            weights=list(plan.cpu_weights),
            cache=[0] * slots,
        ),
        gpus=[
            DeviceMemory(
                id=g.id,
                library=g.library,
                name=g.name,
                weights=list(plan.gpu_weights[i]),
                cache=[0] * slots,
            )
            for i, g in enumerate(gpus)
        ],
    )
