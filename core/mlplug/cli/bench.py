"""Op throughput of a backend next to the plain library, measured in the same run.

Used by ``mlplug bench`` and by ``benchmarks/numpy_vs_plain.py``. Each case builds its graph
through the abstract API (so it runs on any backend) and has a plain-library twin: numpy for
everyone, and torch for a backend whose plain library is torch. The plain library of a backend
is its class attribute ``plain_library`` when it has one, else ``torch`` when its distribution
depends on torch, else numpy. Times are medians of ``repeat`` runs after one warm-up, with the
backend and the baseline measured in alternating blocks so drifting clocks hit both alike.

>>> from mlplug.cli.bench import CASES
>>> [c.name for c in CASES]
['matmul', 'elementwise', 'elementwise', 'softmax']
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from ..backend import Backend
    from ..context import Context
    from ..registry import BackendEntry
    from ..tensor import Tensor

__all__ = [
    "CASES",
    "MODES",
    "BenchCase",
    "BenchResult",
    "bench_backend",
    "environment",
    "plain_library",
]

#: ``reuse``: the graph is built once and computed repeatedly (a steady-state decode step).
#: ``rebuild``: each step opens a new context, builds the graph on the same input tensors,
#: computes and closes the context (graph-building overhead included; no upload).
MODES: Final = ("reuse", "rebuild")
#: Plain libraries with a baseline implementation of every case.
PLAIN_LIBRARIES: Final = ("numpy", "torch")

_REQUIREMENT_NAME: Final = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")

Arrays = dict[str, np.ndarray]


def _matmul_inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> Arrays:
    k, m, n = shape
    return {
        "a": rng.standard_normal((m, k), dtype=np.float32),
        "b": rng.standard_normal((n, k), dtype=np.float32),
    }


def _chain_inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> Arrays:
    numpy_shape = tuple(reversed(shape))
    return {n: rng.standard_normal(numpy_shape, dtype=np.float32) for n in ("x", "y", "z")}


def _softmax_inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> Arrays:
    return {"x": rng.standard_normal(tuple(reversed(shape)), dtype=np.float32)}


def _matmul_graph(ctx: Context, t: dict[str, Tensor]) -> Tensor:
    return t["a"].mulmat(ctx, t["b"])


def _chain_graph(ctx: Context, t: dict[str, Tensor]) -> Tensor:
    return t["x"].mul(ctx, t["y"]).add(ctx, t["z"]).silu(ctx).scale(ctx, 0.5)


def _softmax_graph(ctx: Context, t: dict[str, Tensor]) -> Tensor:
    return t["x"].softmax(ctx)


def _matmul_numpy(a: Arrays) -> np.ndarray:
    out: np.ndarray = a["b"] @ a["a"].T
    return out


def _chain_numpy(a: Arrays) -> np.ndarray:
    t: np.ndarray = a["x"] * a["y"] + a["z"]
    out: np.ndarray = t / (1.0 + np.exp(-t)) * 0.5
    return out


def _softmax_numpy(a: Arrays) -> np.ndarray:
    x = a["x"]
    e: np.ndarray = np.exp(x - x.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def _matmul_torch(t: dict[str, Any]) -> Any:
    return t["b"] @ t["a"].T


def _chain_torch(t: dict[str, Any]) -> Any:
    import torch

    return torch.nn.functional.silu(t["x"] * t["y"] + t["z"]) * 0.5


def _softmax_torch(t: dict[str, Any]) -> Any:
    import torch

    return torch.softmax(t["x"], dim=-1)


@dataclass(frozen=True)
class BenchCase:
    """One benchmarked computation, on a backend and in each plain library.

    :param name: the op family (``matmul``, ``elementwise``, ``softmax``).
    :param shape: the size: ``(K, M, N)`` for matmul, else the ggml shape of the inputs.
    :param description: what is computed, in words.
    :param work: units of work per run (floating-point operations or elements).
    :param unit: how throughput is reported.
    """

    name: str
    shape: tuple[int, ...]
    description: str
    work: float
    unit: str
    inputs: Callable[[np.random.Generator, tuple[int, ...]], Arrays]
    graph: Callable[[Context, dict[str, Tensor]], Tensor]
    numpy: Callable[[Arrays], np.ndarray]
    torch: Callable[[dict[str, Any]], Any]

    @property
    def label(self) -> str:
        """``name`` and shape, e.g. ``matmul 1024x1024x1024``."""
        return f"{self.name} {'x'.join(str(d) for d in self.shape)}"


def _matmul(k: int, m: int, n: int) -> BenchCase:
    return BenchCase(
        "matmul",
        (k, m, n),
        "f32 matrix product",
        2.0 * k * m * n,
        "GFLOP/s",
        _matmul_inputs,
        _matmul_graph,
        _matmul_numpy,
        _matmul_torch,
    )


def _chain(*shape: int) -> BenchCase:
    n = float(np.prod(shape))
    return BenchCase(
        "elementwise",
        shape,
        "silu(x*y+z)*0.5",
        n,
        "Melem/s",
        _chain_inputs,
        _chain_graph,
        _chain_numpy,
        _chain_torch,
    )


def _softmax(*shape: int) -> BenchCase:
    n = float(np.prod(shape))
    return BenchCase(
        "softmax",
        shape,
        "row softmax",
        n,
        "Melem/s",
        _softmax_inputs,
        _softmax_graph,
        _softmax_numpy,
        _softmax_torch,
    )


#: The cases ``mlplug bench`` runs: matmul 1024^3 f32, a 4096-wide elementwise chain on a
#: batch of 256 rows and on one row, softmax over 32 rows of 4096.
CASES: Final[tuple[BenchCase, ...]] = (
    _matmul(1024, 1024, 1024),
    _chain(4096, 256),
    _chain(4096),
    _softmax(4096, 32),
)


@dataclass
class BenchResult:
    """The timing of one case on one backend, with its plain-library baseline."""

    backend: str
    op: str
    shape: list[int]
    mode: str
    seconds: float = 0.0
    baseline: str = "numpy"
    baseline_seconds: float = 0.0
    ratio: float = 0.0
    numpy_seconds: float = 0.0
    numpy_ratio: float = 0.0
    throughput: float = 0.0
    unit: str = ""
    correct: bool = True
    max_abs_err: float = 0.0
    repeat: int = 0
    error: str = ""

    def to_json_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        return asdict(self)


def plain_library(entry: BackendEntry | None, backend: Backend | None = None) -> str:
    """Return the plain library ``backend`` is measured against: ``torch`` or ``numpy``.

    :param entry: the registry entry (its distribution's requirements are read).
    :param backend: the backend instance (its ``plain_library`` attribute wins).
    """
    declared = type(backend).plain_library if backend is not None else None
    if isinstance(declared, str) and declared in PLAIN_LIBRARIES:
        return declared
    if entry is not None and entry.distribution:
        import importlib_metadata

        try:
            requires = importlib_metadata.requires(entry.distribution) or []
        except importlib_metadata.PackageNotFoundError:
            requires = []
        for line in requires:
            m = _REQUIREMENT_NAME.match(line)
            if m is not None and ";" not in line and m[1].lower() == "torch":
                return "torch"
    return "numpy"


def environment() -> dict[str, Any]:
    """Return what the numbers depend on: versions, CPU count and BLAS-related variables."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count() or 0,
    }
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(fns: Sequence[Callable[[], object]], repeat: int) -> list[float]:
    """Time each function ``repeat`` times in two alternating blocks; return each one's median.

    Blocks, not single alternating runs: a library that spins its worker threads after a call
    (OpenBLAS does) would otherwise slow the next library's run. The first run of every block
    is a warm-up and is not counted.
    """
    times: list[list[float]] = [[] for _ in fns]
    halves = (repeat - repeat // 2, repeat // 2)
    for count in halves:
        for i, fn in enumerate(fns):
            fn()
            times[i].extend(_time(fn) for _ in range(count))
    return [statistics.median(t) for t in times]


@dataclass
class _Inputs:
    arrays: Arrays
    torch: dict[str, Any] = field(default_factory=dict)


def _upload(ctx: Context, arrays: Arrays) -> dict[str, Tensor]:
    return {name: ctx.from_floats(a) for name, a in arrays.items()}


def _run_case(
    backend: Backend,
    case: BenchCase,
    mode: str,
    baseline: str,
    inputs: _Inputs,
    repeat: int,
) -> BenchResult:
    result = BenchResult(
        backend=backend.name,
        op=case.name,
        shape=list(case.shape),
        mode=mode,
        baseline=baseline,
        unit=case.unit,
        repeat=repeat,
    )
    arrays = inputs.arrays

    def numpy_fn() -> object:
        return case.numpy(arrays)

    fns: list[Callable[[], object]] = []
    with backend.new_context() as ctx:
        inputs_t = _upload(ctx, arrays)
        out = case.graph(ctx, inputs_t)
        ctx.forward(out)
        if mode == "reuse":

            def backend_fn() -> object:
                ctx.compute(out)
                return None

        else:

            def backend_fn() -> object:
                with backend.new_context() as step:
                    step.compute(case.graph(step, inputs_t))
                return None

        ctx.compute(out)
        got = out.to_numpy()
        expected = case.numpy(arrays)
        if got is not None:
            err = float(np.max(np.abs(got.reshape(expected.shape) - expected)))
            scale = float(np.max(np.abs(expected))) or 1.0
            result.max_abs_err = err
            result.correct = err <= 1e-3 * scale
        fns = [backend_fn, numpy_fn]
        if baseline == "torch":

            def torch_fn() -> object:
                return case.torch(inputs.torch)

            fns.append(torch_fn)
        medians = _interleaved(fns, repeat)
    result.seconds, result.numpy_seconds = medians[0], medians[1]
    result.baseline_seconds = medians[2] if baseline == "torch" else medians[1]
    result.ratio = result.seconds / result.baseline_seconds
    result.numpy_ratio = result.seconds / result.numpy_seconds
    scale = 1e9 if case.unit.startswith("G") else 1e6
    result.throughput = case.work / result.seconds / scale
    return result


def bench_backend(
    name: str,
    *,
    repeat: int = 5,
    modes: Sequence[str] = MODES,
    cases: Sequence[BenchCase] = CASES,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[BenchResult]:
    """Benchmark every case in every mode on backend ``name`` against its plain library.

    A case the backend does not support gives a result with ``error`` set.

    :param name: an installed backend.
    :param repeat: timed runs per measurement (after one warm-up); the median is reported.
    :param modes: a subset of :data:`MODES`.
    :param progress: called as ``progress(done, total, label)`` before each measurement.
    :raises BackendLoadError: if the backend cannot be created.
    """
    from ..errors import MlplugError
    from ..registry import manager

    if repeat < 1:
        msg = f"repeat must be at least 1, got {repeat}"
        raise ValueError(msg)
    entry = manager().get(name)
    rng = np.random.default_rng(seed)
    results: list[BenchResult] = []
    total = len(cases) * len(modes)
    with manager().new_backend(None, backend=name) as backend:
        baseline = plain_library(entry, backend)
        for i, case in enumerate(cases):
            inputs = _Inputs(case.inputs(rng, case.shape))
            if baseline == "torch":
                import torch

                inputs.torch = {k: torch.from_numpy(v) for k, v in inputs.arrays.items()}
            for j, mode in enumerate(modes):
                if progress is not None:
                    progress(i * len(modes) + j, total, f"{name}: {case.label} ({mode})")
                try:
                    results.append(_run_case(backend, case, mode, baseline, inputs, repeat))
                except MlplugError as exc:
                    results.append(
                        BenchResult(
                            backend=name,
                            op=case.name,
                            shape=list(case.shape),
                            mode=mode,
                            baseline=baseline,
                            unit=case.unit,
                            correct=False,
                            error=f"{type(exc).__name__}: {exc}",
                        )
                    )
    if progress is not None:
        progress(total, total, f"{name}: done")
    return results


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def format_results(results: Sequence[BenchResult], goal: float | None = None) -> str:
    """Return the results as a table; ``RATIO`` is backend time / plain-library time."""
    from ._common import format_table

    headers = ["BACKEND", "OP", "SHAPE", "MODE", "TIME", "PLAIN", "RATIO", "vs NUMPY", "THROUGHPUT"]
    if goal is not None:
        headers.append(f"<= {goal:g}x")
    rows = []
    for r in results:
        shape = "x".join(str(d) for d in r.shape)
        if r.error:
            rows.append([r.backend, r.op, shape, r.mode, "-", "-", "-", "-", r.error])
            continue
        row = [
            r.backend,
            r.op,
            shape,
            r.mode,
            _ms(r.seconds),
            f"{_ms(r.baseline_seconds)} ({r.baseline})",
            f"{r.ratio:.2f}x",
            f"{r.numpy_ratio:.2f}x",
            f"{r.throughput:,.1f} {r.unit}",
        ]
        if not r.correct:
            row[-1] += f"  WRONG RESULT (max abs err {r.max_abs_err:.3g})"
        if goal is not None:
            row.append("yes" if r.ratio <= goal else "no")
        rows.append(row)
    return format_table(headers, rows)


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark each chosen (default: every installed) backend; exit 1 if one fails."""
    from ..errors import MlplugError
    from ..registry import manager
    from ._common import (
        CommandError,
        Progress,
        check_backend_names,
        dump_json,
        warn,
        warn_conflicts,
    )

    if not args.backend:
        warn_conflicts()
    names = (
        check_backend_names(args.backend)
        if args.backend
        else [e.name for e in manager().backends()]
    )
    if not names:
        msg = "no backend plugin is installed; install one, e.g.: pip install mlplug-cpu-numpy"
        raise CommandError(msg)
    repeat = args.repeat if args.repeat is not None else (2 if args.quick else 5)
    modes = ("reuse",) if args.quick else MODES
    progress = Progress(enabled=not args.quiet)
    results: list[BenchResult] = []
    failed: list[str] = []
    try:
        for name in names:
            try:
                results += bench_backend(name, repeat=repeat, modes=modes, progress=progress)
            except MlplugError as exc:
                progress.finish()
                warn(f"backend {name!r} could not be benchmarked: {exc}")
                failed.append(name)
    finally:
        progress.finish()
    if args.json:
        dump_json(
            {
                "backends": names,
                "environment": environment(),
                "repeat": repeat,
                "results": [r.to_json_dict() for r in results],
            }
        )
    else:
        env = environment()
        extra = "".join(f", {k}={env[k]}" for k in env if k.isupper())
        print(f"median of {repeat} runs; numpy {env['numpy']}, {env['cpus']} CPUs{extra}")
        print("RATIO = backend time / plain-library time (lower is faster)")
        print(format_results(results))
    bad = failed or [f"{r.backend} {r.op}" for r in results if not r.correct and not r.error]
    return 1 if bad else 0
