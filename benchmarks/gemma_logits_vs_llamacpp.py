"""Gemma 3 270M Q4_K_M: how close each mlplug backend's logits and greedy tokens are to llama.cpp.

For each prompt (token ids tokenised by llama.cpp, BOS first; the last is longer than the
512-key sliding window, so the local layers' window matters):

* **logits**: llama.cpp greedily continues the prompt ``-n`` tokens; both engines then run that
  whole sequence (prompt and continuation) in one forward pass and give the logits at every
  position. Reported: the max relative difference, ``max |a - b| / max |b|`` over a position's
  vocabulary, at the worst position; and the share of positions whose argmax agrees.
* **greedy**: the number of leading tokens of llama.cpp's greedy continuation that are also the
  engine's own greedy choice (the argmax of its logits above: up to the first difference both
  engines have seen the same tokens, so this is where a free greedy run of the engine parts),
  and at the first difference llama.cpp's and the engine's gap between the best and the
  second-best logit there (a small gap is a near-tie that rounding alone can flip).
  ``--generate`` also runs each engine's own greedy generation (one-token decode steps, slow on
  backends that dequantise per call) and reports how many of its tokens equal llama.cpp's.

llama.cpp (llama-cpp-python, 2 threads, f16 KV cache, batch 512) runs in a child process, as in
``gemma_vs_llamacpp.py``, whose file lookup this uses (``--model``, ``$MLPLUG_GEMMA3_GGUF``, ...).

Usage::

    python benchmarks/gemma_logits_vs_llamacpp.py [--backend B]... [-n 16] [--long 700] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from gemma_vs_llamacpp import (
    PROMPT_TEXT,
    LlamaCpp,
    installed_backends,
    model_path,
    open_mlplug,
)

SHORT_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village by the sea,",
]


def rel_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per position: ``max |a - b| / max |b|`` over the vocabulary."""
    out: np.ndarray = np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)
    return out


def agree(a: list[int], b: list[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def top2_gap(row: np.ndarray) -> float:
    """Best logit minus the second best."""
    top = np.partition(row, -2)[-2:]
    return float(top[1] - top[0])


def compare(
    path: Path, backends: list[str], n_gen: int, n_long: int, *, generate: bool = False
) -> dict[str, Any]:
    """Logits and greedy tokens of every backend against llama.cpp, for every prompt."""
    n_ctx = max(n_long, 64) + n_gen + 8
    refs: list[dict[str, Any]] = []
    with LlamaCpp(path, n_ctx, all_logits=True) as llm, tempfile.TemporaryDirectory() as tmp:
        prompts = [llm.ask(op="tokenize", text=t)["ids"] for t in SHORT_PROMPTS]
        text = PROMPT_TEXT * (n_long // 40 + 2)
        prompts.append(llm.ask(op="tokenize", text=text)["ids"][:n_long])
        for i, ids in enumerate(prompts):
            tokens = llm.ask(op="run", ids=ids, n=n_gen - 1)["tokens"]
            out = str(Path(tmp) / f"ref{i}.npy")
            llm.ask(op="logits", ids=ids + tokens[:-1], out=out)
            refs.append({"ids": ids, "tokens": tokens, "logits": np.load(out)})
    report: dict[str, Any] = {
        "model": str(path),
        "prompt_lengths": [len(r["ids"]) for r in refs],
        "greedy_of": n_gen,
        "llamacpp_greedy": [r["tokens"] for r in refs],
        "backends": {},
    }
    greedy: dict[str, list[list[int]]] = {}
    for name in backends:
        be, model = open_mlplug(path, name, n_ctx)
        rows = []
        try:
            for ref in refs:
                ids, want_tokens, want = ref["ids"], ref["tokens"], ref["logits"]
                seq = ids + want_tokens[:-1]
                model.reset()
                got = model.forward(seq, range(len(seq)), outputs=range(len(seq)))
                ours = got[len(ids) - 1 :].argmax(1).tolist()
                rel = rel_diff(got, want)
                k = agree(ours, want_tokens)
                greedy.setdefault(name, []).append(ours[: k + 1])
                row: dict[str, Any] = {
                    "prompt_tokens": len(ids),
                    "max_rel_diff": float(rel.max()),
                    "worst_position": int(rel.argmax()),
                    "max_rel_diff_prompt": float(rel[: len(ids)].max()),
                    "argmax_equal": float(np.mean(got.argmax(1) == want.argmax(1))),
                    "greedy_agree": k,
                }
                if k < n_gen:  # where it parts: llama.cpp's and our top-2 gap at that step
                    at = len(ids) - 1 + k
                    row["first_difference"] = {
                        "step": k,
                        "llamacpp_token": want_tokens[k],
                        "our_token": ours[k],
                        "llamacpp_top2_gap": top2_gap(want[at]),
                        "our_top2_gap": top2_gap(got[at]),
                        "rel_diff_there": float(rel[at]),
                    }
                if generate:
                    tokens = model.generate(ids, n_gen).tokens
                    row["generated_agree"] = agree(tokens, want_tokens)
                    row["generated_tokens"] = tokens
                rows.append(row)
                print(
                    name,
                    {k: v for k, v in row.items() if k != "generated_tokens"},
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            model.close()
            be.close()
        report["backends"][name] = rows
    names = list(greedy)
    # Each backend's greedy choices through its first difference from llama.cpp: the backends
    # agree with each other up to where the first of them parts from the other.
    report["cross_backend_greedy_agree"] = [
        min(agree(greedy[n][i], greedy[names[0]][i]) for n in names) for i in range(len(refs))
    ]
    return report


def print_table(report: dict[str, Any]) -> None:
    """Print the agreement report as a table."""
    print(f"prompt lengths (tokens): {report['prompt_lengths']}; {report['greedy_of']} greedy")
    print(
        f"{'backend':<10} {'prompt':>6} {'max rel diff':>12} {'(prompt)':>9} {'argmax eq':>9} "
        f"{'greedy':>7}  first difference (llama.cpp top-2 gap / ours)"
    )
    for name, rows in report["backends"].items():
        for r in rows:
            diff = r.get("first_difference")
            where = (
                f"step {diff['step']}: {diff['llamacpp_token']} vs {diff['our_token']}, gap "
                f"{diff['llamacpp_top2_gap']:.3f} / {diff['our_top2_gap']:.3f}"
                if diff
                else "-"
            )
            print(
                f"{name:<10} {r['prompt_tokens']:>6} {r['max_rel_diff']:>12.2e} "
                f"{r['max_rel_diff_prompt']:>9.2e} {r['argmax_equal']:>9.3f} "
                f"{r['greedy_agree']:>3}/{report['greedy_of']:<3}  {where}"
            )
    print(
        f"greedy tokens equal on every backend, per prompt: {report['cross_backend_greedy_agree']}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print it (a table, or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", help="the GGUF file")
    parser.add_argument(
        "--backend", action="append", dest="backends", help="repeatable (default: all)"
    )
    parser.add_argument("-n", type=int, default=16, help="greedy tokens (default 16)")
    parser.add_argument(
        "--long", type=int, default=700, help="tokens of the long prompt (default 700, > 512)"
    )
    parser.add_argument(
        "--generate", action="store_true", help="also run each engine's own greedy generation"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.n < 1 or args.long < 1:
        parser.error("-n and --long must be at least 1")
    path = model_path(args.model)
    report = compare(
        path, args.backends or installed_backends(), args.n, args.long, generate=args.generate
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
