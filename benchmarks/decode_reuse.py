"""Decode speed with built passes reused and without (every step builds its graph).

Loads a model once per backend, then alternates rounds of greedy single-token decode with
``Decoder.reuse_passes`` on and off (same process, same cache contents), and reports the
median tokens per second of each. A round starts after a short prompt and decodes ``-n`` tokens;
the first round of each setting is a warm-up and is not counted.

Usage::

    python benchmarks/decode_reuse.py MODEL.gguf [MODEL.gguf ...] [--backends ggml,cpu_numpy,torch]
        [-n 32] [--rounds 3] [--threads 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _round(model: object, n: int, prompt: list[int]) -> float:
    """Decode ``n`` tokens after ``prompt``; return tokens per second of the decode."""
    model.reset()  # type: ignore[attr-defined]
    logits = model.forward(prompt, range(len(prompt)))  # type: ignore[attr-defined]
    tok = int(np.argmax(logits[-1]))
    t0 = time.perf_counter()
    for i in range(n):
        row = model.forward([tok], [len(prompt) + i])[0]  # type: ignore[attr-defined]
        tok = int(np.argmax(row))
    return n / (time.perf_counter() - t0)


def measure(path: str, backend: str, n: int, rounds: int, threads: int) -> dict[str, float]:
    import mlplug as ml
    from mlplug.models import load_model

    params = ml.BackendParams(alloc_memory=True, num_threads=threads)
    be = ml.new_backend(path, params, backend=backend)
    be.load()
    speeds: dict[bool, list[float]] = {True: [], False: []}
    with be, load_model(be, num_ctx=1024) as model:
        prompt = [(7 * i + 3) % model.vocab_size for i in range(16)]
        for r in range(rounds + 1):
            for reuse in (True, False) if r % 2 == 0 else (False, True):
                model.reuse_passes = reuse  # type: ignore[attr-defined]
                tps = _round(model, n, prompt)
                if r:
                    speeds[reuse].append(tps)
    on, off = statistics.median(speeds[True]), statistics.median(speeds[False])
    return {"reuse_tok_s": on, "build_tok_s": off, "ratio": on / off}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--backends", default="ggml,cpu_numpy,torch")
    parser.add_argument("-n", type=int, default=32, help="tokens decoded per round")
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds per setting")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for path in args.models:
        name = Path(path).name
        for b in args.backends.split(","):
            r = measure(path, b, args.n, args.rounds, args.threads)
            results.setdefault(name, {})[b] = r
            if not args.json:
                print(
                    f"{name:28s} {b:10s} reuse {r['reuse_tok_s']:8.1f} tok/s  "
                    f"build {r['build_tok_s']:8.1f} tok/s  ratio {r['ratio']:.2f}",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
