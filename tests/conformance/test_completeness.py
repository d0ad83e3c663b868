"""The catalogue covers every public op and every primitive; kernel tables name only primitives."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mlplug.conformance import all_cases
from mlplug.conformance.completeness import (
    kernels_outside_primitives,
    ops_without_cases,
    primitives_without_cases,
    public_ops,
    unknown_case_ops,
)
from mlplug.conformance.xfails import stale_entries
from mlplug.ops import CONTEXT_CONSTRUCTORS, PRIMITIVES, TENSOR_METHODS

if TYPE_CHECKING:
    from mlplug import Backend


def test_every_public_op_has_a_case() -> None:
    """Every Tensor method, Context constructor and Tensor-returning method has a case."""
    assert ops_without_cases() == []
    assert set(TENSOR_METHODS) <= set(public_ops())
    assert {f"Context.{n}" for n in CONTEXT_CONSTRUCTORS} <= set(public_ops())


def test_completeness_check_can_fail() -> None:
    """Dropping an op's cases makes the check report that op."""
    assert ops_without_cases([c for c in all_cases() if c.op != "rope"]) == ["rope"]


def test_case_ops_are_public_and_ids_read_well() -> None:
    """Cases name public ops; ids read ``<op>-<dtype>-...``, unique and without spaces."""
    assert unknown_case_ops() == []
    ids = [c.id for c in all_cases()]
    assert len(ids) == len(set(ids))
    bad = [
        c.id
        for c in all_cases()
        if not re.fullmatch(re.escape(c.op) + r"-[a-z0-9_+>]+(-[A-Za-z0-9_.+\-]+)?", c.id)
    ]
    assert bad == []


def test_every_op_has_several_cases() -> None:
    """Each public op has at least two cases (shapes, layouts or dtypes)."""
    counts: dict[str, int] = {}
    for c in all_cases():
        counts[c.op] = counts.get(c.op, 0) + 1
    assert {op: n for op, n in counts.items() if n < 2} == {}


def test_every_primitive_is_exercised(backend: Backend) -> None:
    """Each primitive the backend implements is reached by some case it can build."""
    implemented = set(backend.kernels) & set(PRIMITIVES)
    assert [p for p in primitives_without_cases(backend) if p in implemented] == []


def test_kernels_are_primitives(backend: Backend) -> None:
    """A backend's kernel table has no names outside ``mlplug.ops.PRIMITIVES``."""
    assert kernels_outside_primitives(backend) == []


def test_declared_known_failures_match_cases(backend: Backend) -> None:
    """Every xfails.txt / known_failures() entry of the backend names an existing case."""
    assert stale_entries(backend) == []
