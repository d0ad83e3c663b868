"""The case catalogue: every public Tensor method and Context constructor, several cases each.

Families live in ``cases_*.py``; :func:`all_cases` gathers them once and checks that ids are
unique. Ids read ``<op>-<dtype>-<variant or shape>`` and are stable across runs and seeds.
"""

from __future__ import annotations

from functools import lru_cache

from .case import Case

__all__ = ["all_cases", "by_id"]


@lru_cache(maxsize=1)
def all_cases() -> tuple[Case, ...]:
    """Return the whole catalogue (built once).

    :raises ValueError: if two cases share an id (a bug in the catalogue).
    """
    from . import (
        cases_copy,
        cases_data,
        cases_elementwise,
        cases_errors,
        cases_gather,
        cases_layouts,
        cases_linalg,
        cases_nn,
        cases_reduce,
        cases_values,
        cases_views,
    )

    out: list[Case] = []
    families = (
        cases_data,
        cases_elementwise,
        cases_linalg,
        cases_reduce,
        cases_views,
        cases_copy,
        cases_gather,
        cases_nn,
    )
    for family in families:
        out += family.cases()
    out += cases_layouts.cases(out)
    out += cases_values.cases()
    out += cases_errors.cases()
    seen: set[str] = set()
    for c in out:
        if c.id in seen:
            msg = f"duplicate conformance case id {c.id!r}"
            raise ValueError(msg)
        seen.add(c.id)
    return tuple(out)


def by_id(case_id: str) -> Case:
    """Return the case called ``case_id``.

    :raises KeyError: if there is none.
    """
    for c in all_cases():
        if c.id == case_id:
            return c
    raise KeyError(case_id)
