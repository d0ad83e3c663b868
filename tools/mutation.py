"""Mutation testing of the plugins' kernels, with the conformance suite as the oracle.

``python tools/mutation.py run [--plugin P]... [--sample N] [--seed S] [--workdir D]`` copies
the checkout (tracked and untracked, not ignored files) into a work folder, makes a cosmic-ray
session per plugin from ``tools/mutation/<plugin>.toml`` (the plugin's op modules; the test
command is the conformance suite on that plugin alone, ``-x``), keeps a seeded random sample of
``N`` mutants per plugin when ``--sample`` is given (the others are marked skipped), checks that
the unmutated copy passes, runs the mutants and prints the summary. Without ``--sample`` every
mutant runs (hours on two cores). ``tox -e mutation -- --sample 60`` does the same.

``python tools/mutation.py recheck --plugin P SESSION.sqlite`` runs a finished session's
survivors again, against the conformance suite as it is now (after cases were added for them);
the plugin's op modules must be unchanged since the session ran (checked line by line).

``python tools/mutation.py summary SESSION.sqlite... [--json FILE] [--diff]`` prints, per
module, the mutants run, killed, survived and judged equivalent, the score (killed over run minus
equivalent) and every surviving mutant that is not listed as equivalent. Equivalent mutants are
listed in ``tools/mutation/equivalent.txt``, one a line: ``PATH:LINE:COL OPERATOR  reason``
(a NumberReplacer's OPERATOR carries its shift: ``core/NumberReplacer(+1)`` or ``(-1)``).

The copy matters: cosmic-ray edits the module on disk while a mutant's tests run, so a run in the
checkout itself would race with anything else reading it. Bytecode caching is off in the copy
(``PYTHONDONTWRITEBYTECODE``; a mutant of equal size written within the same second as the
original would otherwise be served from a stale ``.pyc``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tools" / "mutation"
EQUIVALENT = CONFIGS / "equivalent.txt"
PLUGINS = ("cpu_numpy", "ggml", "torch")


@dataclass
class ModuleScore:
    """Mutants of one module: how many ran, were killed, survived; survivors' descriptions."""

    run: int = 0
    killed: int = 0
    equivalent: int = 0
    survivors: list[str] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        """Killed over non-equivalent mutants run (None when none ran)."""
        live = self.run - self.equivalent
        return self.killed / live if live > 0 else None


def parse_equivalent(text: str) -> dict[str, str]:
    """Parse ``equivalent.txt``: ``{"PATH:LINE:COL OPERATOR": reason}``."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 3:
            msg = f"equivalent.txt: {line!r} needs PATH:LINE:COL, OPERATOR and a reason"
            raise ValueError(msg)
        out[f"{parts[0]} {parts[1]}"] = parts[2]
    return out


_NUMBER = re.compile(r"\s*\(?\s*(-?[0-9][0-9_.eE+-]*)")


def _number_shift(diff: str, col: int) -> str:
    """``(+1)`` / ``(-1)``: which way a NumberReplacer mutant moved the literal at ``col``."""
    lines = diff.splitlines()
    old = [ln[1:] for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    new = [ln[1:] for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
    if len(old) != 1 or len(new) != 1:
        return ""
    a, b = _NUMBER.match(old[0][col:]), _NUMBER.match(new[0][col:])
    try:
        delta = float(b.group(1)) - float(a.group(1))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return ""
    return f"({delta:+g})"


def _key(mutation: object, diff: str | None = None) -> str:
    """``PATH:LINE:COL OPERATOR``; a NumberReplacer's operator carries its shift, ``(+1)``."""
    path = Path(str(mutation.module_path)).as_posix()  # type: ignore[attr-defined]
    line, col = mutation.start_pos  # type: ignore[attr-defined]
    op = str(mutation.operator_name)  # type: ignore[attr-defined]
    if op.endswith("NumberReplacer") and diff:
        op += _number_shift(diff, col)
    return f"{path}:{line}:{col} {op}"


def summarise(sessions: list[Path], equivalent: dict[str, str]) -> dict[str, ModuleScore]:
    """Return the scores per module of the completed mutants in ``sessions``."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome

    scores: dict[str, ModuleScore] = defaultdict(ModuleScore)
    for session in sessions:
        with use_db(str(session), WorkDB.Mode.open) as db:
            for item, result in db.completed_work_items:
                if result.worker_outcome == WorkerOutcome.SKIPPED:
                    continue
                (mutation,) = item.mutations
                key = _key(mutation, result.diff)
                module = key.split(":", 1)[0]
                s = scores[module]
                s.run += 1
                if key in equivalent:
                    s.equivalent += 1
                elif result.is_killed:
                    s.killed += 1
                else:
                    s.survivors.append(key)
                    s.diffs.append(result.diff or "")
    return dict(sorted(scores.items()))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95% for the default ``z``)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def print_summary(scores: dict[str, ModuleScore], diffs: bool = False) -> None:
    """Print the per-module table, totals per plugin and the surviving mutants (with their
    diffs when ``diffs``)."""
    print(f"{'MODULE':60} {'RUN':>5} {'KILLED':>6} {'EQUIV':>5} {'SCORE':>7}")
    per_plugin: dict[str, Counter[str]] = defaultdict(Counter)
    for module, s in scores.items():
        score = "-" if s.score is None else f"{100 * s.score:.1f}%"
        print(f"{module:60} {s.run:5} {s.killed:6} {s.equivalent:5} {score:>7}")
        plugin = module.split("/")[1] if module.startswith("plugins/") else module
        per_plugin[plugin].update(run=s.run, killed=s.killed, equivalent=s.equivalent)
    for plugin, c in per_plugin.items():
        live = c["run"] - c["equivalent"]
        pct = "-"
        if live:
            lo, hi = wilson(c["killed"], live)
            pct = f"{100 * c['killed'] / live:.1f}%, 95% CI {100 * lo:.1f}-{100 * hi:.1f}%"
        print(
            f"{plugin}: {c['killed']} of {live} non-equivalent mutants killed ({pct}); "
            f"{c['equivalent']} equivalent"
        )
    survivors = [k for s in scores.values() for k in s.survivors]
    if survivors:
        print(f"\n{len(survivors)} surviving mutants (not listed as equivalent):")
        for s in scores.values():
            for key, diff in zip(s.survivors, s.diffs, strict=True):
                print(f"  {key}")
                if diffs:
                    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-"]
                    print(
                        "".join(f"      {ln}\n" for ln in changed if ln[:3] not in ("---", "+++"))
                    )


def _copy_checkout(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = ROOT / rel
        if not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(copy / "core")] + [str(copy / "plugins" / p) for p in PLUGINS]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _sample(session: Path, n: int, seed: int) -> int:
    """Keep ``n`` pending mutants of ``session`` (seeded), mark the rest skipped; return kept."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        ids = sorted(item.job_id for item in db.pending_work_items)
        keep = set(random.Random(seed).sample(ids, min(n, len(ids))))
        drop = [i for i in ids if i not in keep]
        if drop:
            db.set_multiple_results(drop, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
        return len(keep)


def _run_plugin(plugin: str, copy: Path, args: argparse.Namespace) -> Path:
    config = CONFIGS / f"{plugin}.toml"
    session = Path(args.workdir).resolve() / f"{plugin}.sqlite"
    env = _env(copy)
    cr = [sys.executable, "-m", "cosmic_ray.cli"]
    subprocess.run(
        [*cr, "init", str(config), str(session), "--force"], cwd=copy, env=env, check=True
    )
    if args.sample is not None:
        kept = _sample(session, args.sample, args.seed)
        print(f"{plugin}: a sample of {kept} mutants (seed {args.seed})", flush=True)
    from cosmic_ray.config import load_config

    baseline = load_config(str(config)).test_command
    done = subprocess.run(
        baseline, shell=True, cwd=copy, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], file=sys.stderr)
        msg = f"{plugin}: the unmutated code fails its oracle ({baseline}); no mutant was run"
        raise SystemExit(msg)
    subprocess.run([*cr, "exec", str(config), str(session)], cwd=copy, env=env, check=True)
    return session


def _recheck(plugin: str, session: Path, copy: Path) -> int:
    """Run the survivors of ``session`` again against the oracle of ``copy``; return how many.

    Refused when a survivor's line no longer reads as it did when it was mutated: cosmic-ray
    re-applies a mutant by its position, so the module must be the one the session sampled.
    """
    from cosmic_ray.work_db import WorkDB, WorkResultStorage, use_db
    from cosmic_ray.work_item import WorkerOutcome

    ids = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED or result.is_killed:
                continue
            (mutation,) = item.mutations
            line = mutation.start_pos[0]
            old = [
                ln[1:]
                for ln in (result.diff or "").splitlines()
                if ln.startswith("-") and not ln.startswith("---")
            ]
            path = copy / Path(str(mutation.module_path))
            now = path.read_text().splitlines()
            if len(old) != 1 or len(now) < line or now[line - 1] != old[0]:
                msg = f"{_key(mutation)}: the module changed since the run; run a new sample"
                raise SystemExit(msg)
            ids.append(item.job_id)
        # cosmic-ray has no public way to reopen one item: drop its result row
        with db._session_maker.begin() as s:
            s.query(WorkResultStorage).filter(WorkResultStorage.job_id.in_(ids)).delete()
    config = CONFIGS / f"{plugin}.toml"
    cr = [sys.executable, "-m", "cosmic_ray.cli", "exec", str(config), str(session)]
    subprocess.run(cr, cwd=copy, env=_env(copy), check=True)
    return len(ids)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``run`` or ``summary`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="mutate the plugins' op modules and run the oracle")
    run.add_argument("--plugin", action="append", choices=PLUGINS, help="default: all three")
    run.add_argument("--sample", type=int, default=None, help="mutants per plugin (default all)")
    run.add_argument("--seed", type=int, default=0, help="seed of the sample")
    run.add_argument("--workdir", default=None, help="sessions and the copy (default: a temp dir)")
    run.add_argument("--json", default=None, help="also write the summary to this file")
    recheck = sub.add_parser(
        "recheck", help="run a session's survivors again against today's conformance suite"
    )
    recheck.add_argument("--plugin", required=True, choices=PLUGINS)
    recheck.add_argument("session", type=Path)
    recheck.add_argument("--workdir", default=None, help="the copy (default: a temp dir)")
    recheck.add_argument("--json", default=None, help="also write the summary to this file")
    summary = sub.add_parser("summary", help="scores of finished sessions")
    summary.add_argument("sessions", nargs="+", type=Path)
    summary.add_argument("--json", default=None, help="also write the summary to this file")
    summary.add_argument("--diff", action="store_true", help="show each survivor's change")
    args = parser.parse_args(argv)
    equivalent = parse_equivalent(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}
    if args.command == "run":
        args.workdir = args.workdir or tempfile.mkdtemp(prefix="mlplug-mutation-")
        work = Path(args.workdir).resolve()
        copy = work / "checkout"
        if copy.exists():
            shutil.rmtree(copy)
        copy.mkdir(parents=True)
        _copy_checkout(copy)
        print(f"work folder: {work}", flush=True)
        sessions = [_run_plugin(p, copy, args) for p in (args.plugin or PLUGINS)]
    elif args.command == "recheck":
        copy = Path(args.workdir or tempfile.mkdtemp(prefix="mlplug-mutation-")).resolve()
        copy = copy / "checkout"
        if copy.exists():
            shutil.rmtree(copy)
        copy.mkdir(parents=True)
        _copy_checkout(copy)
        n = _recheck(args.plugin, args.session.resolve(), copy)
        print(f"{args.plugin}: {n} survivors run again against the current suite", flush=True)
        sessions = [args.session]
    else:
        sessions = args.sessions
    scores = summarise(sessions, equivalent)
    print_summary(scores, diffs=getattr(args, "diff", False))
    if args.json:
        data = {
            m: {
                "run": s.run,
                "killed": s.killed,
                "equivalent": s.equivalent,
                "score": s.score,
                "survivors": s.survivors,
            }
            for m, s in scores.items()
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
