"""Completeness checks: every public op has cases, every primitive is exercised, a backend's
kernel table names only primitives, and every node carries its primitive's parameter record.

Public ops are ``mlplug.ops.TENSOR_METHODS``, ``Context.<name>`` for
``mlplug.ops.CONTEXT_CONSTRUCTORS``, and, so that a new method cannot slip through, every public
method of :class:`mlplug.Tensor` or :class:`mlplug.Context` whose return annotation is a Tensor
(or a list of them).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from .._tensorbase import LEAF
from ..ops import CONTEXT_CONSTRUCTORS, PRIMITIVES, TENSOR_METHODS
from .case import Case, Inputs
from .data import case_rng, draw, make_tensor
from .runner import as_list

if TYPE_CHECKING:
    from ..backend import Backend
    from ..tensor import Tensor

__all__ = [
    "graph_nodes",
    "graph_ops",
    "kernels_outside_primitives",
    "ops_without_cases",
    "params_mismatches",
    "primitives_without_cases",
    "public_ops",
    "unknown_case_ops",
]


def _returns_tensor(fn: object) -> bool:
    ann = getattr(fn, "__annotations__", {}).get("return")
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    return text in ("Tensor", "list[Tensor]", "Sequence[Tensor]")


def public_ops() -> list[str]:
    """Return every public op: Tensor methods by name, constructors as ``Context.<name>``."""
    from ..context import Context
    from ..tensor import Tensor

    ops = set(TENSOR_METHODS) | {f"Context.{n}" for n in CONTEXT_CONSTRUCTORS}
    for name, fn in inspect.getmembers(Tensor, callable):
        if not name.startswith("_") and _returns_tensor(fn):
            ops.add(name)
    for name, fn in inspect.getmembers(Context, callable):
        if not name.startswith("_") and _returns_tensor(fn):
            ops.add(f"Context.{name}")
    return sorted(ops)


def ops_without_cases(cases: Iterable[Case] | None = None) -> list[str]:
    """Return the public ops that no case exercises (must be empty)."""
    from .cases import all_cases

    covered = {c.op for c in (cases if cases is not None else all_cases())}
    return [op for op in public_ops() if op not in covered]


def unknown_case_ops(cases: Iterable[Case] | None = None) -> list[str]:
    """Return case ids whose ``op`` is not a public op (a typo in the catalogue)."""
    from .cases import all_cases

    known = set(public_ops())
    return sorted(c.id for c in (cases if cases is not None else all_cases()) if c.op not in known)


def graph_nodes(outputs: Sequence[Tensor]) -> list[Tensor]:
    """Return every op node (not leaves) the ``outputs`` depend on, each once."""
    seen: set[int] = set()
    nodes: list[Tensor] = []
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t.op != LEAF:
            nodes.append(t)
        stack.extend(t.src)
    return nodes


def graph_ops(outputs: Sequence[Tensor]) -> set[str]:
    """Return the primitive ops of every node the ``outputs`` depend on."""
    return {t.op for t in graph_nodes(outputs)}


def _case_graphs(
    backend: Backend, cases: Iterable[Case] | None
) -> Iterator[tuple[Case, list[Tensor]]]:
    """Build every case on ``backend``; yield each with its graph's nodes (context still open).

    Cases the backend cannot build (``NotSupportedError``) and error cases are skipped.
    """
    from ..errors import NotSupportedError
    from .cases import all_cases

    for case in cases if cases is not None else all_cases():
        if getattr(case, "expect_error", None) is not None:  # error cases build no graph
            continue
        rng = case_rng(0, case.id)
        raw = [draw(rng, a) for a in case.args]
        with backend.new_context() as ctx:
            try:
                tensors = [
                    make_tensor(ctx.input(), a, r) if a.tensor else None
                    for a, r in zip(case.args, raw, strict=True)
                ]
                outs = as_list(case.build(ctx, Inputs(tensors, raw)))
            except NotSupportedError:
                continue
            yield case, graph_nodes(outs)


def primitives_without_cases(backend: Backend, cases: Iterable[Case] | None = None) -> list[str]:
    """Return the primitives no case's graph uses, building every case on ``backend``.

    Cases the backend cannot build (``NotSupportedError``) are skipped, so use a backend that
    supports every op (``cpu_numpy``) for a meaningful answer.
    """
    used: set[str] = set()
    for _case, nodes in _case_graphs(backend, cases):
        used |= {t.op for t in nodes}
    return sorted(set(PRIMITIVES) - used)


def params_mismatches(backend: Backend, cases: Iterable[Case] | None = None) -> list[str]:
    """Return, for every node of every case's graph whose op is not a primitive or whose
    ``params`` is not its primitive's record type (the op table's ``OpSpec.params``), one line
    naming the case, the op and the record found (must be empty)."""
    bad: set[str] = set()
    for case, nodes in _case_graphs(backend, cases):
        for t in nodes:
            spec = PRIMITIVES.get(t.op)
            if spec is None:
                bad.add(f"{case.id}: {t.op!r} is not a primitive")
            elif type(t.params) is not spec.params:
                found = type(t.params).__name__
                bad.add(f"{case.id}: {t.op} carries {found}, not {spec.params.__name__}")
    return sorted(bad)


def kernels_outside_primitives(backend: Backend) -> list[str]:
    """Return the names in ``backend.kernels`` that are not primitives (must be empty)."""
    return sorted(set(backend.kernels) - set(PRIMITIVES))
