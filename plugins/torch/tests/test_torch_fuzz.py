"""Seeded random graphs (shapes, broadcasts, views, permutations) on torch and cpu_numpy."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

import mlplug as ml
from mlplug import Context, DType, Tensor

pytest.importorskip("mlplug_cpu_numpy")

Gen = Callable[[Context, np.random.Generator], Tensor]


def _shape(r: np.random.Generator, dims: int = 4, hi: int = 5) -> list[int]:
    return [int(v) for v in r.integers(1, hi, size=dims)]


def _input(
    ctx: Context, r: np.random.Generator, shape: list[int], lo: float = -2, hi: float = 2
) -> Tensor:
    v = r.uniform(lo, hi, size=int(np.prod(shape))).astype(np.float32)
    return ctx.input().from_floats(v, *shape)


def _view(ctx: Context, r: np.random.Generator, x: Tensor) -> Tensor:
    """A random permutation or slice of ``x`` (a non-contiguous view)."""
    if r.random() < 0.5:
        order = [int(v) for v in r.permutation(4)]
        return x.permute(ctx, *order)
    dim = int(r.integers(0, 4))
    n = x.dim(dim)
    if n < 2:
        return x
    low = int(r.integers(0, n - 1))
    return x.slice(ctx, dim, low, n, 1)


def g_binary(ctx: Context, r: np.random.Generator) -> Tensor:
    a = _view(ctx, r, _input(ctx, r, _shape(r)))
    b_shape = [d if r.random() < 0.5 else 1 for d in a.ne]
    for i, d in enumerate(a.ne):  # sometimes tile a divisor instead of 1
        if d % 2 == 0 and r.random() < 0.3:
            b_shape[i] = d // 2
    b = _input(ctx, r, b_shape, lo=0.5, hi=2)
    op = ["add", "sub", "mul", "div"][int(r.integers(0, 4))]
    out: Tensor = getattr(a, op)(ctx, b)
    return out.contiguous(ctx)


def g_unary(ctx: Context, r: np.random.Generator) -> Tensor:
    x = _view(ctx, r, _input(ctx, r, _shape(r, hi=7), lo=-5, hi=5))
    op = ["sin", "exp", "tanh", "sigmoid_out", "silu", "gelu", "softplus", "neg", "sqr"][
        int(r.integers(0, 9))
    ]
    out: Tensor = getattr(x, op)(ctx)
    return out.contiguous(ctx)


def g_mulmat(ctx: Context, r: np.random.Generator) -> Tensor:
    k, m, n = (int(v) for v in r.integers(1, 40, size=3))
    a2, a3 = (int(v) for v in r.integers(1, 3, size=2))
    r2, r3 = (int(v) for v in r.integers(1, 3, size=2))
    a = _input(ctx, r, [k, m, a2, a3])
    b = _input(ctx, r, [k, n, a2 * r2, a3 * r3])
    if r.random() < 0.4:
        b = _input(ctx, r, [k, a2 * r2, n, a3 * r3]).permute(ctx, 0, 2, 1, 3)
    return a.mulmat(ctx, b)


def g_layout(ctx: Context, r: np.random.Generator) -> Tensor:
    x = _input(ctx, r, _shape(r, hi=6))
    y = _view(ctx, r, _view(ctx, r, x))
    if r.random() < 0.5:
        return y.contiguous(ctx, -1)
    other = _input(ctx, r, list(y.ne))
    return y.concat(ctx, other, int(r.integers(0, 4)))


def g_rows(ctx: Context, r: np.random.Generator) -> Tensor:
    shape = _shape(r, hi=6)
    x = _input(ctx, r, shape)
    ids = r.integers(0, shape[1], size=(shape[3], shape[2], 3)).astype(np.int32)
    idt = ctx.input().from_ints(ids.reshape(-1), 3, shape[2], shape[3])
    y = x.rows(ctx, idt)
    op = ["softmax", "sum_rows", "cum_sum", "mean"][int(r.integers(0, 4))]
    out: Tensor = getattr(y, op)(ctx)
    return out


def g_set_rows(ctx: Context, r: np.random.Generator) -> Tensor:
    n0, rows, n2 = (int(v) for v in r.integers(1, 6, size=3))
    dtype = [DType.F32, DType.F16][int(r.integers(0, 2))]
    dst = ctx.input().zeros(dtype, n0, rows + 2, n2)
    idx = r.permutation(rows + 2)[:rows].astype(np.int32)
    src = _input(ctx, r, [n0, rows, n2])
    ctx.forward(dst.set_rows(ctx, src, ctx.input().from_ints(idx, rows)))
    return dst.cast(ctx, DType.F32)


GENERATORS: dict[str, Gen] = {
    "binary": g_binary,
    "unary": g_unary,
    "mulmat": g_mulmat,
    "layout": g_layout,
    "rows": g_rows,
    "set_rows": g_set_rows,
}


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[ml.Backend, ml.Backend]]:
    a, b = ml.new_backend(None, backend="torch"), ml.new_backend(None, backend="cpu_numpy")
    yield a, b
    a.close()
    b.close()


def _eval(be: ml.Backend, gen: Gen, seed: int) -> tuple[tuple[int, ...], np.ndarray]:
    with be.new_context() as ctx:
        t = gen(ctx, np.random.default_rng(seed))
        ctx.compute(t)
        v = t.to_numpy()
        assert v is not None
        return t.shape, v.astype(np.float64)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_random_graphs_agree(pair: tuple[ml.Backend, ml.Backend], name: str) -> None:
    """40 random graphs per generator give the same shapes and values on both backends."""
    for seed in range(40):
        (sa, va), (sb, vb) = (
            _eval(pair[0], GENERATORS[name], seed),
            _eval(pair[1], GENERATORS[name], seed),
        )
        assert sa == sb, f"seed {seed}"
        np.testing.assert_allclose(va, vb, rtol=2e-5, atol=2e-5, err_msg=f"seed {seed}")
