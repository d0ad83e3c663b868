"""Optional ``torch.compile`` of repeating graphs.

When a graph with the same structure is computed again (same ops, dtypes, shapes, strides,
offsets, parameters and wiring; the data and the tensor objects may differ), the backend
traces the node list once into a functional FX graph of the leaf storages (``make_fx`` in
fake mode, so no data is baked in), compiles it with ``torch.compile`` and replays it for
every later occurrence: leaf storages go in; the storages of the graph's results and of
every leaf it writes (KV caches, in-place inputs) come out.

Anything that cannot be traced or compiled (data-dependent Python such as the expert loop of
``mulmat_id``, host-side quantisation) makes that graph fall back to eager execution, with
one logged warning per graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import torch

from mlplug.plugin_api import LEAF, VIEW_OPS

from .context import storage_dtype

if TYPE_CHECKING:
    from mlplug import Tensor

    from .context import TorchContext

__all__ = ["COMPILE_ENV", "GraphCompiler", "compile_backend_from_env"]

_log = logging.getLogger(__name__)

#: Environment variable enabling compilation: ``1`` (inductor) or a torch.compile backend name.
COMPILE_ENV: Final = "MLPLUG_TORCH_COMPILE"
_MAX_SEEN: Final = 512

Signature = tuple[Any, ...]


def compile_backend_from_env(value: str | None) -> str | None:
    """Return the torch.compile backend an option value names, or None for "off".

    ``""``, ``0``, ``false``, ``off`` and ``no`` disable; ``1``, ``true``, ``on`` and ``yes``
    mean inductor; anything else is taken as a backend name (e.g. ``aot_eager``).
    """
    text = (value or "").strip()
    low = text.lower()
    if low in ("", "0", "false", "off", "no"):
        return None
    if low in ("1", "true", "on", "yes"):
        return "inductor"
    return text


def signature(graph: Sequence[Tensor], wanted: Sequence[Tensor]) -> Signature:
    """Return a hashable key equal for graphs that one compiled replay can run."""
    pos: dict[int, int] = {}
    items: list[Any] = []
    for i, t in enumerate(graph):
        pos[id(t)] = i
        vs = t.view_src
        items.append(
            (
                t.op,
                t.dtype,
                t.ne,
                t.nb,
                t.view_offs,
                t.params,
                tuple(pos[id(s)] for s in t.src),
                -1 if vs is None else pos.get(id(vs), -2),
            )
        )
    want = tuple(sorted({pos[id(w)] for w in wanted if id(w) in pos}))
    return (tuple(items), want)


@dataclass
class _Compiled:
    """A compiled replay: which graph positions go in and which come out."""

    fn: Callable[..., Any]
    leaves: list[int]
    outputs: list[int]
    modified: list[int]


class GraphCompiler:
    """Compile graphs that repeat and replay them; fall back to eager when that fails."""

    def __init__(self, backend: str = "inductor", after: int = 2) -> None:
        #: torch.compile backend name (``inductor``, ``aot_eager``, ...).
        self.backend = backend
        #: Compile a graph the ``after``-th time its signature is seen.
        self.after = max(1, after)
        self._seen: dict[Signature, int] = {}
        self._compiled: dict[Signature, _Compiled | None] = {}

    @property
    def compiled_count(self) -> int:
        """Number of graphs compiled successfully so far."""
        return sum(1 for c in self._compiled.values() if c is not None)

    def clear(self) -> None:
        """Forget every compiled graph."""
        self._seen.clear()
        self._compiled.clear()

    def run(self, ctx: TorchContext, graph: Sequence[Tensor], wanted: Sequence[Tensor]) -> bool:
        """Run ``graph`` compiled if it repeats; return False to have the caller run it eagerly."""
        sig = signature(graph, wanted)
        entry = self._compiled.get(sig, ...)
        if entry is None:
            return False
        if entry is ...:
            n = self._seen.get(sig, 0) + 1
            if n < self.after:
                if len(self._seen) >= _MAX_SEEN:
                    self._seen.clear()
                self._seen[sig] = n
                return False
            self._seen.pop(sig, None)
            try:
                entry = self._build(ctx, graph, wanted)
            except Exception as exc:  # any tracing failure: run eagerly
                _log.warning(
                    "torch.compile: graph of %d nodes cannot be traced, running it eagerly: %s",
                    len(graph),
                    _short(exc),
                )
                self._compiled[sig] = None
                return False
            self._compiled[sig] = entry
        try:
            self._replay(ctx, entry, graph)
        except Exception as exc:  # compile errors surface on 1st call
            _log.warning(
                "torch.compile (%s) failed for a graph of %d nodes, running it eagerly: %s",
                self.backend,
                len(graph),
                _short(exc),
            )
            self._compiled[sig] = None
            return False
        return True

    # -- building ---------------------------------------------------------------------------
    def _build(
        self, ctx: TorchContext, graph: Sequence[Tensor], wanted: Sequence[Tensor]
    ) -> _Compiled:
        from torch.fx.experimental.proxy_tensor import make_fx

        pos = {id(t): i for i, t in enumerate(graph)}
        leaves = [i for i, t in enumerate(graph) if t.op == LEAF]
        consumed = {id(s) for t in graph for s in t.src}
        want_roots = {pos[id(w.root)] for w in wanted if id(w.root) in pos}
        sink_roots = {pos[id(t.root)] for t in graph if id(t) not in consumed}
        outputs = sorted(i for i in want_roots | sink_roots if graph[i].op != LEAF)
        modified: list[int] = []
        template = list(graph)
        kernels = ctx.backend.kernels

        def replay(*storages: torch.Tensor) -> tuple[torch.Tensor, ...]:
            env: dict[int, torch.Tensor] = {}
            initial: list[torch.Tensor] = []
            for i, s in zip(leaves, storages, strict=True):
                want = storage_dtype(template[i].dtype)
                flat = s if want == torch.uint8 else s.view(want)
                env[id(template[i])] = flat
                initial.append(flat)
            saved_memo, ctx.memo, ctx.env = ctx.memo, {}, env
            try:
                for t in template:
                    if t.op != LEAF and t.op not in VIEW_OPS:
                        kernels[t.op](ctx, t)
            finally:
                ctx.env, ctx.memo = None, saved_memo
            modified[:] = [
                i for i, v in zip(leaves, initial, strict=True) if env[id(template[i])] is not v
            ]
            return tuple(env[id(template[i])] for i in (*outputs, *modified))

        inputs = [_leaf_storage(ctx, graph[i]) for i in leaves]
        gm = make_fx(replay, tracing_mode="fake")(*inputs)
        fn = torch.compile(gm, backend=self.backend, dynamic=False)
        return _Compiled(fn, leaves, outputs, list(modified))

    # -- running ----------------------------------------------------------------------------
    @staticmethod
    def _replay(ctx: TorchContext, entry: _Compiled, graph: Sequence[Tensor]) -> None:
        inputs = [_leaf_storage(ctx, graph[i]) for i in entry.leaves]
        results = entry.fn(*inputs)
        taken = {x.untyped_storage().data_ptr() for x in inputs if x.numel()}
        n_out = len(entry.outputs)
        for k, i in enumerate(entry.outputs):
            v = results[k]
            ptr = v.untyped_storage().data_ptr()
            if ptr in taken or not v.is_contiguous():  # never let two roots share storage
                v = v.clone()
            taken.add(v.untyped_storage().data_ptr())
            root = graph[i]
            root.data = v.reshape(-1).view(torch.uint8)
        for k, i in enumerate(entry.modified):
            graph[i].data.copy_(results[n_out + k].reshape(-1).view(torch.uint8))
        for t in graph:
            if t.op != LEAF:
                t.handle = None


def _leaf_storage(ctx: TorchContext, t: Tensor) -> torch.Tensor:
    data = t.data
    if data is None:  # an empty (zero-element) tensor
        return torch.empty(0, dtype=torch.uint8, device=ctx.device)
    return data  # type: ignore[no-any-return]


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]
