"""Layout variants: catalogue cases re-run with their inputs presented as non-contiguous views.

A generic transform, not hand-written cases. Every case of an op that reads its inputs by their
logical values is run again with its inputs in a layout of :data:`~.data.LAYOUTS` (a permuted
view, rows with NaN gaps on both sides, every other dim-2 plane, a view at an offset into one
buffer holding three tensors side by side, NaN where the others would be, as q, k and v are
taken from one projection); block-quantised inputs take the layouts that move whole rows
(:data:`~.data.QUANT_LAYOUTS`). The reference and tolerance are the case's own; ids read
``<case id>-<layout>`` (``-in<i>`` when only input i is a view). The values are drawn for the
new id, so each variant is an independent case.

The ops left out are derived from the op table: the primitives that write into an input
(:data:`~mlplug.ops.table.WRITE_OPS`) and ``view`` (its meaning is its byte offsets); cases that
check metadata, read outputs their own way or compare raw blocks are left out too. The write
ops get :func:`write_variants` instead (their destination in the layouts each allows, their
sources in any), and the layouts a destination may not take are :func:`error_cases`, where
every backend must raise the core's :class:`~mlplug.errors.ShapeError`.
:func:`projection_cases` take q, k and v as views of one projection tensor, as models do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..context import Context
from ..dtypes import DType
from ..errors import ShapeError
from ..ops.table import PRIMITIVES, WRITE_OPS
from ..tensor import Tensor
from . import reference as R
from .case import Arg, Case, Inputs, Tolerance
from .cases_sizes import FLASH
from .data import LAYOUTS, QUANT_LAYOUTS

__all__ = [
    "cases",
    "error_cases",
    "layout_variants",
    "projection_cases",
    "single_input_variants",
    "write_variants",
]

#: Ops whose inputs' storage is part of their meaning: writes into an input, views by byte
#: offset. Derived from the op table, so a new write op is left out without editing this.
_STORAGE_OPS = frozenset(WRITE_OPS | {"view"})
#: The layouts the first cases met (kept in this order so their ids stay as they were).
_FIRST_LAYOUTS = LAYOUTS[:3]


def _transformable(c: Case) -> bool:
    return (
        not c.op.startswith("Context.")
        and c.op not in _STORAGE_OPS
        and c.check is None
        and c.read is None
        and not c.raw_ref
        and c.expect_error is None
        and bool(c.args)
        and all(a.tensor and not a.layout for a in c.args)
    )


def _eligible(c: Case) -> bool:
    """Every input can take every layout (no block-quantised input)."""
    return _transformable(c) and not any(a.dtype.is_quantized for a in c.args)


def _fits(c: Case, layout: str) -> bool:
    return all(layout in QUANT_LAYOUTS or not a.dtype.is_quantized for a in c.args)


def _variant(c: Case, layout: str) -> Case:
    return replace(c, id=f"{c.id}-{layout}", args=tuple(replace(a, layout=layout) for a in c.args))


def layout_variants(c: Case) -> list[Case]:
    """Return ``c`` once per layout its inputs can take, every input in that layout."""
    return [_variant(c, lay) for lay in LAYOUTS if _fits(c, lay)]


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
    """Return the layout variants of ``base``, then the error cases of :func:`error_cases`.

    The first eligible case of each op gets every layout (on all inputs at once, then on each
    input alone); the first eligible case of each further (op, dtype) pair (f16, bf16, i32
    storage, mixed pairs) gets one of the first three layouts, taken in turn. Then every other
    case that can take a layout gets one, taken in turn per op (block-quantised inputs: the
    layouts that move whole rows), so every case meets a non-contiguous input somewhere: in
    the default tier for the first case of an (op, dtype) pair not met yet (quantised inputs),
    in the ``full`` tier for the rest, so that the default run stays fast.
    """
    out: list[Case] = []
    seen: set[tuple[str, str]] = set()
    done: set[str] = set()
    ops: set[str] = set()
    turn = 0
    for c in base:
        if (c.op, c.dtype) in seen or not _eligible(c):
            continue
        seen.add((c.op, c.dtype))
        done.add(c.id)
        if c.op not in ops:
            ops.add(c.op)
            out += layout_variants(c) + single_input_variants(c)
        else:
            out.append(_variant(c, _FIRST_LAYOUTS[turn % len(_FIRST_LAYOUTS)]))
            turn += 1
    turns: dict[str, int] = {}
    for c in base:
        if c.id in done or not _transformable(c):
            continue
        options = [lay for lay in LAYOUTS if _fits(c, lay)]
        if not options:
            continue
        k = turns.get(c.op, 0)
        turns[c.op] = k + 1
        # start each op's turn at fused, which the first pass gave only its first case
        variant = _variant(c, options[(k + len(options) - 1) % len(options)])
        if (c.op, c.dtype) in seen or c.tier != "default":
            variant = replace(variant, tier="full")  # the default run stays fast
        seen.add((c.op, c.dtype))
        out.append(variant)
    return out + _flash_variants(base) + write_variants(base) + projection_cases() + error_cases()


def _flash_variants(base: Sequence[Case]) -> list[Case]:
    """Every layout of the first f32 attention case with several key heads, flash attention on
    (a permuted key then has dim 0 strided, which the flash kernel cannot read in place)."""
    for c in base:
        if c.op == "scaled_dot_product_attention" and _eligible(c) and c.args[1].ne[1] >= 2:
            variants = layout_variants(c) + single_input_variants(c)
            return [replace(v, id=f"{v.id}-flash", backend_params=FLASH) for v in variants]
    return []


# -- ops that write into an input: their destination takes the layouts the op allows -------
#: Destination layouts each write op accepts (the others are error cases, below): set_rows
#: needs dim 0 packed, set_inplace a contiguous destination, copy (to a float type) any.
_DST_LAYOUTS: dict[str, tuple[str, ...]] = {
    "set_rows": ("gapped", "strided2", "fused"),
    "set_inplace": (),
    "copy": LAYOUTS,
}


def _operand_names(op: str) -> list[str]:
    """The op table's operand names of primitive ``op`` (``dst``, ``src``, ``idxs``)."""
    return [n.strip().split(" ")[0] for n in PRIMITIVES[op].operands.split(",")]


def write_variants(base: Sequence[Case]) -> list[Case]:
    """The first F32 case of each write op, with its destination in each layout the op allows
    (``-dst-<layout>``) and each other float input in a layout (``-src-<layout>``).

    The destination is found by name in the op table's operands, so the case must pass its
    inputs in that order (the catalogue's write cases do).
    """
    out: list[Case] = []
    done: set[str] = set()
    for c in base:
        if c.op not in WRITE_OPS or c.op in done or c.check or c.read or c.raw_ref:
            continue
        names = _operand_names(c.op)
        if len(c.args) != len(names) or c.gold is not None:
            continue
        if not all(
            a.tensor and (a.dtype == DType.F32 or n == "idxs") for a, n in zip(c.args, names)
        ):
            continue
        done.add(c.op)
        dst = names.index("dst")
        for lay in _DST_LAYOUTS[c.op]:
            args = tuple(replace(a, layout=lay) if i == dst else a for i, a in enumerate(c.args))
            out.append(replace(c, id=f"{c.id}-dst-{lay}", args=args))
        floats = [i for i, a in enumerate(c.args) if i != dst and a.dtype == DType.F32]
        for k, lay in enumerate(LAYOUTS if floats else ()):
            i = floats[k % len(floats)]
            args = tuple(replace(a, layout=lay) if j == i else a for j, a in enumerate(c.args))
            out.append(replace(c, id=f"{c.id}-src-{lay}", args=args))
    return out


# -- q, k and v as views into one projection, as models take them --------------------------
def _qkv_views(
    ctx: Context, qkv: Tensor, dk: int, h: int, hkv: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Split a projection ``[(h + 2 hkv) dk, L]``: q ``[dk, h, L]``, k and v ``[dk, hkv, L]``."""
    es, row, n = qkv.stride(0), qkv.stride(1), qkv.ne[1]
    q = qkv.view(ctx, 0, dk, dk * es, h, row, n)
    k = qkv.view(ctx, h * dk * es, dk, dk * es, hkv, row, n)
    v = qkv.view(ctx, (h + hkv) * dk * es, dk, dk * es, hkv, row, n)
    return q, k, v


def _split_qkv(
    a: np.ndarray, dk: int, h: int, hkv: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = a.shape[0]
    q = a[:, : h * dk].reshape(n, h, dk)
    k = a[:, h * dk : (h + hkv) * dk].reshape(n, hkv, dk)
    v = a[:, (h + hkv) * dk :].reshape(n, hkv, dk)
    return q, k, v


def projection_cases() -> list[Case]:
    """Attention and rope on q, k and v taken as ``view``s of one projection tensor."""
    dk, h, hkv, n = 8, 4, 2, 6
    scale = 1 / np.sqrt(dk)
    proj = Arg(((h + 2 * hkv) * dk, n))

    def attend(ctx: Context, x: Inputs) -> Tensor:
        q, k, v = _qkv_views(ctx, x[0], dk, h, hkv)
        return q.scaled_dot_product_attention(ctx, k, v, x[1], None, None, float(scale), False)

    def attend_ref(a: np.ndarray, m: np.ndarray) -> np.ndarray:
        q, k, v = _split_qkv(a, dk, h, hkv)
        return R.sdpa(q, k, v, float(scale), mask=m)

    def rope_q(ctx: Context, x: Inputs) -> Tensor:
        q, _, _ = _qkv_views(ctx, x[0], dk, h, hkv)
        return q.rope(ctx, x[1], dk, 10000.0, 1.0, rope_type=2)

    def rope_ref(a: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return R.rope(_split_qkv(a, dk, h, hkv)[0], pos, dk, 10000.0, 1.0, mode=2)

    shape = f"{dk}x{h}x{n}-kv{hkv}"
    attention = Case(
        f"scaled_dot_product_attention-f32-qkv-views-{shape}",
        "scaled_dot_product_attention",
        (proj, Arg((n, n), gen="mask")),
        attend,
        attend_ref,
        Tolerance(atol=1e-6, rtol=1e-5),
        out_dtype=DType.F32,
    )
    return [
        attention,
        replace(attention, id=f"{attention.id}-flash", backend_params=FLASH),
        Case(
            f"rope-f32-qkv-views-neox-{shape}",
            "rope",
            (proj, Arg((n,), DType.I32, gen="int", lo=0, hi=500)),
            rope_q,
            rope_ref,
            Tolerance(),
            out_dtype=DType.F32,
            bound=lambda a, _p: np.asarray(1e-4 * np.abs(a).max()),
        ),
    ]


# -- ops that require contiguous inputs: the core's typed error on every backend -------------
def _set_inplace_into(ctx: Context, x: Inputs) -> Tensor:
    dst, src = x[0], x[1]
    return dst.set_inplace(ctx, src, dst.stride(1), dst.stride(2), dst.stride(3), 0)


def _set_rows_into(ctx: Context, x: Inputs) -> Tensor:
    return x[0].set_rows(ctx, x[1], x[2])


def _copy_into_q8_0(ctx: Context, x: Inputs) -> Tensor:
    dst = ctx.zeros(DType.Q8_0, 32, 6).permute(ctx, 1, 0)  # [6, 32]: not contiguous
    return x[0].copy(ctx, dst)


def _no_reference(*_: np.ndarray) -> np.ndarray:
    msg = "an error case has no reference"
    raise AssertionError(msg)


def error_cases() -> list[Case]:
    """Cases where a non-contiguous input is refused: every backend raises ``ShapeError``.

    ``set_inplace`` needs a contiguous destination, ``set_rows`` destination rows with a packed
    dim 0, and ``copy`` into a quantised type a contiguous destination.
    """
    tol = Tolerance(ulp=0)
    ids = Arg((2,), DType.I32, gen="perm", hi=4)
    out = [
        Case(
            f"set_inplace-f32-err-dst-{lay}",
            "set_inplace",
            (Arg((6, 4, 2), layout=lay), Arg((6, 2))),
            _set_inplace_into,
            _no_reference,
            tol,
            expect_error=ShapeError,
        )
        for lay in LAYOUTS
    ]
    out += [
        Case(
            f"set_rows-f32-err-dst-{lay}",
            "set_rows",
            (Arg((6, 4), layout=lay), Arg((6, 2)), ids),
            _set_rows_into,
            _no_reference,
            tol,
            expect_error=ShapeError,
        )
        for lay in ("permuted",)
    ]
    out.append(
        Case(
            "copy-q8_0-err-dst-permuted",
            "copy",
            (Arg((6, 32)),),
            _copy_into_q8_0,
            _no_reference,
            tol,
            dtype="q8_0",
            expect_error=ShapeError,
        )
    )
    return out
