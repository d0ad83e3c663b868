"""Running cases on backends: one case on one backend (:func:`run_case`) and the whole matrix
(:func:`run`), with the known-failure rules and the cross-backend agreement check.

A cell's status is ``pass`` (ran and met its tolerance), ``fail`` (wrong values, shape or dtype,
or an exception other than :class:`~mlplug.errors.NotSupportedError`), ``unsupported``
(``NotSupportedError`` while creating inputs, building or computing: the backend declares it
cannot run the op), ``xfail`` (failed, and the backend declares it a known failure) or ``xpass``
(declared a known failure but passed: strict, counts as a failure so that a fix shows).
An error case (``Case.expect_error``) passes when building or computing raises that error. A
backend whose plugin pins its unsupported set (``unsupported.txt``) fails an unsupported case
that is not listed, and xpasses a listed case that passes.

Cross-backend agreement: when two backends both produced a result for a case, their results are
compared with each other at the case's tolerance widened by the triangle inequality (atol, rtol
and ulp doubled, NMSE times four). Two backends that each meet the tolerance against the
reference always agree within that bound, so a pair outside it is listed as a disagreement; it
is a failure of the pair only when both passed against the reference (the comparison itself is
then unsound, e.g. NaN where the other has a number), and otherwise a hint: two backends that
fail the reference identically point at the reference rather than at the backends.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from typing import TYPE_CHECKING, Literal

import numpy as np

from .._tensorbase import LEAF
from ..dtypes import TRAITS, DType
from ..errors import NotSupportedError
from .case import Case, Inputs
from .data import case_rng, dequant, draw, make_input, operand, rev
from .metrics import Comparison, bf16_float, compare, max_abs_err, nmse
from .report import CaseResult, ConformanceReport, Disagreement, Status
from .xfails import UNSUPPORTED_FILE, known_failures, pinned_unsupported

if TYPE_CHECKING:
    from ..backend import Backend
    from ..tensor import Tensor

__all__ = [
    "Outcome",
    "Prepared",
    "ReadError",
    "ReferenceFailure",
    "as_list",
    "prepare",
    "run",
    "run_case",
    "select",
]

_READ_DTYPES: dict[DType, str] = {
    DType.F32: "<f4",
    DType.F16: "<f2",
    DType.BF16: "<u2",
    DType.I32: "<i4",
    DType.I64: "<i8",
    DType.I16: "<i2",
    DType.I8: "i1",
    DType.F64: "<f8",
}
_BY_NUMPY = {
    np.dtype(np.float32): DType.F32,
    np.dtype(np.float16): DType.F16,
    np.dtype(np.int32): DType.I32,
    np.dtype(np.uint16): DType.BF16,
    np.dtype(np.uint8): DType.I8,
}


class ReferenceFailure(Exception):
    """A case's reference could not be computed or contradicts the case's worked example."""


class ReadError(RuntimeError):
    """A computed result could not be read back (a backend bug, reported as a failure)."""


@dataclass(frozen=True)
class Prepared:
    """A case's data for one seed: raw inputs, what the reference sees, expected outputs."""

    raw: tuple[np.ndarray, ...]
    operands: tuple[np.ndarray, ...]
    expected: tuple[np.ndarray, ...]
    bounds: tuple[np.ndarray | None, ...]


@dataclass
class Outcome:
    """The result of one case on one backend."""

    status: Status
    max_abs_err: float | None = None
    nmse: float | None = None
    error: str | None = None
    outputs: list[np.ndarray] = field(default_factory=list)
    dtypes: list[DType] = field(default_factory=list)
    max_ulp: float | None = None
    limit_used: float | None = None


def as_list(built: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Return a build's result as a list of tensors."""
    from ..tensor import Tensor

    return [built] if isinstance(built, Tensor) else list(built)


def select(cases: Sequence[Case], pattern: str | None) -> list[Case]:
    """Return the cases whose op or id matches ``pattern`` (all for None).

    A pattern with glob characters (``*?[``) is matched against the op name and the case id; a
    plain word selects an op by name, a case id, or the ids starting with ``word-``.
    """
    if not pattern:
        return list(cases)
    if any(ch in pattern for ch in "*?["):
        return [
            c
            for c in cases
            if fnmatch.fnmatchcase(c.op, pattern) or fnmatch.fnmatchcase(c.id, pattern)
        ]
    return [c for c in cases if pattern in (c.op, c.id) or c.id.startswith(pattern + "-")]


@lru_cache(maxsize=4096)
def prepare(case: Case, seed: int = 0) -> Prepared:
    """Draw a case's inputs for ``seed`` and compute its reference (cached).

    :raises ReferenceFailure: if the reference fails or disagrees with the case's gold values.
    """
    rng = case_rng(seed, case.id)
    raw = tuple(draw(rng, a) for a in case.args)
    ops = tuple(r if case.raw_ref else operand(a, r) for a, r in zip(case.args, raw, strict=True))
    if case.expect_error is not None:  # an error case has no reference
        return Prepared(raw, ops, (), ())
    try:
        exp = case.reference(*ops)
        expected = tuple(np.asarray(e) for e in (exp if isinstance(exp, (list, tuple)) else [exp]))
        bounds: tuple[np.ndarray | None, ...] = (None,) * len(expected)
        if case.bound is not None:
            b = case.bound(*ops)
            bl = b if isinstance(b, (list, tuple)) else [b]
            bounds = tuple(
                np.broadcast_to(np.asarray(x, np.float64), e.shape)
                for x, e in zip(bl, expected, strict=True)
            )
    except Exception as exc:  # a bug in the suite, reported on every backend
        msg = f"reference of {case.id} failed: {type(exc).__name__}: {exc}"
        raise ReferenceFailure(msg) from exc
    if case.gold is not None:
        if len(case.gold) != len(expected):
            msg = f"{case.id}: {len(case.gold)} gold outputs for {len(expected)} results"
            raise ReferenceFailure(msg)
        for i, (e, g) in enumerate(zip(expected, case.gold, strict=True)):
            ok = e.size == len(g) and np.allclose(
                np.asarray(e, np.float64).reshape(-1),
                g,
                rtol=0,
                atol=case.gold_atol,
                equal_nan=True,
            )
            if not ok:
                msg = (
                    f"reference of {case.id} output {i} is {e.reshape(-1).tolist()}, "
                    f"but the worked example gives {list(g)}"
                )
                raise ReferenceFailure(msg)
    return Prepared(raw, ops, expected, bounds)


def _read(t: Tensor, case: Case) -> tuple[np.ndarray, DType]:
    if case.read is not None:
        got = case.read(t)
        if got is None:
            msg = f"reading {t!r} returned None after compute"
            raise ReadError(msg)
        arr = np.asarray(got)
        return arr.reshape(-1), _BY_NUMPY.get(arr.dtype, DType.F32)
    raw = t.bytes()
    if raw is None:
        msg = f"{t!r}: bytes() is None after compute"
        raise ReadError(msg)
    if t.dtype.is_quantized:
        return np.frombuffer(raw, np.uint8).copy(), t.dtype
    np_dtype = _READ_DTYPES.get(t.dtype)
    if np_dtype is None:
        msg = f"no reader for {t.dtype.name} results"
        raise ReadError(msg)
    return np.frombuffer(raw, np_dtype).copy(), t.dtype


def _expected_ne(e: np.ndarray, case: Case, t: Tensor) -> tuple[int, ...]:
    shape = e.shape
    if case.raw_ref and t.dtype.is_quantized:  # raw rows: last axis is bytes
        tr = TRAITS[t.dtype]
        shape = (*shape[:-1], shape[-1] // tr.type_size * tr.block_size)
    while len(shape) > 4 and shape[0] == 1:
        shape = shape[1:]
    return (*rev(shape), 1, 1, 1, 1)[:4]


def _check_output(
    case: Case, t: Tensor, got: np.ndarray, dtype: DType, exp: np.ndarray, bound: np.ndarray | None
) -> Comparison:
    if dtype.is_quantized:  # raw blocks: bit for bit, metrics on the dequantised values
        ref_bytes = np.asarray(exp, np.uint8).reshape(-1)
        if got.size != ref_bytes.size:
            return Comparison(
                False, float("inf"), float("inf"), f"{got.size} bytes, expected {ref_bytes.size}"
            )
        tr = TRAITS[dtype]
        gv = dequant(got.reshape(-1, tr.type_size), dtype)
        rv = dequant(ref_bytes.reshape(-1, tr.type_size), dtype)
        same = bool(np.array_equal(got, ref_bytes))
        detail = "" if same else f"{int(np.sum(got != ref_bytes))} bytes differ"
        return Comparison(same, max_abs_err(gv, rv), nmse(gv, rv), detail)
    return compare(got, exp, case.tol, dtype, bound)


def run_case(
    backend: Backend,
    case: Case,
    seed: int = 0,
    known: dict[str, str] | None = None,
    pinned: dict[str, str] | None = None,
) -> Outcome:
    """Run ``case`` on ``backend`` in a fresh context and classify the result.

    :param known: declared known failures (case id -> reason); see :func:`known_failures`.
    :param pinned: the backend's pinned unsupported set (case id -> reason, see
        :func:`~mlplug.conformance.xfails.pinned_unsupported`); None: not pinned. With a pin,
        an unlisted unsupported case fails (the backend's support shrank) and a listed case
        that passes is an ``xpass`` (the list must be updated).
    """
    with np.errstate(all="ignore"):  # special-value cases make inf and NaN on purpose
        outcome = _evaluate_with_params(backend, case, seed)
    reason = (known or {}).get(case.id)
    if reason is not None:
        if outcome.status == "pass":
            outcome.status = "xpass"
            outcome.error = f"declared a known failure ({reason}) but passed"
        elif outcome.status == "fail":
            outcome.status = "xfail"
            outcome.error = f"known failure: {reason}; {outcome.error}"
    if pinned is not None:
        pin = pinned.get(case.id)
        if pin is None and outcome.status == "unsupported":
            outcome.status = "fail"
            outcome.error = (
                f"unsupported, but not in {backend.name}'s pinned {UNSUPPORTED_FILE} "
                f"(its support shrank): {outcome.error}"
            )
        elif pin is not None and outcome.status == "pass":
            outcome.status = "xpass"
            outcome.error = (
                f"pinned unsupported in {UNSUPPORTED_FILE} ({pin}) but runs and passes: "
                "remove it from the list"
            )
    return outcome


def recompute_case(backend: Backend, case: Case, seed: int = 0) -> str | None:
    """Compute ``case``'s graph twice in one context, its inputs uploaded again in between;
    return how the second results' bytes differ from the first's, or None if they are equal
    (or the case expects an error, or the backend declares it unsupported).

    A graph computed again is what a decode step does (the model layer reuses its graphs), and
    backends may run it differently the second time: planned steps whose preparers bound their
    views once (:class:`~mlplug.ArrayContext`), a kept native graph and allocation. The op
    cases check the first compute against the reference; this checks the second against it.
    """
    if case.expect_error is not None:
        return None
    prep = prepare(case, seed)
    with np.errstate(all="ignore"), backend.new_context() as ctx:
        tensors = [
            make_input(ctx, a, r) if a.tensor else None
            for a, r in zip(case.args, prep.raw, strict=True)
        ]
        # the inputs as uploaded: an op that writes into one (set_rows, an in-place op) gets
        # the same input again for the second compute
        roots = {id(t.root): t.root for t in tensors if t is not None}.values()
        leaves = [t for t in roots if t.op == LEAF and t.nelements]
        if leaves:
            ctx.compute(*leaves)  # a graph of leaves alone: nothing runs, they become readable
        uploaded = [t.bytes() or b"" for t in leaves]
        try:
            outs = as_list(case.build(ctx, Inputs(tensors, prep.raw)))
        except NotSupportedError:  # declared unsupported: the op cases report it
            return None
        readable = [t if t.nelements == 0 or t.is_contiguous() else t.contiguous(ctx) for t in outs]
        ctx.compute(*readable)
        first = [t.bytes() for t in readable]
        for t, data in zip(leaves, uploaded, strict=True):
            t.from_bytes(data)
        ctx.compute(*readable)
        second = [t.bytes() for t in readable]
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        if a != b:
            x = np.frombuffer(a or b"", np.uint8)
            y = np.frombuffer(b or b"", np.uint8)
            if x.size != y.size:
                return f"output {i}: {x.size} bytes, then {y.size}"
            return f"output {i}: {int((x != y).sum())} of {x.size} bytes differ"
    return None


def _evaluate_with_params(backend: Backend, case: Case, seed: int) -> Outcome:
    """Run ``case`` on ``backend``, or on a fresh instance of it with the case's parameters."""
    if not case.backend_params:
        return _evaluate(backend, case, seed)
    from ..registry import new_backend

    fields = dict(case.backend_params)
    if all(getattr(backend.params, k, None) == v for k, v in fields.items()):
        return _evaluate(backend, case, seed)
    try:
        params = backend.params.model_copy(update=fields)
        be = new_backend(None, params, backend=backend.name)
    except Exception as exc:
        msg = f"backend {backend.name!r} could not be opened with {fields!r}: {exc}"
        return Outcome("fail", error=msg)
    try:
        return _evaluate(be, case, seed)
    finally:
        be.close()


def _evaluate(backend: Backend, case: Case, seed: int) -> Outcome:
    try:
        prep = prepare(case, seed)
    except ReferenceFailure as exc:
        return Outcome("fail", error=str(exc))
    if case.expect_error is not None:
        return _evaluate_error(backend, case, case.expect_error, prep)
    try:
        with backend.new_context() as ctx:
            tensors = [
                make_input(ctx, a, r) if a.tensor else None
                for a, r in zip(case.args, prep.raw, strict=True)
            ]
            outs = as_list(case.build(ctx, Inputs(tensors, prep.raw)))
            if len(outs) != len(prep.expected):
                return Outcome(
                    "fail",
                    error=f"build returned {len(outs)} outputs, the reference {len(prep.expected)}",
                )
            if case.check is not None:
                problem = case.check(outs)
                if problem:
                    return Outcome("fail", error=f"metadata: {problem}")
            for t, e in zip(outs, prep.expected, strict=True):
                if case.read is not None:  # custom readers check shapes in ``check``
                    continue
                want = _expected_ne(e, case, t)
                if t.ne != want:
                    return Outcome(
                        "fail", error=f"result shape {list(t.ne)}, expected {list(want)}"
                    )
                if case.out_dtype is not None and t.dtype != case.out_dtype:
                    return Outcome(
                        "fail", error=f"result dtype {t.dtype.name}, expected {case.out_dtype.name}"
                    )
            readable = [
                t if t.nelements == 0 or t.is_contiguous() else t.contiguous(ctx) for t in outs
            ]
            ctx.compute(*readable)
            results = [_read(t, case) if t.nelements else (np.zeros(0), t.dtype) for t in readable]
    except NotSupportedError as exc:
        return Outcome("unsupported", error=str(exc))
    except Exception as exc:
        return Outcome("fail", error=f"{type(exc).__name__}: {exc}")
    worst_abs, worst_nmse, problems = 0.0, 0.0, []
    worst_ulp: float | None = None
    worst_used: float | None = None
    for i, ((got, dt), e, b) in enumerate(zip(results, prep.expected, prep.bounds, strict=True)):
        cmp = _check_output(case, outs[i], got, dt, e, b)
        worst_abs = max(worst_abs, cmp.max_abs_err)
        worst_nmse = max(worst_nmse, cmp.nmse)
        if cmp.max_ulp is not None:
            worst_ulp = max(worst_ulp or 0.0, cmp.max_ulp)
        if cmp.limit_used is not None:
            worst_used = max(worst_used or 0.0, cmp.limit_used)
        if not cmp.passed:
            problems.append(f"output {i}: {cmp.detail}" if len(results) > 1 else cmp.detail)
    status: Status = "fail" if problems else "pass"
    error = "; ".join(problems) + f" (tolerance {case.tol.describe()})" if problems else None
    return Outcome(
        status,
        worst_abs,
        worst_nmse,
        error,
        [g for g, _ in results],
        [d for _, d in results],
        worst_ulp,
        worst_used,
    )


def _tolerance_text(case: Case) -> str:
    """The case's tolerance as the report shows it (``+bound``: a per-element bound too)."""
    text = case.tol.describe()
    return text + " +bound" if case.bound is not None and text != "bound" else text


def _evaluate_error(
    backend: Backend, case: Case, expected: type[Exception], prep: Prepared
) -> Outcome:
    """Run an error case: building or computing must raise ``expected``."""
    want = expected.__name__
    try:
        with backend.new_context() as ctx:
            tensors = [
                make_input(ctx, a, r) if a.tensor else None
                for a, r in zip(case.args, prep.raw, strict=True)
            ]
            outs = as_list(case.build(ctx, Inputs(tensors, prep.raw)))
            readable = [
                t if t.nelements == 0 or t.is_contiguous() else t.contiguous(ctx) for t in outs
            ]
            ctx.compute(*readable)
    except expected:
        return Outcome("pass")
    except NotSupportedError as exc:
        return Outcome("unsupported", error=str(exc))
    except Exception as exc:
        return Outcome("fail", error=f"expected {want}, got {type(exc).__name__}: {exc}")
    return Outcome("fail", error=f"expected {want}, but nothing was raised")


def _agreement(case: Case, seed: int, a: Outcome, b: Outcome) -> Comparison:
    tol = case.tol.scaled(2.0)
    worst_abs, worst_nmse, detail, ok = 0.0, 0.0, "", True
    for ga, gb, da, db, bound in zip(
        a.outputs, b.outputs, a.dtypes, b.dtypes, prepare(case, seed).bounds, strict=True
    ):
        if da != db or ga.size != gb.size:
            return Comparison(False, float("inf"), float("inf"), "different dtypes or sizes")
        if da.is_quantized:
            cmp = Comparison(bool(np.array_equal(ga, gb)), 0.0, 0.0, "bytes differ")
        else:
            ref = (bf16_float(gb) if da == DType.BF16 else gb).astype(np.float64)
            cmp = compare(ga, ref, tol, da, None if bound is None else 2 * bound)
        worst_abs = max(worst_abs, cmp.max_abs_err)
        worst_nmse = max(worst_nmse, cmp.nmse)
        if not cmp.passed:
            ok, detail = False, cmp.detail
    return Comparison(ok, worst_abs, worst_nmse, detail)


def run(
    backends: Sequence[str] | None = None,
    op_pattern: str | None = None,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    strict: bool = False,
    cases: Sequence[Case] | None = None,
    keep: Callable[[str, Case, Outcome], None] | None = None,
    tier: str = "default",
) -> ConformanceReport:
    """Run the catalogue on ``backends`` (None: every installed one) and return the report.

    Each backend is created once (``new_backend(None, backend=name)``) and every case runs in a
    fresh context of it, closed afterwards. ``op_pattern`` selects cases (see :func:`select`)
    from ``cases`` (default: the catalogue's cases of ``tier``: ``default``, ``full`` or
    ``all``, see :func:`~.cases.all_cases`). ``progress`` receives one line per case and
    backend; ``keep(backend, case, outcome)`` sees every outcome with its outputs (to dump
    them). With ``strict`` any unsupported case makes the report fail. A backend's pinned
    unsupported set and its declared :meth:`~mlplug.backend.Backend.supported_ops` are applied
    (see :func:`run_case` and :class:`~mlplug.conformance.report.BackendSummary`).

    :raises ValueError: an unknown tier.
    """
    from ..registry import manager, new_backend
    from .cases import all_cases

    names = list(backends) if backends else [b.name for b in manager().backends()]
    selected = select(all_cases(tier) if cases is None else cases, op_pattern)
    results: list[CaseResult] = []
    outputs: dict[tuple[str, str], Outcome] = {}
    timings: dict[str, float] = {}
    declared: dict[str, frozenset[tuple[str, str]] | None] = {}
    pinned_by: dict[str, bool] = {}
    for name in names:
        start = time.perf_counter()
        try:
            be = new_backend(None, backend=name)
        except Exception as exc:
            err = f"backend could not be created: {type(exc).__name__}: {exc}"
            results += [
                CaseResult(
                    op=c.op,
                    case=c.id,
                    backend=name,
                    status="fail",
                    max_abs_err=None,
                    nmse=None,
                    error=err,
                    dtype=c.dtype,
                )
                for c in selected
            ]
            continue
        try:
            known = known_failures(be)
            pinned = pinned_unsupported(be)
            pinned_by[name] = pinned is not None
            declared[name] = _declared_support(be)
            for case in selected:
                out = run_case(be, case, seed, known, pinned)
                if keep is not None:
                    keep(name, case, out)
                outputs[(case.id, name)] = out
                results.append(
                    CaseResult(
                        op=case.op,
                        case=case.id,
                        backend=name,
                        status=out.status,
                        max_abs_err=out.max_abs_err,
                        nmse=out.nmse,
                        error=out.error,
                        dtype=case.dtype,
                        tolerance=_tolerance_text(case),
                        max_ulp=out.max_ulp,
                        limit_used=out.limit_used,
                    )
                )
                if progress is not None:
                    progress(f"{name} {case.id} {out.status}")
        finally:
            be.close()
        timings[name] = time.perf_counter() - start
    disagreements: list[Disagreement] = []
    for case in selected:
        for a, b in combinations(names, 2):
            oa, ob = outputs.get((case.id, a)), outputs.get((case.id, b))
            if oa is None or ob is None or not oa.outputs or not ob.outputs:
                continue
            cmp = _agreement(case, seed, oa, ob)
            failed = {"fail", "xfail"}
            if cmp.passed and not (oa.status in failed and ob.status in failed):
                continue
            status: Literal["disagree", "fail", "suspect-reference"]
            if cmp.passed:
                status, note = "suspect-reference", "both fail the reference but agree"
            elif oa.status == "pass" and ob.status == "pass":
                status, note = "fail", f"both pass the reference yet disagree: {cmp.detail}"
            else:
                status, note = "disagree", cmp.detail
            disagreements.append(
                Disagreement(
                    op=case.op,
                    case=case.id,
                    backends=(a, b),
                    status=status,
                    max_abs_err=cmp.max_abs_err,
                    nmse=cmp.nmse,
                    note=note,
                )
            )
    return ConformanceReport.build(
        names,
        results,
        disagreements,
        seed=seed,
        seconds=timings,
        strict=strict,
        declared=declared,
        pinned=pinned_by,
    )


def _declared_support(backend: Backend) -> frozenset[tuple[str, str]] | None:
    """Return the (op, dtype) pairs ``backend`` declares, or None when it declares none."""
    pairs = backend.supported_ops()
    return None if pairs is None else frozenset((str(op), str(dt)) for op, dt in pairs)
