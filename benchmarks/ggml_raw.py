"""Baseline: the minimal direct ggml call sequence for mul_mat, through raw ctypes (no framework).

This is the "plain library" number the framework's ggml backend is compared with (it must reach
at least 0.9x of it). Everything goes straight through :mod:`mlplug_ggml._lib`'s declared
functions; no mlplug wrapper is used.

What is timed: ``ggml_backend_graph_compute`` of a graph holding one ``ggml_mul_mat`` node, built
and allocated once, after warm-up runs; each run is timed on its own and the median is reported
(robust to the odd descheduled run). Weights and input are set once, before timing.
FLOPs per run: ``2 * k * m * n`` (weight ``[k, m]`` in ggml order, input ``[k, n]``).

Usage::

    PYTHONPATH=core:plugins/ggml python benchmarks/ggml_raw.py [--json] [--threads N] [--reps N]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np

try:
    from mlplug_ggml import _lib
except ImportError:  # run from a checkout without PYTHONPATH set
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:0] = [os.path.join(_root, "core"), os.path.join(_root, "plugins", "ggml")]
    from mlplug_ggml import _lib

__all__ = ["CASES", "RawMatmul", "RawResult", "raw_matmul", "raw_matmul_gflops"]

WTYPES: Final[dict[str, int]] = {
    "f32": _lib.GGML_TYPE_F32,
    "f16": _lib.GGML_TYPE_F16,
    "q8_0": _lib.GGML_TYPE_Q8_0,
}

#: (label, k, m, n, weight type, default reps)
CASES: Final[list[tuple[str, int, int, int, str, int]]] = [
    ("matmul 1024x1024x1024", 1024, 1024, 1024, "f32", 10),
    ("matvec 4096x4096", 4096, 4096, 1, "f32", 100),
    ("matvec 4096x4096", 4096, 4096, 1, "f16", 100),
    ("matvec 4096x4096", 4096, 4096, 1, "q8_0", 100),
]

_FloatP = ctypes.POINTER(ctypes.c_float)


@dataclass
class RawResult:
    """One measured case."""

    k: int
    m: int
    n: int
    wtype: str
    threads: int
    reps: int
    seconds_per_run: float
    gflops: float
    #: max |ggml - numpy| / max |numpy| over the output (numpy uses the f32 weights).
    rel_err: float


def _wtype_id(wtype: str | int) -> int:
    if isinstance(wtype, int):
        return wtype
    try:
        return WTYPES[wtype.lower()]
    except KeyError:
        msg = f"unknown weight type {wtype!r}; use one of {sorted(WTYPES)}"
        raise ValueError(msg) from None


class RawMatmul:
    """One ``ggml_mul_mat(W[k, m], X[k, n])`` graph on the CPU backend, built with direct calls.

    Everything (backend, weights, input, graph, allocation) is set up by the constructor;
    :meth:`run` is the timed call (``ggml_backend_graph_compute``), :meth:`close` frees it all.
    Data: ``W`` and ``X`` are standard normal (seed ``seed``), ``W`` converted to ``wtype`` by
    ggml's own quantiser.
    """

    def __init__(
        self,
        k: int,
        m: int,
        n: int,
        wtype: str | int = "f32",
        threads: int | None = None,
        seed: int = 0,
    ) -> None:
        lib = self.lib = _lib.load()
        type_id = _wtype_id(wtype)
        if lib.ggml_quantize_requires_imatrix(type_id):
            msg = (
                f"weight type {wtype!r} needs an importance matrix; not supported by this baseline"
            )
            raise ValueError(msg)
        if k % lib.ggml_blck_size(type_id):
            msg = (
                f"k={k} is not a multiple of the {wtype!r} block size {lib.ggml_blck_size(type_id)}"
            )
            raise ValueError(msg)
        self.k, self.m, self.n = k, m, n
        self.threads = threads or os.cpu_count() or 1
        rng = np.random.default_rng(seed)
        self.w32 = rng.standard_normal((m, k), dtype=np.float32)
        self.x32 = rng.standard_normal((n, k), dtype=np.float32)

        # Weight bytes in the requested type: ggml's own conversion for f16 and quantized types.
        if type_id == _lib.GGML_TYPE_F32:
            wbytes = self.w32
        else:
            wbytes = np.empty(lib.ggml_row_size(type_id, k) * m, dtype=np.uint8)
            lib.ggml_quantize_chunk(
                type_id, self.w32.ctypes.data_as(_FloatP), wbytes.ctypes.data, 0, m, k, None
            )

        dev = lib.ggml_backend_dev_by_type(_lib.GGML_BACKEND_DEVICE_TYPE_CPU)
        self.backend = backend = lib.ggml_backend_dev_init(dev, None)
        reg = lib.ggml_backend_dev_backend_reg(dev)
        addr = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_set_n_threads")
        if addr:
            _lib.SetNThreadsFn(addr)(backend, self.threads)
        else:
            lib.ggml_backend_cpu_set_n_threads(backend, self.threads)

        overhead = lib.ggml_tensor_overhead()
        self.ctx_w = lib.ggml_init(_lib.GGMLInitParams(overhead * 2, None, True))
        w = lib.ggml_new_tensor_2d(self.ctx_w, type_id, k, m)
        x = lib.ggml_new_tensor_2d(self.ctx_w, _lib.GGML_TYPE_F32, k, n)
        self.buf = lib.ggml_backend_alloc_ctx_tensors(self.ctx_w, backend)
        lib.ggml_backend_tensor_set(w, wbytes.ctypes.data, 0, wbytes.nbytes)
        lib.ggml_backend_tensor_set(x, self.x32.ctypes.data, 0, self.x32.nbytes)

        graph_size = 8
        self.ctx_g = lib.ggml_init(
            _lib.GGMLInitParams(
                overhead * graph_size + lib.ggml_graph_overhead_custom(graph_size, False),
                None,
                True,
            )
        )
        self.out = lib.ggml_mul_mat(self.ctx_g, w, x)
        self.graph = lib.ggml_new_graph_custom(self.ctx_g, graph_size, False)
        lib.ggml_build_forward_expand(self.graph, self.out)
        self.galloc = lib.ggml_gallocr_new(lib.ggml_backend_get_default_buffer_type(backend))
        lib.ggml_gallocr_alloc_graph(self.galloc, self.graph)
        self._compute = lib.ggml_backend_graph_compute

    def run(self) -> None:
        """Compute the graph once (the timed call)."""
        self._compute(self.backend, self.graph)

    def rel_err(self) -> float:
        """max |ggml - numpy| / max |numpy| of the last run (numpy uses the f32 weights)."""
        got = np.empty((self.n, self.m), dtype=np.float32)
        self.lib.ggml_backend_tensor_get(self.out, got.ctypes.data, 0, got.nbytes)
        ref = self.x32 @ self.w32.T  # (n, m): row j = W @ x_j, the ggml output order
        return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-30))

    def close(self) -> None:
        """Free everything (idempotent)."""
        if self.backend is None:
            return
        lib = self.lib
        lib.ggml_gallocr_free(self.galloc)
        lib.ggml_free(self.ctx_g)
        lib.ggml_backend_buffer_free(self.buf)
        lib.ggml_free(self.ctx_w)
        lib.ggml_backend_free(self.backend)
        self.backend = None


def raw_matmul(
    k: int,
    m: int,
    n: int,
    wtype: str | int = "f32",
    threads: int | None = None,
    reps: int = 10,
    warmup: int = 2,
    seed: int = 0,
) -> RawResult:
    """Time ``ggml_mul_mat(W[k, m], X[k, n])`` on the CPU backend with direct ggml calls.

    :param k: inner (contracted) dimension, ggml dim 0 of both operands.
    :param m: rows of the weight (output dim 0).
    :param n: columns of the input (output dim 1); 1 is a matrix x vector.
    :param wtype: weight type: ``"f32"``, ``"f16"``, ``"q8_0"`` or a ggml type id.
    :param threads: CPU threads (default ``os.cpu_count()``).
    :param reps: timed runs after warm-up (the median run is reported).
    :param warmup: untimed runs first.
    :returns: timing, GFLOP/s and the relative error against numpy.
    """
    raw = RawMatmul(k, m, n, wtype, threads, seed)
    try:
        for _ in range(warmup):
            raw.run()
        times = []
        clock = time.perf_counter
        for _ in range(reps):
            t0 = clock()
            raw.run()
            times.append(clock() - t0)
        rel_err = raw.rel_err()
    finally:
        raw.close()
    per_run = statistics.median(times) if times else float("nan")
    return RawResult(
        k=k,
        m=m,
        n=n,
        wtype=wtype if isinstance(wtype, str) else str(wtype),
        threads=raw.threads,
        reps=reps,
        seconds_per_run=per_run,
        gflops=2.0 * k * m * n / per_run / 1e9,
        rel_err=rel_err,
    )


def raw_matmul_gflops(
    k: int, m: int, n: int, wtype: str | int = "f32", threads: int | None = None, reps: int = 10
) -> float:
    """Return GFLOP/s of ``ggml_mul_mat(W[k, m], X[k, n])`` via direct ggml calls.

    Importable by the framework benchmark; see :func:`raw_matmul` for the parameters.
    """
    return raw_matmul(k, m, n, wtype, threads, reps).gflops


def main(argv: list[str] | None = None) -> int:
    """Run every case and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reps", type=int, default=None, help="override each case's reps")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    lib = _lib.load()
    rows = []
    for label, k, m, n, wtype, reps in CASES:
        r = raw_matmul(k, m, n, wtype, args.threads, args.reps or reps, args.warmup)
        rows.append({"case": label, **asdict(r)})
    if args.json:
        print(
            json.dumps(
                {"ggml_version": lib.version, "ggml_commit": lib.commit, "results": rows}, indent=2
            )
        )
        return 0
    print(f"ggml {lib.version} ({lib.commit}) from {lib.directory}, threads={args.threads}")
    print(f"{'case':<24}{'wtype':>6}{'reps':>6}{'ms/run':>10}{'GFLOP/s':>10}{'rel err':>10}")
    for row in rows:
        print(
            f"{row['case']:<24}{row['wtype']:>6}{row['reps']:>6}"
            f"{row['seconds_per_run'] * 1e3:>10.3f}{row['gflops']:>10.2f}{row['rel_err']:>10.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
