"""Microseconds per graph node: the core's op builders and each plugin's translation.

Builds one decode step's graph of a model (a token at the position after a short prompt) many
times on each backend and reports medians: ``core`` is ``Decoder.build`` plus ``forward`` (op
builders, validation, Tensor creation, graph walk); ``translate`` is what the plugin does before
its first compute of a new graph (ggml: ggml graph and allocation; cpu_numpy: its plan of bound
steps; torch computes eagerly and has none). Times are the CPU time of the building thread
(``time.thread_time``), so other processes on a loaded machine disturb them less than wall time.

Usage::

    python benchmarks/build_cost.py MODEL.gguf [--backends ggml,cpu_numpy,torch] [--reps 30]
        [--json] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from typing import Any

import numpy as np


def _translate(backend: str, ctx: Any, graph: Any, out: Any) -> None:
    """The plugin's own preparation of a new graph (private hooks; torch has none)."""
    if backend == "ggml":
        ctx._entry(graph, (out,))
    elif backend == "cpu_numpy":
        ctx._make_plan(graph)


def measure(path: str, backend: str, reps: int, profile: bool) -> dict[str, float]:
    import mlplug as ml
    from mlplug.models import load_model
    from mlplug.plugin_api import LEAF

    be = ml.new_backend(path, ml.BackendParams(alloc_memory=True), backend=backend)
    be.load()
    core: list[float] = []
    trans: list[float] = []
    nodes = 0
    prof = cProfile.Profile() if profile else None
    with be, load_model(be, num_ctx=512) as model:
        model.forward([1, 2, 3, 4], range(4))
        for _ in range(reps):
            ctx = be.new_context()
            with ctx:
                inputs = ctx.input()
                ids = inputs.from_ints(np.int32([5]), 1)
                pos = inputs.from_ints(np.int32([4]), 1)
                rows = inputs.from_ints(np.int32([0]), 1)
                model.cache.begin(ctx, [4])
                if prof is not None:
                    prof.enable()
                t0 = time.thread_time()
                logits = model.build(ctx, ids, pos, rows)
                ctx.forward(logits)
                t1 = time.thread_time()
                if prof is not None:
                    prof.disable()
                _translate(backend, ctx, ctx._graph, logits)
                t2 = time.thread_time()
                nodes = sum(1 for t in ctx.graph if t.op != LEAF)
                core.append((t1 - t0) / nodes * 1e6)
                trans.append((t2 - t1) / nodes * 1e6)
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return {
        "nodes": nodes,
        "core_us_per_node": statistics.median(core),
        "translate_us_per_node": statistics.median(trans),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--backends", default="ggml,cpu_numpy,torch")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", action="store_true", help="cProfile the core builders")
    args = parser.parse_args(argv)
    results = {
        b: measure(args.model, b, args.reps, args.profile) for b in args.backends.split(",") if b
    }
    if args.json:
        print(json.dumps(results))
    else:
        for b, r in results.items():
            print(
                f"{b:10s} {r['nodes']:5d} nodes  core {r['core_us_per_node']:6.2f} µs/node  "
                f"translate {r['translate_us_per_node']:6.2f} µs/node"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
