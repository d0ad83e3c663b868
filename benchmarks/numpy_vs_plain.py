"""cpu_numpy against plain numpy, measured in the same run.

Each case is computed by the ``cpu_numpy`` backend through mlplug's graph API and by the numpy
code a person would write for it, interleaved, and the medians are compared:

- ``matmul``: 1024 x 1024 x 1024 f32 matrix product;
- ``elementwise``: ``silu(x * y + z) * 0.5``, 4096 wide, on a batch of 256 rows and on one row;
- ``softmax``: over 32 rows of 4096.

Two modes: ``reuse`` builds the graph once and computes it many times (a steady decode step),
``rebuild`` opens a new context per step, builds the graph on the same input tensors, computes
and closes it. RATIO is cpu_numpy time / numpy time; the goal is at most 1.25.

Run ``python benchmarks/numpy_vs_plain.py [--repeat N] [--json]``. BLAS settings such as
``OPENBLAS_CORETYPE`` change both sides alike; they are printed with the results.
"""

from __future__ import annotations

import argparse
import json
import sys

from mlplug.cli.bench import CASES, MODES, bench_backend, environment, format_results

#: cpu_numpy should be within this factor of plain numpy.
GOAL = 1.25


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print a table (or JSON); exit 0 even when a goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per case (20)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = bench_backend("cpu_numpy", repeat=args.repeat, modes=MODES, cases=CASES)
    if args.json:
        data = {
            "environment": environment(),
            "goal": GOAL,
            "repeat": args.repeat,
            "results": [r.to_json_dict() for r in results],
        }
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    env = environment()
    blas = ", ".join(f"{k}={v}" for k, v in env.items() if k.isupper()) or "no BLAS variables set"
    print(f"cpu_numpy vs numpy {env['numpy']}; median of {args.repeat}; {env['cpus']} CPUs; {blas}")
    print(format_results(results, goal=GOAL))
    met = sum(r.ratio <= GOAL for r in results if not r.error)
    print(f"\n{met} of {len(results)} within {GOAL}x of numpy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
