"""Dump a model's logits at every prompt position and greedy decode step, or compare two dumps.

Used to check that a change leaves the numerics alone: run ``dump`` with the tree before the
change and with the tree after it (each in its own environment), then ``compare``. Only the
public Python API is used, so the script runs on older trees too.

Usage::

    python benchmarks/dump_logits.py dump MODEL.gguf OUT_DIR --backend cpu_numpy \\
        [--prompt 600] [-n 64] [--seed 0] [--num-ctx 2048]
    python benchmarks/dump_logits.py compare A_DIR B_DIR

A dump holds ``prompt.npy`` (logits of every prompt position), ``decode.npy`` (logits of every
decode step) and ``tokens.json`` (prompt and greedy tokens). ``compare`` prints, per part, the
largest ``max|a-b| / max|b|`` over positions, whether the greedy tokens agree, and exits 1 when
a relative difference exceeds ``--tol`` (default 1e-3) or a token differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def dump(args: argparse.Namespace) -> int:
    import mlplug as ml
    from mlplug.models import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    be = ml.new_backend(args.model, ml.BackendParams(alloc_memory=True), backend=args.backend)
    be.load()
    with be, load_model(be, num_ctx=args.num_ctx) as model:
        rng = np.random.default_rng(args.seed)
        prompt = rng.integers(3, model.vocab_size, size=args.prompt).tolist()
        logits = np.lib.format.open_memmap(
            out / "prompt.npy", mode="w+", dtype=np.float32, shape=(len(prompt), model.vocab_size)
        )
        step = model.cache.max_batch  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        for s in range(0, len(prompt), step):
            e = min(s + step, len(prompt))
            logits[s:e] = model.forward(prompt[s:e], range(s, e), outputs=range(e - s))
        logits.flush()
        t1 = time.perf_counter()
        tok = int(np.argmax(logits[-1]))
        generated = [tok]
        steps = []
        for i in range(args.n):
            p = len(prompt) + i
            row = model.forward([tok], [p])[0]
            steps.append(row)
            tok = int(np.argmax(row))
            generated.append(tok)
        t2 = time.perf_counter()
        np.save(out / "decode.npy", np.stack(steps) if steps else np.zeros((0, 0), np.float32))
    info = {"prompt": prompt, "generated": generated, "prompt_s": t1 - t0, "decode_s": t2 - t1}
    (out / "tokens.json").write_text(json.dumps(info))
    print(f"{args.backend}: prompt {t1 - t0:.2f}s, {args.n} decode steps {t2 - t1:.2f}s")
    return 0


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest over rows of max|a-b| / max|b|."""
    if a.size == 0:
        return 0.0
    diff = np.abs(a.astype(np.float64) - b).max(axis=-1)
    scale = np.maximum(np.abs(b.astype(np.float64)).max(axis=-1), 1e-30)
    return float((diff / scale).max())


def compare(args: argparse.Namespace) -> int:
    a, b = Path(args.a), Path(args.b)
    bad = False
    for part in ("prompt", "decode"):
        # a shorter run is compared with the start of a longer one
        pa, pb = (
            np.load(a / f"{part}.npy", mmap_mode="r"),
            np.load(b / f"{part}.npy", mmap_mode="r"),
        )
        n = min(len(pa), len(pb))
        rel = _rel(np.asarray(pa[:n]), np.asarray(pb[:n]))
        bad |= rel > args.tol
        print(f"{part}: max rel diff {rel:.3g}")
    ta = json.loads((a / "tokens.json").read_text())
    tb = json.loads((b / "tokens.json").read_text())
    n = min(len(ta["generated"]), len(tb["generated"]))
    same = ta["generated"][:n] == tb["generated"][:n] and ta["prompt"] == tb["prompt"]
    print(f"greedy tokens identical: {same} ({n} tokens)")
    return 0 if same and not bad else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="write a model's logits")
    d.add_argument("model")
    d.add_argument("out")
    d.add_argument("--backend", required=True)
    d.add_argument("--prompt", type=int, default=600, help="prompt tokens (random, seeded)")
    d.add_argument("-n", type=int, default=64, help="greedy decode steps")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--num-ctx", type=int, default=2048)
    c = sub.add_parser("compare", help="compare two dumps (B is the reference)")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--tol", type=float, default=1e-3)
    args = parser.parse_args(argv)
    return dump(args) if args.cmd == "dump" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
