"""The speed table: every mlplug backend against llama.cpp on the tiny llama (f32, f16, q8_0)
and on Gemma 3 270M Q4_K_M, as ratios measured in the same run.

For each file, :func:`gemma_vs_llamacpp.speed` loads llama.cpp (llama-cpp-python) and every
backend, each in a child process of its own (``--in-process``: the backends in this one), warms
them up, then times a ``--prompt``-token forward pass and ``-n`` greedy decode steps on each
engine in turn for ``--repeat`` alternating rounds (2 threads, f16 KV cache). The tiny llama
files are written by ``tiny_llama.py`` into ``--dir`` (a temporary folder by default; written
once and reused when ``--dir`` is given).

Usage::

    python benchmarks/llama_vs_llamacpp.py [--type f32|f16|q8_0]... [--no-gemma]
        [--backend B[+f32]]... [--prompt 512] [-n 64] [--repeat 3] [--dir D] [--in-process]
        [--json]

Set ``MLPLUG_GGML_LIB`` to run the ggml plugin on another ggml build (llama-cpp-python's own,
for instance; see the README).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from gemma_vs_llamacpp import installed_backends, model_path, speed
from tiny_llama import TYPES, write_tiny_llama


def ratios(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per mlplug backend: prompt and decode tokens/s over llama.cpp's in ``report``."""
    engines = report["engines"]
    ref = engines["llama.cpp"]
    return {
        name: {
            "prompt": v["prompt_tokens_per_s"] / ref["prompt_tokens_per_s"],
            "decode": v["decode_tokens_per_s"] / ref["decode_tokens_per_s"],
        }
        for name, v in engines.items()
        if name != "llama.cpp"
    }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """Print one row per (file, backend): tokens/s and the ratio to llama.cpp."""
    print(
        f"{'model':<14} {'engine':<13} {'prompt tok/s':>12} {'x llama.cpp':>11} "
        f"{'decode tok/s':>12} {'x llama.cpp':>11}"
    )
    for label, report in results.items():
        ref = report["engines"]["llama.cpp"]
        for name, v in report["engines"].items():
            p, d = v["prompt_tokens_per_s"], v["decode_tokens_per_s"]
            print(
                f"{label:<14} {name:<13} {p:>12.1f} {p / ref['prompt_tokens_per_s']:>11.3f} "
                f"{d:>12.1f} {d / ref['decode_tokens_per_s']:>11.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    """Write the files, run the speed comparison on each, print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--type", action="append", dest="types", choices=TYPES, help="tiny llama matrix types"
    )
    parser.add_argument("--no-gemma", action="store_true", help="leave Gemma 3 270M out")
    parser.add_argument("--gemma", help="the Gemma 3 file (default: as gemma_vs_llamacpp.py)")
    parser.add_argument(
        "--backend", action="append", dest="backends", help="repeatable (default: all)"
    )
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens (default 512)")
    parser.add_argument("-n", type=int, default=64, help="decode steps (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--dir", type=Path, help="where the tiny llama files are kept")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the mlplug backends in this process (default: a child process each)",
    )
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    if args.prompt < 1 or args.n < 1 or args.repeat < 1:
        parser.error("--prompt, -n and --repeat must be at least 1")
    backends = args.backends or installed_backends()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for kind in args.types or list(TYPES):
            path = folder / f"tiny-llama-{kind}.gguf"
            if not path.is_file():
                print(f"writing {path}", file=sys.stderr, flush=True)
                write_tiny_llama(path, kind)
            print(f"== tiny llama {kind}", file=sys.stderr, flush=True)
            results[f"llama {kind}"] = speed(
                path, backends, args.prompt, args.n, args.repeat, in_process=args.in_process
            )
        if not args.no_gemma:
            print("== Gemma 3 270M Q4_K_M", file=sys.stderr, flush=True)
            gemma = model_path(args.gemma)
            results["gemma3 q4_k_m"] = speed(
                gemma, backends, args.prompt, args.n, args.repeat, in_process=args.in_process
            )
    if args.json:
        out = {k: {**v, "ratios": ratios(v)} for k, v in results.items()}
        print(json.dumps(out, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
