"""Model: a GGUF model's weights on a backend (spec 6.4-6.8).

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
from typing import TYPE_CHECKING, Final

from .._tensorbase import LEAF
from ..dtypes import align_up
from ..errors import ErrNoMem, GraphError, ModelFileError
from ..memory import BackendMemory, DeviceMemory
from .config import Config
from .loader import FileIdentity, LoadJob, load_weights, swap_size
from .placement import CPU, PlacementPlan, PlannedTensor, plan_placement
from .reader import GGUFFile

if TYPE_CHECKING:
    from ..backend import Backend
    from ..context import Context
    from ..device import DeviceInfo
    from ..tensor import Tensor

__all__ = ["Model", "estimate_graph", "node_devices", "result_owners"]

_log = logging.getLogger("mlplug.modelfile")
_FIRST_OPEN = threading.Event()
_NOT_LOADABLE: Final = "cannot load model without memory allocation"


def node_devices(graph: Sequence[Tensor]) -> dict[int, int]:
    """Return the device each graph node runs on, keyed by ``id(node)``.

    A constructor tensor is on its context's ``device_index``; a view or in-place result is where
    its root is; any other op runs on the device of its first source that is on a GPU (its weight,
    as the reference's scheduler places ops next to their weights), else on the CPU.
    """
    devices: dict[int, int] = {}
    for t in graph:
        if t.op == LEAF:
            d = getattr(t.ctx, "device_index", CPU)
        elif t.view_src is not None:
            root = t.view_src
            d = devices.get(id(root), getattr(root.ctx, "device_index", CPU))
        else:
            d = CPU
            for s in t.src:
                sd = devices.get(id(s), getattr(s.root.ctx, "device_index", CPU))
                if sd != CPU:
                    d = sd
                    break
        devices[id(t)] = d
    return devices


def result_owners(graph: Sequence[Tensor]) -> list[Tensor]:
    """Return the op results of ``graph`` that own storage (neither constructors nor views)."""
    return [t for t in graph if t.op != LEAF and t.view_src is None]


def estimate_graph(
    graph: Sequence[Tensor], size_of: Callable[[Tensor, int], int], reuses_scratch: bool
) -> dict[int, int]:
    """Estimate the scratch bytes per device that computing ``graph`` needs.

    With ``reuses_scratch`` this is a liveness walk in execution order: a result's buffer is
    taken when its op runs and given back after the last op reading it (directly or through a
    view); results nobody reads (the outputs) stay to the end. The estimate is the peak of the
    live bytes on each device. Without it every result keeps its buffer: the sum.

    :param graph: nodes in execution order (leaves included).
    :param size_of: bytes of a result's buffer on a device.
    :param reuses_scratch: whether buffers are given back after their last use.
    :returns: device index -> bytes (devices with results only).
    """
    devices = node_devices(graph)
    owners = result_owners(graph)
    sizes = {id(t): size_of(t, devices[id(t)]) for t in owners}
    if not reuses_scratch:
        total: dict[int, int] = {}
        for t in owners:
            d = devices[id(t)]
            total[d] = total.get(d, 0) + sizes[id(t)]
        return total
    # A result's buffer lives from its op to the last op reading it or any view of it; a
    # result (or view of it) that no op reads is an output and lives to the end.
    end_of_graph = len(graph)
    read_at: dict[int, int] = {}
    for i, t in enumerate(graph):
        for s in t.src:
            read_at[id(s)] = i
    last: dict[int, int] = {}
    for i, t in enumerate(graph):
        root = t.root
        if id(root) in sizes:
            end = read_at.get(id(t), end_of_graph)
            last[id(root)] = max(last.get(id(root), i), end)
    dying: dict[int, list[int]] = {}
    for key, end in last.items():
        dying.setdefault(end, []).append(key)
    live: dict[int, int] = {}
    peak: dict[int, int] = {}
    for i, t in enumerate(graph):
        key = id(t)
        if key in sizes:
            d = devices[key]
            live[d] = live.get(d, 0) + sizes[key]
            peak[d] = max(peak.get(d, 0), live[d])
        for gone in dying.get(i, ()):
            live[devices[gone]] -= sizes[gone]
    return peak


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
        self._closed = False

    # -- creation ------------------------------------------------------------------------------
    @classmethod
    def open(cls, backend: Backend, path: str | os.PathLike[str]) -> Model:
        """Open ``path`` for ``backend``: plan placement, fill memory, create the weight tensors.

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
            gpus = backend.gpu_devices()
            plan = plan_placement(
                gguf.tensors,
                config.block_count(),
                path=spath,
                block_count_key=config.key("block_count"),
                gpus=gpus,
                gpu_layers=backend.params.gpu_layers,
                alignment=backend.alignment(CPU),
                gpu_alignment={g: backend.alignment(g) for g in range(len(gpus))},
            )
            memory = _memory_record(plan, cpu_info, gpus)
            model = cls(backend, spath, gguf, identity, plan, memory, (cpu_info, gpus))
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
                ctx = self.backend.weights_context(device, len(planned))
                ctx.device_index = device
                self._contexts.append(ctx)
                for p in planned:
                    t = ctx.empty(p.dtype, *(p.ne or (1,)))
                    t.name = p.name
                    self._by_name[p.name] = t
                    self._by_created.setdefault(p.name, []).append(t)
                self.backend.commit_weights(ctx)
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
        size = align_up(t.nbytes, self.backend.alignment(device))
        with self._lock:
            self.device_memory(device).cache[layer] += size

    def reserve_graph(self, ctx: Context, graph: Sequence[Tensor]) -> None:
        """Record the scratch memory ``graph`` needs on each device (the last call wins).

        Uses :meth:`Backend.measure_graph` when the backend measures it, else
        :func:`estimate_graph`.

        :raises ErrNoMem: with ``alloc_memory=True``, a device's graph exceeds its free memory.
        """
        backend = self.backend
        sizes = backend.measure_graph(ctx, graph)
        if sizes is None:
            sizes = estimate_graph(
                graph,
                lambda t, d: align_up(t.nbytes, backend.alignment(d)),
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
        for ctx in contexts:
            ctx.close()


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
