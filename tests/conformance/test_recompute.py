"""Every case's graph computed a second time gives the same bytes, on every backend
(:func:`mlplug.conformance.recompute_case`): planned steps, kept native graphs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.conformance import all_cases, recompute_case

if TYPE_CHECKING:
    from mlplug import Backend


def test_every_case_computed_again_gives_the_same_bytes(backend: Backend) -> None:
    differ = {c.id: d for c in all_cases("default") if (d := recompute_case(backend, c))}
    assert not differ, differ
