"""Where a decode step's (or a prompt's) time goes, op by op, on a Python-kernel backend.

Loads a model on one backend (``torch`` or ``cpu_numpy``: the plugins whose ``kernels`` table is
a dict of Python callables), runs a prompt (512 tokens, as the speed table), decodes a few
warm-up tokens, then times every kernel call during
``-n`` greedy decode steps. Prints per-token milliseconds by op (and, with ``--shapes``, by op and
operand shapes), the share of the step they make up, and the time spent outside the kernels
(graph building, the model layer, reading logits). The step is timed twice, without the timers
(the figure to compare) and with them (about 1 µs per kernel call more, and the base of the
shares).

The machines these run on are noisy: to compare two versions of a kernel, alternate them token
by token in one process rather than run this twice.

Usage::

    python benchmarks/op_profile.py MODEL.gguf [--backend torch] [-n 32] [--prompt 512]
        [--threads 2] [--shapes] [--top 25] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np


def _key(t: Any, shapes: bool) -> str:
    if not shapes:
        return str(t.op)
    srcs = " ".join(f"{s.dtype.name.lower()}{list(s.shape)}" for s in t.src)
    return f"{t.op} {srcs}"


def profile(
    path: str,
    backend: str,
    n: int,
    threads: int,
    shapes: bool,
    prompt_len: int = 512,
    phase: str = "decode",
) -> dict[str, Any]:
    """Decode ``n`` tokens after a ``prompt_len``-token prompt on ``backend`` (or, with
    ``phase="prompt"``, run that prompt ``n`` times, each on a fresh cache); return ms per
    step (a token, or a whole prompt) by op and the step's total."""
    import mlplug as ml
    from mlplug.models import load_model

    params = ml.BackendParams(alloc_memory=True, num_threads=threads)
    be = ml.new_backend(path, params, backend=backend)
    table = getattr(type(be), "kernels", None)
    if not isinstance(table, dict):
        msg = f"{backend}: no Python kernel table to time (ggml runs its graph in C)"
        raise SystemExit(msg)
    be.load()
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    timing = [False]

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(ctx: Any, t: Any) -> Any:
            if not timing[0]:
                return fn(ctx, t)
            t0 = time.perf_counter()
            try:
                return fn(ctx, t)
            finally:
                k = _key(t, shapes)
                spent[k] += time.perf_counter() - t0
                calls[k] += 1

        return run

    saved = dict(table)
    table.update({name: timed(name, fn) for name, fn in saved.items()})
    try:
        if phase == "prompt":
            with be:
                totals = _prompt_steps(be, n, prompt_len, timing)
        else:
            with be, load_model(be, num_ctx=1024) as model:
                totals = _decode_steps(model, n, prompt_len, timing)
    finally:
        table.clear()
        table.update(saved)
    ops = {k: {"ms": 1e3 * v / n, "calls": calls[k] / n} for k, v in spent.items()}
    return {
        "backend": backend,
        "phase": phase,
        "step_ms": 1e3 * totals[0] / n,
        "timed_step_ms": 1e3 * totals[1] / n,
        "ops": ops,
    }


def _prompt(vocab: int, length: int) -> list[int]:
    return [(7 * i + 3) % vocab for i in range(length)]


def _decode_steps(model: Any, n: int, prompt_len: int, timing: list[bool]) -> list[float]:
    """The prompt, 4 warm-up tokens, then ``n`` decode steps untimed and ``n`` timed by op."""
    prompt = _prompt(model.vocab_size, prompt_len)
    logits = model.forward(prompt, range(len(prompt)))
    tok = int(np.argmax(logits[-1]))
    pos = len(prompt)
    for _ in range(4):  # warm-up: caches, memo, first-use allocations
        tok = int(np.argmax(model.forward([tok], [pos])[0]))
        pos += 1
    totals = []
    for timed_now in (False, True):  # the step without the timers, then timed by op
        timing[0] = timed_now
        t0 = time.perf_counter()
        for _ in range(n):
            tok = int(np.argmax(model.forward([tok], [pos])[0]))
            pos += 1
        totals.append(time.perf_counter() - t0)
    return totals


def _prompt_steps(be: Any, n: int, prompt_len: int, timing: list[bool]) -> list[float]:
    """One warm-up prompt, then ``n`` prompts untimed and ``n`` timed by op, each on a fresh
    model (so a fresh, empty cache), as the speed table runs its prompt."""
    from mlplug.models import load_model

    def run() -> None:
        with load_model(be, num_ctx=1024) as model:
            prompt = _prompt(model.vocab_size, prompt_len)
            model.forward(prompt, range(len(prompt)))

    run()
    totals = []
    for timed_now in (False, True):
        timing[0] = timed_now
        t0 = time.perf_counter()
        for _ in range(n):
            run()
        totals.append(time.perf_counter() - t0)
    return totals


def main(argv: list[str] | None = None) -> int:
    """Run the profile and print it (or JSON)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--backend", default="torch")
    parser.add_argument(
        "-n",
        type=int,
        default=32,
        help="steps timed: tokens, or prompts with --phase prompt",
    )
    parser.add_argument(
        "--phase",
        choices=("decode", "prompt"),
        default="decode",
        help="time decode steps (default) or whole prompts",
    )
    parser.add_argument(
        "--prompt", type=int, default=512, help="prompt tokens first (default 512, as the table)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (0: default)")
    parser.add_argument("--shapes", action="store_true", help="split ops by operand shapes")
    parser.add_argument("--top", type=int, default=25, help="rows printed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("-n must be at least 1")
    r = profile(
        args.model, args.backend, args.n, args.threads, args.shapes, args.prompt, args.phase
    )
    if args.json:
        print(json.dumps(r))
        return 0
    step = r["timed_step_ms"]
    rows = sorted(r["ops"].items(), key=lambda kv: -kv[1]["ms"])
    unit = "token" if r["phase"] == "decode" else "prompt"
    print(
        f"{r['backend']}: {r['step_ms']:.2f} ms/{unit}; "
        f"{step:.2f} with the timers (shares below are of this)"
    )
    print(f"{'op':<60} {'ms/' + unit:>9} {'share':>6} {'calls':>6}")
    for k, v in rows[: args.top]:
        print(f"{k[:60]:<60} {v['ms']:>9.3f} {v['ms'] / step:>6.1%} {v['calls']:>6.0f}")
    inside = sum(v["ms"] for v in r["ops"].values())
    print(f"{'(outside the kernels)':<60} {step - inside:>9.3f} {(step - inside) / step:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
