"""Products with quantised weights on cpu_numpy and torch, against the f32 product of the same size.

For each backend, weight shape (4096x4096 and 1024x4096, rows x K), column count (1: a decode
step; 32: a short prompt) and weight type, one graph ``mulmat(weight, x)`` is built once and
computed repeatedly, next to the same graph with an f32 weight; the two are timed in alternating
rounds and the report gives the median time of each and their ratio (quantised / f32; below the
ratio of the bytes read, decoding costs less than it saves). The weights are random blocks
with small finite scales; the values do not matter to the time.

``whole`` is what the backends did before tiles: dequantise the whole weight with the host codec
(:func:`mlplug.quants.dequantize`) and multiply, timed in numpy in the same rounds, as a ratio
to the same f32 product. The opt-in float32 copy (``MLPLUG_DEQUANTIZE=f32``) multiplies with an
f32 weight: its ratio is 1 by construction, for 4x (Q8_0) to 8x (Q4_*) the weight's memory.

Usage::

    python benchmarks/quant_matmul.py [--backend B]... [--type T]... [--repeat 5] [--quick]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import mlplug as ml
from mlplug import DType
from mlplug.dtypes import TRAITS
from mlplug.quants import dequantize

TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16")
SHAPES = ((4096, 4096), (1024, 4096))
COLUMNS = (1, 32)
#: Byte offsets of the f16 scales in a block of each type (set to small finite numbers).
_SCALES = {"Q4_1": (0, 2), "Q5_1": (0, 2), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def random_weight(rng: np.random.Generator, dtype: DType, m: int, k: int) -> np.ndarray:
    """Random raw rows ``(m, row_bytes)`` of ``dtype`` with small finite scales."""
    if dtype == DType.F16:
        return rng.standard_normal((m, k)).astype(np.float16).view(np.uint8)
    if dtype == DType.BF16:
        bits = rng.standard_normal((m, k)).astype(np.float32).view(np.uint32) >> 16
        return bits.astype(np.uint16).view(np.uint8)
    tr = TRAITS[dtype]
    raw = rng.integers(0, 256, size=(m, k // tr.block_size, tr.type_size), dtype=np.uint8)
    scales = rng.uniform(1e-3, 1e-2, size=raw.shape[:2]).astype(np.float16)
    for o in _SCALES.get(dtype.name, (0,)):
        raw[..., o : o + 2] = scales.view(np.uint8).reshape(*raw.shape[:2], 2)
    return raw.reshape(m, -1)


def best_of(fn: Callable[[], object], n: int) -> float:
    """The fastest of ``n`` calls (seconds): one sample of a round."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class Product:
    """One graph ``mulmat(weight, x)`` in its own context, built once; calling computes it."""

    def __init__(
        self, be: ml.Backend, xv: np.ndarray, dtype: DType, raw: np.ndarray, m: int
    ) -> None:
        k = xv.shape[1]
        self.ctx = be.new_context()
        x = self.ctx.from_floats(xv, k, xv.shape[0])
        self.out = self.ctx.from_bytes(dtype, raw, k, m).mulmat(self.ctx, x)
        self()  # warm-up

    def __call__(self) -> None:
        self.ctx.compute(self.out)

    def close(self) -> None:
        self.ctx.close()


def product(
    be: ml.Backend, xv: np.ndarray, dtype: DType, raw: np.ndarray, m: int, k: int
) -> Product:
    """Build the product of a weight of ``m`` rows of ``k`` (raw bytes) with ``xv``."""
    if xv.shape[1] != k:
        msg = f"activations of K = {xv.shape[1]} for a weight of K = {k}"
        raise ValueError(msg)
    return Product(be, xv, dtype, raw, m)


def host_whole(xv: np.ndarray, raw: np.ndarray, t: str) -> np.ndarray:
    """The product as the backends made it before tiles: dequantise all, then multiply."""
    if t == "F16":
        w = raw.view(np.float16).astype(np.float32)
    elif t == "BF16":
        w = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        w = dequantize(raw, DType[t])
    return xv @ w.T


def run_backend(name: str, types: list[str], repeat: int, quick: bool) -> list[dict[str, Any]]:
    """Time every (shape, columns, type) case on backend ``name``; return the result rows."""
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    with ml.new_backend(None, ml.BackendParams(num_threads=2), backend=name) as be:
        for m, k in SHAPES[:1] if quick else SHAPES:
            w = rng.standard_normal((m, k)).astype(np.float32)
            raws = {t: random_weight(rng, DType[t], m, k) for t in types}
            for n in COLUMNS:
                xv = rng.standard_normal((n, k)).astype(np.float32)
                graphs = {"f32": product(be, xv, DType.F32, w.view(np.uint8), m, k)}
                graphs |= {t: product(be, xv, DType[t], raws[t], m, k) for t in types}
                samples: dict[str, list[float]] = {t: [] for t in graphs}
                whole: dict[str, list[float]] = {t: [] for t in types}
                for _ in range(repeat):
                    for t in types:
                        samples["f32"].append(best_of(graphs["f32"], 3))
                        samples[t].append(best_of(graphs[t], 3))
                        if name == "cpu_numpy":
                            whole[t].append(best_of(partial(host_whole, xv, raws[t], t), 1))
                for g in graphs.values():
                    g.close()
                f32_med = statistics.median(samples["f32"])
                for t in types:
                    med = statistics.median(samples[t])
                    row = {
                        "backend": name,
                        "rows": m,
                        "k": k,
                        "columns": n,
                        "type": t,
                        "f32_ms": round(f32_med * 1e3, 3),
                        "quant_ms": round(med * 1e3, 3),
                        "ratio": round(med / f32_med, 2),
                    }
                    if whole[t]:
                        row["whole_ratio"] = round(statistics.median(whole[t]) / f32_med, 2)
                    rows.append(row)
                    print(
                        f"{name:10s} {m}x{k} n={n:<3d} {t:5s} f32 {row['f32_ms']:8.2f} ms  "
                        f"quant {row['quant_ms']:8.2f} ms  ratio {row['ratio']:6.2f}"
                        + (f"  whole {row['whole_ratio']:6.2f}" if "whole_ratio" in row else ""),
                        file=sys.stderr,
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", action="append", choices=("cpu_numpy", "torch"))
    ap.add_argument("--type", action="append", choices=TYPES)
    ap.add_argument("--repeat", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--quick", action="store_true", help="4096x4096 only")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    installed = set(ml.available_backends()) if hasattr(ml, "available_backends") else None
    backends = args.backend or [
        b for b in ("cpu_numpy", "torch") if installed is None or b in installed
    ]
    rows: list[dict[str, Any]] = []
    for name in backends:
        rows += run_backend(name, args.type or list(TYPES), args.repeat, args.quick)
    if args.json:
        print(json.dumps({"rows": rows, "machine_note": "ratios from alternating rounds"}))
    else:
        print("| backend | weight | columns | type | f32 ms | quant ms | quant/f32 | whole/f32 |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['backend']} | {r['rows']}x{r['k']} | {r['columns']} | {r['type']} | "
                f"{r['f32_ms']} | {r['quant_ms']} | {r['ratio']} | {r.get('whole_ratio', '')} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
