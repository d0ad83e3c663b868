"""Differential tests: every primitive, on torch and on the cpu_numpy reference, must agree."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mlplug as ml
from mlplug import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the case catalogue beside this file
from torch_cases import CASES

pytest.importorskip("mlplug_cpu_numpy")


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, ml.Backend]]:
    bes = {name: ml.new_backend(None, backend=name) for name in ("torch", "cpu_numpy")}
    yield bes
    for be in bes.values():
        be.close()


Result = tuple[ml.DType, tuple[int, ...], bytes, "np.ndarray | None"]


def _run(be: ml.Backend, name: str) -> list[Result]:
    build, _tol = CASES[name]
    with be.new_context() as ctx:
        outs: list[Tensor] = build(ctx, np.random.default_rng(1234))
        ctx.compute(*outs)
        res = []
        for t in outs:
            raw = t.bytes() or b""
            vals = None if t.dtype.is_quantized else t.to_numpy()
            res.append((t.dtype, t.shape, raw, vals))
        return res


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_cpu_numpy(backends: dict[str, ml.Backend], name: str) -> None:
    """Each output of the case agrees with cpu_numpy's in dtype, shape and values."""
    rtol, atol = CASES[name][1]
    got = _run(backends["torch"], name)
    ref = _run(backends["cpu_numpy"], name)
    assert len(got) == len(ref)
    for i, ((gd, gs, gb, gv), (rd, rs, rb, rv)) in enumerate(zip(got, ref, strict=True)):
        assert (gd, gs) == (rd, rs), f"output {i}: {gd.name}{gs} vs {rd.name}{rs}"
        if (rtol == 0 and atol == 0) or gv is None or rv is None:
            if gb != rb and gv is not None and rv is not None:
                bad = np.argwhere(~((gv == rv) | (np.isnan(gv) & np.isnan(rv))))
                pytest.fail(
                    f"output {i}: {len(bad)} values differ, first at {bad[0]}: "
                    f"{gv[tuple(bad[0])]} vs {rv[tuple(bad[0])]}"
                )
            assert gb == rb, f"output {i}: bytes differ"
            continue
        g, r = gv.astype(np.float64), rv.astype(np.float64)
        scale = float(np.nanmax(np.abs(r[np.isfinite(r)]))) if np.isfinite(r).any() else 1.0
        np.testing.assert_allclose(
            g, r, rtol=rtol, atol=atol * max(scale, 1e-30), err_msg=f"output {i}"
        )
