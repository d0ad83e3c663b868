"""The case catalogue: every public Tensor method and Context constructor, several cases each.

Families live in ``cases_*.py``; :func:`all_cases` gathers them once and checks that ids are
unique. Ids read ``<op>-<dtype>-<variant or shape>`` and are stable across runs and seeds.
"""

from __future__ import annotations

from functools import lru_cache

from .case import TIERS, Case

__all__ = ["all_cases", "by_id"]


def all_cases(tier: str = "default") -> tuple[Case, ...]:
    """Return the catalogue's cases of ``tier`` (built once).

    ``default`` is the fast run every backend meets first; ``full`` the cases at real sizes
    only; ``all`` both (the default tier first, in the same order). The default tier's order
    never depends on the full tier.

    :raises ValueError: an unknown tier, or two cases share an id (a bug in the catalogue).
    """
    everything = _catalogue()
    if tier == "all":
        return tuple(c for t in TIERS for c in everything if c.tier == t)
    if tier not in TIERS:
        msg = f"unknown conformance tier {tier!r}; choose one of {', '.join((*TIERS, 'all'))}"
        raise ValueError(msg)
    return tuple(c for c in everything if c.tier == tier)


@lru_cache(maxsize=1)
def _catalogue() -> tuple[Case, ...]:
    """Build the whole catalogue, every tier, once."""
    from . import (
        cases_copy,
        cases_data,
        cases_elementwise,
        cases_errors,
        cases_fused,
        cases_gather,
        cases_layouts,
        cases_linalg,
        cases_nn,
        cases_reduce,
        cases_sizes,
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
    out += cases_fused.cases()
    out += cases_sizes.cases()
    out += cases_errors.cases()
    seen: set[str] = set()
    for c in out:
        if c.id in seen:
            msg = f"duplicate conformance case id {c.id!r}"
            raise ValueError(msg)
        seen.add(c.id)
    return tuple(out)


def by_id(case_id: str) -> Case:
    """Return the case called ``case_id`` (of any tier).

    :raises KeyError: if there is none.
    """
    for c in all_cases("all"):
        if c.id == case_id:
            return c
    raise KeyError(case_id)
