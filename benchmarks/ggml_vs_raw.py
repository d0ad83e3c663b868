"""mlplug's ggml backend against the plain ggml library, in one run of one process.

Three measurements:

1. **Matrix products** (the cases of :mod:`ggml_raw`): ``W[k, m] x X[k, n]`` with f32, f16 and
   q8_0 weights, through mlplug (``w.mulmat(ctx, x)`` then repeated ``ctx.compute``) and through
   the raw ctypes call sequence of :class:`ggml_raw.RawMatmul` on the same library, same thread
   count, same data. Runs alternate between the two (a busy host slows both alike); each side is
   the median of N timed computes of one built graph; the ratio is raw time / mlplug time
   (goal >= 0.9).
2. **Python cost per graph node**: a chain of 1,000 small element-wise ops on a 16-element
   tensor, first build + compute (mlplug's op builders, translation to ggml, allocation,
   compute) and then a cached repeat of the same compute, in microseconds per node.
3. **Memory over 1,000 create/compute/close cycles**: the process RSS after warm-up and after
   the cycles (goal: flat).

Usage::

    PYTHONPATH=core:plugins/ggml python benchmarks/ggml_vs_raw.py [--json] [--threads N] [--reps N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
try:
    import mlplug as ml
    from mlplug_ggml import _lib
except ImportError:  # run from a checkout without PYTHONPATH set
    _root = os.path.dirname(_HERE)
    sys.path[:0] = [os.path.join(_root, "core"), os.path.join(_root, "plugins", "ggml")]
    import mlplug as ml
    from mlplug_ggml import _lib

import ggml_raw  # noqa: E402  (the baseline, beside this file)

_DTYPES = {"f32": ml.DType.F32, "f16": ml.DType.F16, "q8_0": ml.DType.Q8_0}


def _weights(wtype: str, w32: np.ndarray) -> bytes:
    """The weight bytes as ggml_raw makes them (ggml's own conversion for f16 and q8_0)."""
    if wtype == "f32":
        return w32.tobytes()
    lib = _lib.load()
    type_id = ggml_raw.WTYPES[wtype]
    m, k = w32.shape
    out = np.empty(lib.ggml_row_size(type_id, k) * m, dtype=np.uint8)
    lib.ggml_quantize_chunk(
        type_id, w32.ctypes.data_as(ggml_raw._FloatP), out.ctypes.data, 0, m, k, None
    )
    return out.tobytes()


def matmul_pair(
    k: int, m: int, n: int, wtype: str, threads: int, reps: int, warmup: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Time raw ggml and mlplug on the same product, alternating runs (fair on a busy host).

    Both sides hold the same data (:class:`ggml_raw.RawMatmul`'s): one graph each, built once,
    then ``reps`` alternating timed computes; each side reports its median.
    """
    raw = ggml_raw.RawMatmul(k, m, n, wtype, threads, seed)
    params = ml.BackendParams(num_threads=threads)
    try:
        with ml.new_backend(None, params, backend="ggml") as be, be.new_context() as ctx:
            w = ctx.from_bytes(_DTYPES[wtype], _weights(wtype, raw.w32), k, m)
            x = ctx.from_floats(raw.x32, k, n)
            y = w.mulmat(ctx, x)
            for _ in range(warmup):
                raw.run()
                ctx.compute(y)
            t_raw, t_ours = [], []
            clock = time.perf_counter
            for i in range(reps):
                # alternate which side goes first (caches, frequency ramps affect both alike)
                if i % 2:
                    t0 = clock()
                    ctx.compute(y)
                    t1 = clock()
                    raw.run()
                    t2 = clock()
                    t_ours.append(t1 - t0)
                    t_raw.append(t2 - t1)
                else:
                    t0 = clock()
                    raw.run()
                    t1 = clock()
                    ctx.compute(y)
                    t2 = clock()
                    t_raw.append(t1 - t0)
                    t_ours.append(t2 - t1)
            got = y.floats()
        raw_err = raw.rel_err()
    finally:
        raw.close()
    assert got is not None
    ref = raw.x32 @ raw.w32.T
    err = float(np.max(np.abs(got.reshape(n, m) - ref)) / max(float(np.abs(ref).max()), 1e-30))
    flop = 2.0 * k * m * n
    r, o = statistics.median(t_raw), statistics.median(t_ours)
    return {
        "raw_seconds": r,
        "mlplug_seconds": o,
        "raw_gflops": flop / r / 1e9,
        "mlplug_gflops": flop / o / 1e9,
        "ratio": r / o,
        "raw_rel_err": raw_err,
        "mlplug_rel_err": err,
    }


def node_overhead(threads: int, n_nodes: int = 1000, repeats: int = 20) -> dict[str, float]:
    """Return microseconds per node: first build + compute, and a cached repeat compute."""
    params = ml.BackendParams(num_threads=threads)
    with ml.new_backend(None, params, backend="ggml") as be:
        best_first = best_build = best_repeat = float("inf")
        for _ in range(5):
            with be.new_context() as ctx:
                a = ctx.from_floats(np.ones(16, np.float32))
                b = ctx.from_floats(np.full(16, 0.5, np.float32))
                clock = time.perf_counter
                t0 = clock()
                x = a
                for i in range(n_nodes):
                    r = i % 4
                    if r == 0:
                        x = x.add(ctx, b)
                    elif r == 1:
                        x = x.mul(ctx, b)
                    elif r == 2:
                        x = x.scale(ctx, 0.5)
                    else:
                        x = x.sub(ctx, b)
                t1 = clock()
                ctx.compute(x)
                t2 = clock()
                repeat = []
                for _ in range(repeats):
                    t3 = clock()
                    ctx.compute(x)
                    repeat.append(clock() - t3)
                best_first = min(best_first, t2 - t0)
                best_build = min(best_build, t1 - t0)
                best_repeat = min(best_repeat, statistics.median(repeat))
    us = 1e6 / n_nodes
    return {
        "nodes": n_nodes,
        "first_build_and_compute_us_per_node": best_first * us,
        "of_which_op_builders_us_per_node": best_build * us,
        "cached_repeat_us_per_node": best_repeat * us,
    }


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_cycles(threads: int, cycles: int = 1000, warmup: int = 100) -> dict[str, float]:
    """Return the RSS (MiB) after ``warmup`` and after ``cycles`` more create/compute/close."""
    params = ml.BackendParams(num_threads=threads)
    data = np.arange(64 * 64, dtype=np.float32) / 4096

    def cycle(be: Any) -> None:
        with be.new_context() as ctx:
            a = ctx.from_floats(data, 64, 64)
            b = ctx.zeros(ml.DType.F32, 8, 64)
            y = a.mulmat(ctx, ctx.from_floats(data[: 64 * 8], 64, 8)).add(ctx, b.permute(ctx, 1, 0))
            ctx.compute(y)
            y.floats()

    with ml.new_backend(None, params, backend="ggml") as be:
        for _ in range(warmup):
            cycle(be)
        gc.collect()
        before = _rss()
        for _ in range(cycles):
            cycle(be)
        gc.collect()
        after = _rss()
    mib = 1024 * 1024
    return {
        "cycles": cycles,
        "rss_before_mib": before / mib,
        "rss_after_mib": after / mib,
        "growth_mib": (after - before) / mib,
    }


def main(argv: list[str] | None = None) -> int:
    """Run everything and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reps", type=int, default=None, help="override each case's reps")
    args = parser.parse_args(argv)

    lib = _lib.load()
    rows = []
    for label, k, m, n, wtype, reps in ggml_raw.CASES:
        reps = args.reps or reps
        pair = matmul_pair(k, m, n, wtype, args.threads, reps)
        rows.append({"case": label, "wtype": wtype, "k": k, "m": m, "n": n, "reps": reps, **pair})
    overhead = node_overhead(args.threads)
    memory = rss_cycles(args.threads)
    result = {
        "ggml_version": lib.version,
        "threads": args.threads,
        "matmul": rows,
        "node_overhead": overhead,
        "memory": memory,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"ggml {lib.version} from {lib.directory}, threads={args.threads}")
    print(f"{'case':<24}{'wtype':>6}{'raw ms':>10}{'mlplug ms':>11}{'ratio':>8}{'GFLOP/s':>10}")
    for r in rows:
        print(
            f"{r['case']:<24}{r['wtype']:>6}{r['raw_seconds'] * 1e3:>10.3f}"
            f"{r['mlplug_seconds'] * 1e3:>11.3f}{r['ratio']:>8.3f}{r['mlplug_gflops']:>10.2f}"
        )
    print(
        f"per node ({overhead['nodes']} small ops): first build+compute "
        f"{overhead['first_build_and_compute_us_per_node']:.2f} us (op builders "
        f"{overhead['of_which_op_builders_us_per_node']:.2f} us), cached repeat "
        f"{overhead['cached_repeat_us_per_node']:.2f} us"
    )
    print(
        f"RSS over {memory['cycles']} create/compute/close cycles: "
        f"{memory['rss_before_mib']:.1f} -> {memory['rss_after_mib']:.1f} MiB "
        f"({memory['growth_mib']:+.2f} MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
