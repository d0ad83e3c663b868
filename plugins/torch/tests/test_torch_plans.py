"""Planned steps (a graph computed again runs its preparers' bound steps): the same values,
bit for bit, as running every kernel eagerly."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
from model_files import write_llama

pytest.importorskip("torch")
pytest.importorskip("mlplug_torch")

from mlplug_torch.context import TorchContext

SLOW = os.environ.get("MLPLUG_SLOW_TESTS") == "1"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _decode(path: Path, planned: bool) -> np.ndarray:
    import mlplug as ml
    from mlplug.models import load_model

    def eager(self: TorchContext, graph: list[object]) -> list[object]:
        return [functools.partial(self.run_eager, graph)]

    saved = TorchContext.planned_steps
    if not planned:
        TorchContext.planned_steps = eager  # type: ignore[method-assign,assignment]
    try:
        prompt = [1, 5, 9, 2, 30, 7, 3]
        be = ml.new_backend(str(path), ml.BackendParams(alloc_memory=True), backend="torch")
        be.load()
        with be, load_model(be, num_ctx=32) as model:
            steps = [model.forward(prompt[:3], range(3))[0]]
            steps += [model.forward([prompt[p]], [p])[0] for p in range(3, len(prompt))]
    finally:
        TorchContext.planned_steps = saved  # type: ignore[method-assign]
    return np.stack(steps)


def _check(kind: str, tmp_path: Path) -> None:
    path = write_llama(tmp_path / f"tiny-{kind}.gguf", kind, tied=False).path
    planned = _decode(path, planned=True)
    eager = _decode(path, planned=False)
    np.testing.assert_array_equal(planned, eager)


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_planned_decode_steps_equal_eager_ones(kind: str, tmp_path: Path) -> None:
    """A tiny llama's decode steps (reused graphs: rows, rms_norm, rope, set_rows, add, mul
    and glu planned), bit for bit."""
    _check(kind, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="compiles C++ through inductor: MLPLUG_SLOW_TESTS=1")
@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_planned_compiled_decode_steps_equal_eager_ones(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with every product and attention compiled (their planned steps bind the
    weights, the column's node and the cache)."""
    monkeypatch.setenv("MLPLUG_TORCH_FUSED", "1")
    _check(kind, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="compiles C++ through inductor: MLPLUG_SLOW_TESTS=1")
def test_compiled_decode_cases_computed_again_give_the_same_bytes() -> None:
    """Every one-column product and one-query attention case of the catalogue, every kernel
    compiled: the planned second compute (the bound compiled kernel) equals the first."""
    from mlplug.conformance import all_cases, recompute_case
    from mlplug_torch import TorchBackend

    def decode_shaped(c: object) -> bool:
        op, args = getattr(c, "op", ""), getattr(c, "args", ())
        if op == "mulmat" and len(args) == 2:
            return all(n == 1 for n in args[1].ne[1:])
        if op == "scaled_dot_product_attention":
            return (*args[0].ne, 1, 1)[2:4] == (1, 1)
        return False

    cases = [c for c in all_cases("all") if decode_shaped(c)]
    assert len(cases) >= 30
    with TorchBackend(None, device="cpu", fused_gemv=True) as be:
        differ = {c.id: d for c in cases if (d := recompute_case(be, c))}
        kinds = {key[0] for key in be.compiled.compiled_keys()}
    assert not differ, differ
    assert kinds == {"gemv", "attention"}
