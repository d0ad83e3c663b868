"""The conformance report: per-cell results, per-backend summary, and its renderings.

``to_json()`` gives ``{"backends": [...], "results": [...], "summary": {...}, ...}`` (what ``mlplug
conformance --json`` writes, see README.md; non-finite errors are written as ``null``); ``table()``
is the terminal op x dtype x backend matrix with the worst error of each cell; ``to_markdown()`` the
op x backend matrix for a docs page, a badge-ready summary table and, per backend, what to implement
next;
``next_steps_lines()`` that to-do list for the terminal (see :mod:`.next_steps`).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from .next_steps import NextStep, by_family, next_steps

__all__ = [
    "BackendSummary",
    "CaseResult",
    "ConformanceReport",
    "Disagreement",
    "Status",
    "repro_command",
]

Status = Literal["pass", "fail", "unsupported", "xfail", "xpass"]

#: Cell marks of the terminal table, by aggregated status.
_MARK = {
    "pass": "ok",
    "fail": "FAIL",
    "xpass": "XPASS",
    "xfail": "FAIL(known)",
    "unsupported": "unsup",
    "partial": "part",
}


def repro_command(backend: str, case_id: str, seed: int = 0) -> str:
    """Return the command that reruns exactly one case on one backend with the same data."""
    return f"mlplug conformance --backend {backend} --case {case_id} --seed {seed}"


class CaseResult(BaseModel):
    """One case on one backend."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="null")

    op: str
    case: str
    backend: str
    status: Status
    max_abs_err: float | None
    nmse: float | None
    error: str | None = None
    dtype: str
    #: The case's tolerance (``Tolerance.describe()``), beside the measured errors.
    tolerance: str | None = None
    #: Largest distance in ulp of the result dtype from the rounded reference (float results).
    max_ulp: float | None = None
    #: Largest ``|got - ref| / (atol + rtol |ref| + bound)``: the share of the per-element
    #: budget used (above 1 fails; None where the tolerance has no per-element limit).
    limit_used: float | None = None


class Disagreement(BaseModel):
    """Two backends whose results for a case differ beyond the widened case tolerance."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="null")

    op: str
    case: str
    backends: tuple[str, str]
    status: Literal["disagree", "fail", "suspect-reference"]
    max_abs_err: float | None
    nmse: float | None
    note: str = ""


class BackendSummary(BaseModel):
    """Counts for one backend and the ops it lacks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    passed: int = 0
    failed: int = 0
    unsupported: int = 0
    xfail: int = 0
    xpass: int = 0
    total: int = 0
    #: Ops none of whose cases ran (every case unsupported).
    unsupported_ops: list[str] = Field(default_factory=list)
    #: Ops with some unsupported cases (a dtype or variant the backend lacks).
    partially_supported_ops: list[str] = Field(default_factory=list)
    #: Ops with at least one failed (or xpassed) case.
    failed_ops: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    #: Unsupported cases per op (ops with none are left out).
    unsupported_by_op: dict[str, int] = Field(default_factory=dict)
    #: Whether the backend's unsupported set is pinned (its plugin ships ``unsupported.txt``).
    pinned: bool = False
    #: Whether the backend declares its (op, dtype) pairs (``Backend.supported_ops``).
    declares_support: bool = False
    #: Declared ``"op dtype"`` pairs with a failed or unsupported case (a failure of the run).
    declared_but_failing: list[str] = Field(default_factory=list)
    #: ``"op dtype"`` pairs with a passing case that the backend does not declare (a warning).
    working_but_undeclared: list[str] = Field(default_factory=list)

    @property
    def ran(self) -> int:
        """Cases that ran (every status but unsupported)."""
        return self.total - self.unsupported


class ConformanceReport(BaseModel):
    """The outcome of a conformance run."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="null")

    backends: list[str]
    results: list[CaseResult]
    summary: dict[str, BackendSummary]
    disagreements: list[Disagreement] = Field(default_factory=list)
    seed: int = 0
    #: Whether unsupported cases fail the run (``mlplug conformance --strict``).
    strict: bool = False

    @classmethod
    def build(
        cls,
        backends: Sequence[str],
        results: Sequence[CaseResult],
        disagreements: Sequence[Disagreement] = (),
        *,
        seed: int = 0,
        seconds: dict[str, float] | None = None,
        strict: bool = False,
        declared: Mapping[str, frozenset[tuple[str, str]] | None] | None = None,
        pinned: Mapping[str, bool] | None = None,
    ) -> ConformanceReport:
        """Return a report with the summary computed from ``results``.

        :param declared: per backend, the (op, dtype) pairs it declares (None: no declaration).
        :param pinned: per backend, whether its unsupported set is pinned.
        """
        summary = {
            b: _summarise(
                [r for r in results if r.backend == b],
                (seconds or {}).get(b),
                (declared or {}).get(b),
                (pinned or {}).get(b, False),
            )
            for b in backends
        }
        return cls(
            backends=list(backends),
            results=list(results),
            summary=summary,
            disagreements=list(disagreements),
            seed=seed,
            strict=strict,
        )

    def failed(self) -> bool:
        """Whether the run failed: see :meth:`problems` (and any failed or xpassed case)."""
        return any(r.status in ("fail", "xpass") for r in self.results) or bool(self.problems())

    def problems(self) -> list[str]:
        """Return why the run fails beyond its failed cases, one line each.

        A backend that ran no case, declared (op, dtype) pairs that fail or are unsupported,
        unsupported cases under ``strict``, and two passing backends that disagree.
        """
        out = []
        for b in self.backends:
            s = self.summary[b]
            if s.ran == 0:
                what = "no case was selected" if s.total == 0 else "every case was unsupported"
                out.append(f"{b}: no case ran ({what})")
            if s.declared_but_failing:
                out.append(
                    f"{b}: declared supported but failing or unsupported: "
                    + ", ".join(s.declared_but_failing)
                )
            if self.strict and s.unsupported:
                out.append(f"{b}: {s.unsupported} unsupported cases (--strict)")
        bad = sum(1 for d in self.disagreements if d.status == "fail")
        if bad:
            out.append(f"cross-backend: {bad} disagreements between passing backends")
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """Return the report as JSON (``backends``, ``results``, ``summary``, ...).

        Two keys are added to the model's fields: ``failed`` (:meth:`failed`) and ``problems``
        (:meth:`problems`), so a consumer need not recompute the verdict.
        """
        data = json.loads(self.model_dump_json())
        data["failed"] = self.failed()
        data["problems"] = self.problems()
        return json.dumps(data, indent=indent)

    # -- renderings -----------------------------------------------------------------------------
    def _cells(self, key: str) -> dict[tuple[str, str], list[CaseResult]]:
        cells: dict[tuple[str, str], list[CaseResult]] = defaultdict(list)
        for r in self.results:
            row = r.op if key == "op" else f"{r.op} {r.dtype}"
            cells[(row, r.backend)].append(r)
        return cells

    def table(self) -> str:
        """Return the terminal matrix: one row per op and dtype, one column per backend.

        A cell reads ``ok 3e-07`` (every case passed; the worst max-abs error), ``FAIL 2/5``,
        ``FAIL(known) 1/5`` (declared known failures), ``XPASS 1/5``, ``unsup`` or ``part 3e-07``
        (some cases unsupported, the rest passed).
        """
        cells = self._cells("op dtype")
        rows = sorted({k[0] for k in cells})
        head = ["op dtype", *self.backends]
        body = []
        for row in rows:
            line = [row]
            for b in self.backends:
                line.append(_cell_text(cells.get((row, b), [])))
            body.append(line)
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head).rstrip(), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*line).rstrip() for line in body]
        lines.append("")
        lines += self.summary_lines()
        return "\n".join(lines)

    def summary_lines(self) -> list[str]:
        """Return one line per backend with its counts (and lacking ops)."""
        out = []
        for b in self.backends:
            s = self.summary[b]
            line = (
                f"{b}: {s.passed} passed, {s.failed} failed, {s.unsupported} unsupported, "
                f"{s.xfail} known failures"
                + (f", {s.xpass} xpassed" if s.xpass else "")
                + f" ({s.seconds:.1f}s)"
            )
            if s.unsupported_ops:
                line += f"; unsupported ops: {', '.join(s.unsupported_ops)}"
            out.append(line)
            if s.unsupported_by_op:
                counts = ", ".join(f"{op} {n}" for op, n in s.unsupported_by_op.items())
                pin = "pinned" if s.pinned else "not pinned"
                out.append(f"  unsupported cases by op ({pin}): {counts}")
            if s.working_but_undeclared:
                out.append(
                    "  passing but not declared in supported_ops(): "
                    + ", ".join(s.working_but_undeclared)
                )
            if s.declared_but_failing:
                out.append(
                    "  declared in supported_ops() but failing or unsupported: "
                    + ", ".join(s.declared_but_failing)
                )
        bad = [d for d in self.disagreements if d.status == "fail"]
        if self.disagreements:
            out.append(
                f"cross-backend: {len(self.disagreements)} disagreements"
                + (f", {len(bad)} between passing backends" if bad else "")
            )
        return out

    def next_steps(self, backend: str) -> list[NextStep]:
        """Return what ``backend`` lacks, ranked (see :mod:`mlplug.conformance.next_steps`)."""
        return next_steps(self.results, backend)

    def next_steps_lines(self, backend: str, per_family: int = 4) -> list[str]:
        """Return the terminal to-do list of ``backend``: one line per op family.

        Families come in the order of their best-ranked item; each line shows up to
        ``per_family`` items as ``op (model families, cases)``. Empty when nothing is missing.
        """
        groups = by_family(self.next_steps(backend))
        if not groups:
            return []
        width = max(len(f) for f in groups)
        out = [
            f"implement next on {backend}, by op family "
            "(op (model families using it, failed or unsupported cases)):"
        ]
        for family, steps in groups.items():
            shown = ", ".join(f"{s.item} ({s.models}, {s.cases})" for s in steps[:per_family])
            more = f", +{len(steps) - per_family} more" if len(steps) > per_family else ""
            out.append(f"  {family:<{width}}  {shown}{more}")
        return out

    def badge_url(self, backend: str) -> str:
        """Return a shields.io badge URL: ``backend | passed/total passed``, coloured by status.

        Green: every case passed; yellow: no failure, some cases unsupported or known
        failures; red: a failure.
        """
        s = self.summary[backend]
        color = "red" if s.failed or s.xpass else "yellow" if s.passed < s.total else "green"
        label = quote(backend.replace("-", "--").replace("_", "__"), safe="")
        text = quote(f"{s.passed}/{s.total} passed", safe="")
        return f"https://img.shields.io/badge/{label}-{text}-{color}"

    def to_markdown(self) -> str:
        """Return a Markdown page: the op x backend matrix, a badge-ready summary per backend,
        and each backend's ranked list of what to implement next."""
        cells = self._cells("op")
        ops = sorted({k[0] for k in cells})
        lines = [
            "| op | " + " | ".join(self.backends) + " |",
            "|---|" + "---|" * len(self.backends),
        ]
        for op in ops:
            row = [f"`{op}`"]
            for b in self.backends:
                row.append(_md_cell(cells.get((op, b), [])))
            lines.append("| " + " | ".join(row) + " |")
        lines += [
            "",
            "| backend | passed | failed | unsupported | known failures | badge |",
            "|---|---|---|---|---|---|",
        ]
        for b in self.backends:
            s = self.summary[b]
            badge = f"![{b} conformance]({self.badge_url(b)})"
            lines.append(
                f"| {b} | {s.passed} | {s.failed + s.xpass} | {s.unsupported} | {s.xfail} "
                f"| {badge} |"
            )
        for b in self.backends:
            steps = self.next_steps(b)
            if not steps:
                continue
            lines += [
                "",
                f"### Implement next on {b}",
                "",
                "Ranked by score = cases x (1 + model families using the op).",
                "",
                "| family | op | model families | cases | score |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {x.family} | `{x.item}` | {x.models} | {x.cases} | {x.score} |" for x in steps
            ]
        return "\n".join(lines) + "\n"


def _summarise(
    results: Sequence[CaseResult],
    seconds: float | None,
    declared: frozenset[tuple[str, str]] | None = None,
    pinned: bool = False,
) -> BackendSummary:
    counts = {
        s: sum(1 for r in results if r.status == s)
        for s in ("pass", "fail", "unsupported", "xfail", "xpass")
    }
    by_op: dict[str, set[str]] = defaultdict(set)
    for r in results:
        if r.dtype != "err":  # error cases run in the core: they say nothing of support
            by_op[r.op].add(r.status)
    return BackendSummary(
        passed=counts["pass"],
        failed=counts["fail"],
        unsupported=counts["unsupported"],
        xfail=counts["xfail"],
        xpass=counts["xpass"],
        total=len(results),
        unsupported_ops=sorted(op for op, st in by_op.items() if st == {"unsupported"}),
        partially_supported_ops=sorted(
            op for op, st in by_op.items() if "unsupported" in st and st != {"unsupported"}
        ),
        failed_ops=sorted(op for op, st in by_op.items() if st & {"fail", "xpass"}),
        seconds=round(seconds or 0.0, 3),
        unsupported_by_op=dict(
            sorted(Counter(r.op for r in results if r.status == "unsupported").items())
        ),
        pinned=pinned,
        declares_support=declared is not None,
        **_support_claims(results, declared),
    )


def _support_claims(
    results: Sequence[CaseResult], declared: frozenset[tuple[str, str]] | None
) -> dict[str, list[str]]:
    """Compare a backend's declared (op, dtype) pairs with what its cases did."""
    if declared is None:
        return {}
    by_pair: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in results:
        if r.dtype != "err":
            by_pair[(r.op, r.dtype)].add(r.status)
    failing = sorted(
        p for p in declared if by_pair.get(p, set()) & {"fail", "unsupported", "xfail"}
    )
    undeclared = sorted(p for p, st in by_pair.items() if "pass" in st and p not in declared)
    return {
        "declared_but_failing": [f"{op} {dt}" for op, dt in failing],
        "working_but_undeclared": [f"{op} {dt}" for op, dt in undeclared],
    }


def _aggregate(rs: Iterable[CaseResult]) -> str:
    st = {r.status for r in rs}
    for s in ("fail", "xpass", "xfail"):
        if s in st:
            return s
    if st == {"unsupported"}:
        return "unsupported"
    return "partial" if "unsupported" in st else "pass"


def _worst(rs: Iterable[CaseResult]) -> float | None:
    errs = [r.max_abs_err for r in rs if r.max_abs_err is not None and r.status == "pass"]
    return max(errs) if errs else None


def _fmt(err: float | None) -> str:
    if err is None:
        return ""
    if err == 0:
        return "0"
    return "inf" if math.isinf(err) else f"{err:.0e}"


def _cell_text(rs: list[CaseResult]) -> str:
    if not rs:
        return "-"
    agg = _aggregate(rs)
    if agg in ("fail", "xpass", "xfail"):
        n = sum(1 for r in rs if r.status == agg)
        return f"{_MARK[agg]} {n}/{len(rs)}"
    if agg in ("pass", "partial"):
        return f"{_MARK[agg]} {_fmt(_worst(rs))}".rstrip()
    return _MARK[agg]


def _md_cell(rs: list[CaseResult]) -> str:
    if not rs:
        return ""
    agg = _aggregate(rs)
    n = len(rs)
    ok = sum(1 for r in rs if r.status == "pass")
    if agg == "pass":
        return f"pass ({n})"
    if agg == "partial":
        return f"pass ({ok}/{n}), unsupported ({n - ok})"
    if agg == "unsupported":
        return "unsupported"
    bad = sum(1 for r in rs if r.status == agg)
    word = {"fail": "**fail**", "xpass": "**xpass**", "xfail": "**fail** (known)"}[agg]
    return f"{word} ({bad}/{n})"
