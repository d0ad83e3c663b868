"""``mlplug conformance``: run the op conformance suite and print the op x backend matrix.

With ``--backend NAME`` it also prints, per op family, what that backend should implement next
(its missing ops ranked by the model families and cases needing them). Every failed case is
followed by the one command that reruns exactly it (``--backend B --case ID --seed N``);
``--dump FILE`` writes that case's inputs, reference and outputs to a ``.npz`` file.
``--strict`` fails the run on any unsupported case; ``--pin-unsupported`` prints the run's
unsupported cases in the format of a plugin's ``unsupported.txt``.
"""

from __future__ import annotations

import argparse
import sys
import types
from typing import IO, TYPE_CHECKING, Any

from ._common import (
    CommandError,
    Progress,
    UsageError,
    check_backend_names,
    format_table,
    warn_conflicts,
    write_text_file,
)

if TYPE_CHECKING:
    from ..conformance import Case, ConformanceReport
    from ..conformance.runner import Outcome

#: Failed cases whose rerun command is printed (the JSON report has all of them).
_MAX_REPRO = 20

__all__ = ["add_flags", "cmd_conformance"]


def add_flags(p: argparse.ArgumentParser) -> None:
    """Add the flags of reproducible and strict runs (``--case``, ``--dump``, ``--strict``, ...)."""
    p.add_argument(
        "--case",
        metavar="ID",
        action="append",
        help="only the case with exactly this id (repeatable); a failure prints the command",
    )
    p.add_argument(
        "--dump",
        metavar="FILE.npz",
        help="write the selected case's inputs, reference and every backend's outputs (one case)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail the run on any unsupported case",
    )
    p.add_argument(
        "--pin-unsupported",
        action="store_true",
        help="print the unsupported cases of the run in the format of a plugin's unsupported.txt",
    )


def _selection(conformance: types.ModuleType, args: argparse.Namespace, *tier: str) -> list[Case]:
    """Return the cases ``--case`` and ``--op`` select; a usage error when there are none.

    ``--case`` looks in every tier (a failure's rerun command names no tier).
    """
    ids = getattr(args, "case", None)
    cases = list(conformance.all_cases("all") if ids else conformance.all_cases(*tier))
    if ids:
        known = {c.id for c in cases}
        unknown = [i for i in ids if i not in known]
        if unknown:
            msg = f"no conformance case has the id {', '.join(map(repr, unknown))}"
            raise UsageError(msg)
        cases = [c for c in cases if c.id in set(ids)]
    selected: list[Case] = conformance.select(cases, args.op)
    if not selected:
        msg = (
            f"no conformance case matches --op {args.op!r}; "
            "'mlplug conformance --list' lists the ops"
        )
        raise UsageError(msg)
    return selected


def cmd_conformance(args: argparse.Namespace) -> int:
    """Run the suite on the chosen (default: every installed) backend; exit 1 on any failure."""
    try:
        from .. import conformance
    except ImportError as exc:
        msg = f"the conformance suite cannot be imported: {exc}"
        raise CommandError(msg) from exc
    from ..registry import manager

    tier = _tier(args)
    # the default tier is what every version of the suite's API calls ``all_cases()``
    tiered: dict[str, Any] = {} if tier == "default" else {"tier": tier}
    selected = _selection(conformance, args, *tiered.values())
    if getattr(args, "list", False):
        return _list_ops(selected)
    dump_path = getattr(args, "dump", None)
    if dump_path is not None and len(selected) != 1:
        msg = f"--dump writes one case, but {len(selected)} are selected: add --case ID"
        raise UsageError(msg)
    backends = check_backend_names(args.backend) if args.backend else None
    if backends is None:
        warn_conflicts()
    if backends is None and not manager().backends():
        msg = "no backend plugin is installed; install one, e.g.: pip install mlplug-cpu-numpy"
        raise CommandError(msg)
    n_backends = _n_backends(backends)
    progress = Progress(enabled=not args.quiet, total=len(selected) * n_backends)
    kept: dict[str, Outcome] = {}
    extra: dict[str, Any] = dict(tiered)
    if getattr(args, "strict", False):
        extra["strict"] = True
    if getattr(args, "case", None):
        extra["cases"] = selected
    if dump_path is not None:
        extra["keep"] = lambda b, c, out: kept.__setitem__(b, out)
    try:
        report = conformance.run(backends, args.op, seed=args.seed, progress=progress, **extra)
    finally:
        progress.finish()
    if dump_path is not None:
        _dump(dump_path, selected[0], args.seed, kept)
    if args.json is not None:
        write_text_file(args.json, report.to_json())
    if args.markdown is not None:
        write_text_file(args.markdown, report.to_markdown())
    if getattr(args, "pin_unsupported", False):
        sys.stdout.write(_pin_text(report))
        return 1 if report.failed() else 0
    if "-" not in (args.json, args.markdown):
        sys.stdout.write(report.table().rstrip("\n") + "\n")
        if backends is not None:  # a plugin author's run: say what to write next
            for name in backends:
                lines = _next_steps_lines(report, name)
                if lines:
                    sys.stdout.write("\n" + "\n".join(lines) + "\n")
    out = sys.stderr if "-" in (args.json, args.markdown) else sys.stdout
    _print_failures(report, out)
    return 1 if report.failed() else 0


def _print_failures(report: ConformanceReport, out: IO[str]) -> None:
    """Print the run's problems and, per failed case, the command that reruns exactly it."""
    from ..conformance.report import repro_command

    method = getattr(report, "problems", None)
    problems: list[str] = list(method()) if callable(method) else []
    bad = [r for r in getattr(report, "results", ()) if r.status in ("fail", "xpass")]
    if not problems and not bad:
        return
    lines = ["", *problems]
    if bad:
        lines.append(f"{len(bad)} failed cases; rerun one (add --dump FILE.npz for its data):")
        shown = bad[:_MAX_REPRO]
        lines += [f"  {repro_command(r.backend, r.case, report.seed)}" for r in shown]
        if len(bad) > len(shown):
            lines.append(f"  ... and {len(bad) - len(shown)} more (--json lists them all)")
    out.write("\n".join(lines) + "\n")


def _pin_text(report: ConformanceReport) -> str:
    """Return the unsupported cases of each backend in ``unsupported.txt`` format."""
    lines = []
    for b in report.backends:
        rs = [r for r in report.results if r.backend == b and r.status == "unsupported"]
        if len(report.backends) > 1:
            lines.append(f"# {b}")
        for r in rs:
            reason = (r.error or "unsupported").splitlines()[0]
            lines.append(f"{r.case}   {reason}")
    return "\n".join(lines) + ("\n" if lines else "")


def _dump(path: str, case: Case, seed: int, kept: dict[str, Outcome]) -> None:
    """Write ``case``'s data for ``seed`` and each backend's outputs to ``path`` (.npz).

    Keys: ``input<i>`` (stored data), ``operand<i>`` (the values the reference sees),
    ``reference<j>`` and ``<backend>.output<j>`` (raw results, flat), plus ``case`` and ``seed``.
    """
    import numpy as np

    from ..conformance.runner import ReferenceFailure, prepare

    arrays: dict[str, np.ndarray] = {"case": np.asarray(case.id), "seed": np.asarray(seed)}
    try:
        prep = prepare(case, seed)
    except ReferenceFailure as exc:
        arrays["reference_error"] = np.asarray(str(exc))
    else:
        for i, (raw, op) in enumerate(zip(prep.raw, prep.operands, strict=True)):
            arrays[f"input{i}"], arrays[f"operand{i}"] = raw, op
        for j, e in enumerate(prep.expected):
            arrays[f"reference{j}"] = e
    for backend, out in kept.items():
        arrays[f"{backend}.status"] = np.asarray(out.status)
        if out.error:
            arrays[f"{backend}.error"] = np.asarray(out.error)
        for j, got in enumerate(out.outputs):
            ref = arrays.get(f"reference{j}")
            if ref is not None and ref.size == got.size and not out.dtypes[j].is_quantized:
                got = got.reshape(ref.shape)
            arrays[f"{backend}.output{j}"] = got
    try:
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise CommandError(msg) from exc
    print(f"wrote {path}: {', '.join(sorted(arrays))}", file=sys.stderr)


def _next_steps_lines(report: object, backend: str) -> list[str]:
    """Return the report's to-do list for ``backend`` (none from a report that lacks one)."""
    method = getattr(report, "next_steps_lines", None)
    return list(method(backend)) if callable(method) else []


def _list_ops(cases: list[Case]) -> int:
    """Print each op with its number of cases; exit 0."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.op] = counts.get(case.op, 0) + 1
    rows = [[op, str(n)] for op, n in sorted(counts.items())]
    print(format_table(["OP", "CASES"], rows))
    return 0


def _tier(args: argparse.Namespace) -> str:
    """Return the tier ``--tier`` chose (``default`` when the namespace has none)."""
    return str(getattr(args, "tier", None) or "default")


def _n_backends(backends: list[str] | None) -> int:
    """Return how many backends the run covers."""
    from ..registry import manager

    return len(backends) if backends else len(manager().backends())
