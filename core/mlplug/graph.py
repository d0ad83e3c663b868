"""Graph analysis: where each node of a computation graph runs and what scratch it needs.

These helpers read a graph (nodes in execution order, leaves included) through the public
Tensor and Context attributes only; the model-file layer and backends use them to size and
account memory per device (``-1`` is the CPU, ``i >= 0`` an index into a backend's GPUs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from ._tensorbase import LEAF

if TYPE_CHECKING:
    from .tensor import Tensor

__all__ = ["CPU", "estimate_graph", "node_devices", "result_owners"]

CPU: Final = -1
"""The device index of the host CPU."""


def node_devices(graph: Sequence[Tensor]) -> dict[int, int]:
    """Return the device each graph node runs on, keyed by ``id(node)``.

    A constructor tensor is on its context's ``device_index``; a view or in-place result is where
    its root is; any other op runs on the device of its first source that is on a GPU (its weight,
    as the reference's scheduler places ops next to their weights), else on the CPU.
    """
    devices: dict[int, int] = {}
    for t in graph:
        if t.op == LEAF:
            d = t.ctx.device_index
        elif t.view_src is not None:
            root = t.view_src
            d = devices.get(id(root), root.ctx.device_index)
        else:
            d = CPU
            for s in t.src:
                sd = devices.get(id(s), s.root.ctx.device_index)
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
