"""The conformance suite rejects wrong kernels: each wrong backend fails, by the cases named.

Every backend of :mod:`conformance.wrong_backends.bugs` is cpu_numpy with one kernel replaced by
a plausible bug, registered in this process for one test only. The suite must fail it: at least
one case of the buggy op fails, every failing case is of that op (the report names the op), and
every case matched by the backend's ``catch`` globs fails. That the real kernels pass is the
conformance suite itself (``tests/conformance/test_ops.py``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest.importorskip("mlplug_cpu_numpy", reason="the wrong backends derive from cpu_numpy")

from conformance.wrong_backends.bugs import REMOVED, WRONG, Wrong, backend_class
from mlplug.cli import main
from mlplug.conformance import all_cases, select
from mlplug.conformance.report import CaseResult
from mlplug.conformance.runner import run
from mlplug.registry import manager, register_backend


@contextmanager
def registered(wrong: Wrong) -> Iterator[str]:
    """Register ``wrong``'s backend in this process for the duration of the block."""
    cls = backend_class(wrong)
    register_backend(wrong.name, lambda path, params: cls(path, params), priority=-100)
    try:
        yield wrong.name
    finally:
        manager().unregister_backend(wrong.name)


def _results(wrong: Wrong) -> list[CaseResult]:
    with registered(wrong) as name:
        return [r for op in wrong.ops for r in run([name], op).results]


@pytest.mark.parametrize("wrong", [pytest.param(w, id=w.name) for w in WRONG])
def test_suite_rejects_wrong_backend(wrong: Wrong) -> None:
    """The cases of the buggy op fail on the wrong backend, and only those."""
    results = _results(wrong)
    assert results, f"no case runs {wrong.ops}"
    failing = {r.case: r for r in results if r.status == "fail"}
    assert failing, f"{wrong.name} ({wrong.bug}) passes all {len(results)} cases of {wrong.ops}"
    assert {r.op for r in failing.values()} <= set(wrong.ops)
    # catch globs name value cases; error cases (dtype "err") are matched by failing only
    ids = [r.case for r in results if r.dtype != "err"]
    for pattern in wrong.catch:
        matched = fnmatch.filter(ids, pattern)
        assert matched, f"catch pattern {pattern!r} matches no case of {wrong.ops}"
        missed = [c for c in matched if c not in failing]
        assert not missed, f"{wrong.bug}: {len(missed)} of {len(matched)} pass: {missed}"


def test_catch_patterns_are_cases_of_their_ops() -> None:
    """Every catch glob matches cases of the ops its backend runs."""
    for wrong in WRONG:
        cases = [c.id for op in wrong.ops for c in select(all_cases(), op)]
        assert cases, wrong.name
        for pattern in wrong.catch:
            assert fnmatch.filter(cases, pattern), f"{wrong.name}: {pattern!r}"


def test_removed_kernels_are_unsupported_cases() -> None:
    """Without mulmat, softmax and rope kernels every case of those ops is unsupported."""
    # error cases the core rejects before any kernel runs still pass without kernels
    results = [r for r in _results(REMOVED) if r.dtype != "err"]
    assert {r.op for r in results} == {"mulmat", "softmax", "rope"}
    assert {r.status for r in results} == {"unsupported"}


def test_run_fails_when_core_kernels_are_removed(capsys: pytest.CaptureFixture[str]) -> None:
    """``mlplug conformance --strict`` exits non-zero for a backend lacking mulmat, softmax and
    rope (a third-party backend has no pinned unsupported set; ``--strict`` is its gate)."""
    with registered(REMOVED) as name:
        rc = main(["conformance", "--backend", name, "--quiet", "--strict"])
    out = capsys.readouterr().out
    assert rc == 1, f"exit status {rc}:\n{out[-2000:]}"
    for op in ("mulmat", "softmax", "rope"):
        assert op in out
