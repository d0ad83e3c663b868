"""Every public op's ``>>>`` example runs on cpu_numpy (every public op carries one).

Each docstring of the op modules runs as a doctest with a fresh ``cpu_numpy`` context named
``ctx`` (closed afterwards) and ``ml`` (mlplug), ``np`` (numpy) and ``DType`` as globals.
"""

from __future__ import annotations

import doctest
import importlib
import io

import numpy as np
import pytest

import mlplug
from mlplug.ops import CONTEXT_CONSTRUCTORS, TENSOR_METHODS

pytest.importorskip("mlplug_cpu_numpy")

MODULES = (
    "mlplug",
    "mlplug._tensorbase",
    "mlplug.context",
    "mlplug.ops.elementwise",
    "mlplug.ops.linalg",
    "mlplug.ops.nn",
    "mlplug.ops.reduce",
    "mlplug.ops.layout",
)
OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name: str) -> None:
    """Run every docstring example of ``module_name``; fail with the runner's report."""
    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder().find(module, module_name)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    failed = attempted = 0
    for test in sorted(tests, key=lambda t: t.name):
        if not test.examples:
            continue
        with mlplug.new_backend(None, backend="cpu_numpy") as be, be.new_context() as ctx:
            test.globs.update({"ctx": ctx, "ml": mlplug, "np": np, "DType": mlplug.DType})
            result = runner.run(test, out=report.write)
        failed += result.failed
        attempted += result.attempted
    assert attempted > 0, f"{module_name} has no docstring examples"
    assert failed == 0, f"{failed} of {attempted} examples failed:\n{report.getvalue()}"


def _examples(doc: str | None) -> list[doctest.Example]:
    return doctest.DocTestParser().get_examples(doc or "")


@pytest.mark.parametrize(
    ("owner", "name"),
    [(mlplug.Tensor, n) for n in TENSOR_METHODS]
    + [(mlplug.Context, n) for n in CONTEXT_CONSTRUCTORS],
    ids=[f"Tensor.{n}" for n in TENSOR_METHODS] + [f"Context.{n}" for n in CONTEXT_CONSTRUCTORS],
)
def test_public_op_has_example(owner: type, name: str) -> None:
    """Each public Tensor method and Context constructor shows at least one ``>>>`` example."""
    member = getattr(owner, name)
    assert _examples(member.__doc__), f"{owner.__name__}.{name} has no >>> example"
