"""Op cases run on the ggml backend and on cpu_numpy (the numerical reference) for comparison.

Each case is inputs (ggml shape, dtype, how values are drawn) and a build function using the
public Tensor API; both backends get the very same input bytes. Quantised inputs are made with
ggml's own quantiser, so both sides start from identical blocks.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mlplug import DType, Tensor
from mlplug.dtypes import TRAITS

from mlplug_ggml import _lib

Build = Callable[..., "Tensor | Sequence[Tensor]"]


@dataclass(frozen=True)
class In:
    """One input: ggml shape, dtype and value generator."""

    ne: tuple[int, ...]
    dtype: DType = DType.F32
    gen: str = "uniform"  # uniform | distinct | int | perm | lower | pos | mask
    lo: float = -1.0
    hi: float = 1.0


@dataclass(frozen=True)
class Case:
    """A graph built from inputs; outputs are compared with ``rtol``/``atol``."""

    id: str
    inputs: tuple[In, ...]
    build: Build
    rtol: float = 1e-5
    atol: float = 1e-6
    flash: bool = False
    #: compare gathered values instead of indices (sorting with possible ties)
    compare: Callable[[list[np.ndarray], list[np.ndarray], list[np.ndarray]], None] | None = None
    raw: bool = False  # compare output bytes (quantised outputs)
    #: expect the (F32) first input back, instead of asking the reference backend
    roundtrip: bool = False
    params: dict[str, Any] = field(default_factory=dict)


def _values(rng: np.random.Generator, spec: In) -> np.ndarray:
    shape = tuple(reversed(spec.ne))
    n = int(np.prod(spec.ne))
    if spec.gen == "distinct":
        v = rng.permutation(n).astype(np.float64) / max(n, 1) * (spec.hi - spec.lo) + spec.lo
        return v.reshape(shape)
    if spec.gen == "int":
        return rng.integers(int(spec.lo), int(spec.hi), size=shape)
    if spec.gen == "perm":
        rows = int(np.prod(spec.ne[1:]))
        hi = int(spec.hi) or spec.ne[0]
        out = np.stack([rng.permutation(hi)[: spec.ne[0]] for _ in range(rows)])
        return out.reshape(shape)
    if spec.gen == "lower":
        a = rng.uniform(-0.2, 0.2, size=shape)
        n0 = spec.ne[0]
        diag_shape = (*shape[:-2], n0)
        d = rng.uniform(1, 2, size=diag_shape) * rng.choice([-1, 1], size=diag_shape)
        idx = np.arange(n0)
        a[..., idx, idx] = d
        return a
    if spec.gen == "mask":  # additive attention mask: exact in F16, column 0 always open
        m = rng.choice([0.0, -0.5, -1.5, -np.inf], size=shape, p=[0.5, 0.2, 0.2, 0.1])
        m[..., 0] = 0.0
        return m
    if spec.gen == "pos":
        return rng.uniform(max(spec.lo, 0.1), spec.hi, size=shape)
    return rng.uniform(spec.lo, spec.hi, size=shape)


def quantize(values: np.ndarray, dtype: DType) -> bytes:
    """Quantise float rows with ggml's quantiser (``ggml_quantize_chunk``)."""
    lib = _lib.load()
    gtype = TRAITS[dtype].ggml_type
    v = np.ascontiguousarray(values, np.float32)
    n_per_row = v.shape[-1]
    rows = v.size // n_per_row
    out = np.empty(int(lib.ggml_row_size(gtype, n_per_row)) * rows, np.uint8)
    lib.ggml_quantize_chunk(
        gtype,
        v.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        out.ctypes.data,
        0,
        rows,
        n_per_row,
        None,
    )
    return out.tobytes()


def encode(values: np.ndarray, dtype: DType) -> bytes:
    """Return the bytes of ``values`` stored as ``dtype``."""
    if dtype == DType.F32:
        return np.ascontiguousarray(values, "<f4").tobytes()
    if dtype == DType.F16:
        return np.ascontiguousarray(values, "<f2").tobytes()
    if dtype == DType.BF16:
        bits = np.ascontiguousarray(values, "<f4").view(np.uint32)
        rounded: np.ndarray = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype("<u2").tobytes()
    if dtype in (DType.I32, DType.I64, DType.I16, DType.I8):
        return np.ascontiguousarray(values, TRAITS[dtype].numpy).tobytes()
    return quantize(values, dtype)


def make_inputs(case: Case, seed: int = 0) -> list[bytes]:
    """Draw the input bytes of ``case`` (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    return [encode(_values(rng, spec), spec.dtype) for spec in case.inputs]


def run(be: Any, case: Case, data: list[bytes]) -> list[np.ndarray]:
    """Build and compute ``case`` on backend ``be``; return every output (bytes or values)."""
    with be.new_context() as ctx:
        ts = [
            ctx.from_bytes(spec.dtype, raw, *spec.ne)
            for spec, raw in zip(case.inputs, data, strict=True)
        ]
        out = case.build(ctx, *ts)
        outs = [out] if isinstance(out, Tensor) else list(out)
        ctx.compute(*outs)
        res = []
        for o in outs:
            if case.raw or o.dtype.is_quantized or o.dtype == DType.BF16:
                res.append(np.frombuffer(o.bytes() or b"", np.uint8).copy())
            else:
                arr = o.to_numpy()
                res.append(np.asarray(arr))
        return res
