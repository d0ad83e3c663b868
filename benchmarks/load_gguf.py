"""Model loading speed and memory: ``new_backend(path).load()`` vs a plain read of the same file.

Writes a llama-shaped F16 GGUF of about ``--size-gib`` GiB into a temporary directory (deleted
afterwards), reads it once so the page cache is warm for every measurement (caches cannot be
dropped without root, so both sides are measured warm), then runs each measurement in a fresh
subprocess and reports:

* ``plain``: ``open(path, "rb", buffering=0).readinto(bytearray(size))`` - the baseline;
* ``plain-numpy``: the same read into ``np.empty(size, np.uint8)`` (numpy's allocator, which
  asks Linux for transparent huge pages: far fewer page faults, as cpu_numpy's storage gets);
* ``<backend>``: ``mlplug.new_backend(path, BackendParams(alloc_memory=True), backend=...)``
  (timed as ``open``) and ``load()`` (timed as ``load``), for every installed backend.

Throughput is tensor bytes / load time (GB/s, 1e9); peak RSS is ``ru_maxrss`` of the subprocess,
also shown minus the RSS the subprocess had after its imports. Goals: load >= 0.7x the plain read,
peak RSS <= weights + 10%.

    python benchmarks/load_gguf.py [--size-gib 1] [--backend cpu_numpy]... [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_GIB = 1 << 30


def _rss_kib() -> int:
    """Current resident set size in KiB (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def write_model(path: Path, size_gib: float) -> int:
    """Write a llama-shaped F16 GGUF of about ``size_gib`` GiB; return its tensor bytes."""
    from gguf import GGMLQuantizationType, GGUFWriter

    n_embd, n_ff, n_vocab = 2048, 5632, 32000
    per_layer = 2 * (2 * n_embd * n_embd + 2 * n_embd * n_ff) + 4 * n_embd
    embd = 2 * n_embd * n_vocab
    layers = max(1, round((size_gib * _GIB - 2 * embd) / per_layer))
    shapes: list[tuple[str, tuple[int, ...], GGMLQuantizationType]] = [
        ("token_embd.weight", (n_vocab, n_embd), GGMLQuantizationType.F16)
    ]
    for i in range(layers):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (n_embd,), GGMLQuantizationType.F32),
            (f"blk.{i}.attn_q.weight", (n_embd, n_embd), GGMLQuantizationType.F16),
            (f"blk.{i}.attn_output.weight", (n_embd, n_embd), GGMLQuantizationType.F16),
            (f"blk.{i}.ffn_up.weight", (n_ff, n_embd), GGMLQuantizationType.F16),
            (f"blk.{i}.ffn_down.weight", (n_embd, n_ff), GGMLQuantizationType.F16),
        ]
    shapes.append(("output_norm.weight", (n_embd,), GGMLQuantizationType.F32))
    # untied output: the weights in memory are exactly the file's (a tied copy would add one)
    shapes.append(("output.weight", (n_vocab, n_embd), GGMLQuantizationType.F16))
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(16)
    w.add_file_type(1)
    rng = np.random.default_rng(0)
    pattern = rng.standard_normal(1 << 20).astype(np.float16)
    total = 0
    for name, shape, qtype in shapes:
        itemsize = 4 if qtype == GGMLQuantizationType.F32 else 2
        n = int(np.prod(shape))
        w.add_tensor_info(
            name,
            shape,
            np.dtype(np.float32 if itemsize == 4 else np.float16),
            n * itemsize,
            raw_dtype=qtype,
        )
        total += n * itemsize
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _name, shape, qtype in shapes:
        n = int(np.prod(shape))
        if qtype == GGMLQuantizationType.F32:
            data: np.ndarray = np.ones(n, np.float32)
        else:
            data = np.resize(pattern, n)
        w.write_tensor_data(data.reshape(shape))
    w.close()
    return total


def child(mode: str, path: str) -> dict[str, Any]:
    """Run one measurement in this (fresh) process."""
    import gc

    if mode in ("plain", "plain-numpy"):
        base = _rss_kib()
        t0 = time.perf_counter()
        size = os.path.getsize(path)
        buf = bytearray(size) if mode == "plain" else np.empty(size, np.uint8)
        with open(path, "rb", buffering=0) as f:
            view = memoryview(buf).cast("B")
            got = 0
            while got < size:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
        seconds = time.perf_counter() - t0
        assert got == size
        out = {"load_s": seconds, "bytes": size, "base_rss_kib": base}
    else:
        import mlplug as ml

        base = _rss_kib()
        t0 = time.perf_counter()
        be = ml.new_backend(path, ml.BackendParams(alloc_memory=True), backend=mode)
        t1 = time.perf_counter()
        mem = be.backend_memory()
        held = mem.input_weights + sum(mem.cpu.weights) + sum(sum(g.weights) for g in mem.gpus)
        last: list[float] = []
        be.load(lambda f: last.append(f))
        t2 = time.perf_counter()
        from mlplug.modelfile import GGUFFile

        with GGUFFile(path) as gf:
            nbytes = sum(t.nbytes for t in gf.tensors)
        assert last and last[-1] == 1.0
        out = {
            "open_s": t1 - t0,
            "load_s": t2 - t1,
            "bytes": nbytes,
            "base_rss_kib": base,
            "progress_calls": len(last),
            "weights_in_memory": held,
        }
        be.close()
        gc.collect()
    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


def measure(mode: str, path: Path) -> dict[str, Any]:
    """Run :func:`child` in a subprocess and return its result."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    """Write the model, measure, print the table (or JSON), delete the model."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gib", type=float, default=1.0)
    p.add_argument("--backend", action="append", help="backend to measure (default: all)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--dir", default=None, help="where to write the model (default: a temp dir)")
    p.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0

    if args.backend:
        backends = args.backend
    else:
        from mlplug.registry import manager

        backends = [e.name for e in manager().backends()]
    tmp = Path(tempfile.mkdtemp(prefix="mlplug-bench-", dir=args.dir))
    try:
        path = tmp / "model.gguf"
        t0 = time.perf_counter()
        weights = write_model(path, args.size_gib)
        write_s = time.perf_counter() - t0
        with open(path, "rb", buffering=0) as f:  # warm the page cache
            while f.read(1 << 24):
                pass
        results: dict[str, Any] = {
            "file_bytes": path.stat().st_size,
            "weight_bytes": weights,
            "write_s": write_s,
            "cache": "warm (file read once before measuring; caches cannot be dropped)",
            "runs": {},
        }
        for mode in ["plain", "plain-numpy", *backends]:
            runs = [measure(mode, path) for _ in range(args.repeat)]
            results["runs"][mode] = runs
        report(results, weights, args.json)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results: dict[str, Any], weights: int, as_json: bool) -> None:
    """Print medians: throughput, ratio to the plain read, peak RSS vs the weights' size."""
    summary = {}
    plain_gbs = 0.0
    for mode, runs in results["runs"].items():
        load_s = statistics.median(r["load_s"] for r in runs)
        spread = (min(r["load_s"] for r in runs), max(r["load_s"] for r in runs))
        gbs = runs[0]["bytes"] / load_s / 1e9
        if mode == "plain":
            plain_gbs = gbs
        peak = max(r["peak_rss_kib"] for r in runs) * 1024
        base = statistics.median(r["base_rss_kib"] for r in runs) * 1024
        summary[mode] = {
            "open_s": statistics.median(r.get("open_s", 0.0) for r in runs),
            "load_s": load_s,
            "load_s_min_max": spread,
            "gb_per_s": gbs,
            "vs_plain": gbs / plain_gbs if plain_gbs else None,
            "peak_rss_bytes": peak,
            "peak_rss_over_weights": peak / weights,
            "peak_rss_minus_imports_over_weights": (peak - base) / weights,
        }
    results["summary"] = summary
    if as_json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"model: {results['file_bytes'] / _GIB:.2f} GiB file, {weights / _GIB:.2f} GiB weights;"
        f" page cache {results['cache']}"
    )
    print(
        f"{'mode':<12} {'open s':>7} {'load s':>7} {'GB/s':>7} {'x plain':>8} "
        f"{'peak RSS':>9} {'/weights':>9} {'(-imports)':>11}"
    )
    for mode, s in summary.items():
        ratio = f"{s['vs_plain']:.2f}" if s["vs_plain"] is not None else "-"
        print(
            f"{mode:<12} {s['open_s']:>7.3f} {s['load_s']:>7.3f} {s['gb_per_s']:>7.2f} "
            f"{ratio:>8} {s['peak_rss_bytes'] / _GIB:>7.2f}Gi "
            f"{s['peak_rss_over_weights']:>9.3f} "
            f"{s['peak_rss_minus_imports_over_weights']:>11.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
