"""``mlplug conformance``: run the op conformance suite and print the op x backend matrix.

With ``--backend NAME`` it also prints, per op family, what that backend should implement next
(its missing ops ranked by the model families and cases needing them).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

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
    from ..conformance import Case

__all__ = ["cmd_conformance"]


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
    tiered = {} if tier == "default" else {"tier": tier}
    selected = conformance.select(conformance.all_cases(*tiered.values()), args.op)
    if not selected:
        msg = (
            f"no conformance case matches --op {args.op!r}; "
            "'mlplug conformance --list' lists the ops"
        )
        raise UsageError(msg)
    if getattr(args, "list", False):
        return _list_ops(selected)
    backends = check_backend_names(args.backend) if args.backend else None
    if backends is None:
        warn_conflicts()
    if backends is None and not manager().backends():
        msg = "no backend plugin is installed; install one, e.g.: pip install mlplug-cpu-numpy"
        raise CommandError(msg)
    progress = Progress(enabled=not args.quiet, total=len(selected) * _n_backends(backends))
    try:
        report = conformance.run(backends, args.op, seed=args.seed, progress=progress, **tiered)
    finally:
        progress.finish()
    if args.json is not None:
        write_text_file(args.json, report.to_json())
    if args.markdown is not None:
        write_text_file(args.markdown, report.to_markdown())
    if "-" not in (args.json, args.markdown):
        sys.stdout.write(report.table().rstrip("\n") + "\n")
        if backends is not None:  # a plugin author's run: say what to write next
            for name in backends:
                lines = _next_steps_lines(report, name)
                if lines:
                    sys.stdout.write("\n" + "\n".join(lines) + "\n")
    return 1 if report.failed() else 0


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
