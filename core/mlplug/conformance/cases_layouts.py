"""Layout variants: catalogue cases re-run with every input presented as a non-contiguous view.

A generic transform, not hand-written cases: for each op, the first case whose inputs are all
plain (non-quantised) tensors is repeated once per layout of :data:`~.data.LAYOUTS` (a permuted
view, rows with gaps on both sides, every other dim-2 plane), and the first such case of each
other dtype once, with the same reference and tolerance; ids read ``<case id>-<layout>``. The
values are drawn for the new id, so each variant is an independent case. Ops whose meaning
depends on the storage of an input (byte-offset views, reshapes, writes into a destination)
are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .case import Case
from .data import LAYOUTS

__all__ = ["cases", "layout_variants", "single_input_variants"]

#: Ops whose inputs' storage is part of their meaning (views by byte offset, reshapes, ops
#: writing into an input) or that create tensors rather than reading them.
_STORAGE_OPS = frozenset(
    {
        "view",
        "reshape",
        "set_rows",
        "set_inplace",
        "copy",
    }
)


def _eligible(c: Case) -> bool:
    return (
        not c.op.startswith("Context.")
        and c.op not in _STORAGE_OPS
        and c.check is None
        and c.read is None
        and not c.raw_ref
        and bool(c.args)
        and all(a.tensor and not a.dtype.is_quantized and not a.layout for a in c.args)
    )


def layout_variants(c: Case) -> list[Case]:
    """Return ``c`` once per layout, every input presented through that layout."""
    return [
        replace(c, id=f"{c.id}-{lay}", args=tuple(replace(a, layout=lay) for a in c.args))
        for lay in LAYOUTS
    ]


def single_input_variants(c: Case) -> list[Case]:
    """Return ``c`` once per input (when it has two or more): only that input is a view.

    Input ``i`` takes layout ``LAYOUTS[i % 3]``, so mixed operands (one contiguous, one not)
    are met as well as all-view ones; ids read ``<case id>-<layout>-in<i>``.
    """
    if len(c.args) < 2:
        return []
    out = []
    for i in range(len(c.args)):
        lay = LAYOUTS[i % len(LAYOUTS)]
        args = tuple(replace(a, layout=lay) if j == i else a for j, a in enumerate(c.args))
        out.append(replace(c, id=f"{c.id}-{lay}-in{i}", args=args))
    return out


def cases(base: Sequence[Case]) -> list[Case]:
    """Return the layout variants of ``base``.

    The first eligible case of each op gets every layout (on all inputs at once, then on each
    input alone); the first eligible case of each
    further (op, dtype) pair (f16, bf16, i32 storage, mixed pairs) gets one layout, taken in
    turn, so every storage type meets every kind of view somewhere without tripling the suite.
    """
    out: list[Case] = []
    seen: set[tuple[str, str]] = set()
    ops: set[str] = set()
    turn = 0
    for c in base:
        if (c.op, c.dtype) in seen or not _eligible(c):
            continue
        seen.add((c.op, c.dtype))
        variants = layout_variants(c)
        if c.op not in ops:
            ops.add(c.op)
            out += variants + single_input_variants(c)
        else:
            out.append(variants[turn % len(variants)])
            turn += 1
    return out
