"""The conformance suite rejects wrong kernels: each wrong backend fails, by the cases named.

Every backend of :mod:`conformance.wrong_backends.bugs` is cpu_numpy with one kernel replaced by
a plausible bug, registered in this process for one test only. The suite must fail it: at least
one case of the buggy op fails, every failing case is of that op (the report names the op), and
every case matched by the backend's ``catch`` globs fails. Bugs the current catalogue cannot catch
yet are strict xfails naming the issue-14 cases they need: they turn into failures (XPASS) when
those cases land, and the xfail mark is then removed. That the real kernels pass is the
conformance suite itself (``tests/conformance/test_ops.py``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("mlplug_cpu_numpy", reason="the wrong backends derive from cpu_numpy")

from conformance.wrong_backends.bugs import REMOVED, WRONG, Wrong, backend_class
from mlplug.cli import main
from mlplug.conformance import all_cases, select
from mlplug.conformance.report import CaseResult
from mlplug.conformance.runner import run
from mlplug.errors import MlplugError
from mlplug.registry import manager, new_backend, register_backend

if TYPE_CHECKING:
    from mlplug import Context, Tensor


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


def _marks(wrong: Wrong) -> list[pytest.MarkDecorator]:
    if wrong.needs is None:
        return []
    return [pytest.mark.xfail(strict=True, reason=f"needs {wrong.needs}")]


@pytest.mark.parametrize("wrong", [pytest.param(w, id=w.name, marks=_marks(w)) for w in WRONG])
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
    """Every catch glob of a bug caught today matches cases of the ops it runs."""
    for wrong in WRONG:
        cases = [c.id for op in wrong.ops for c in select(all_cases(), op)]
        assert cases, wrong.name
        for pattern in wrong.catch if wrong.needs is None else ():
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


#: A crafted input on which each not-yet-caught bug visibly changes the result (or the error),
#: so that its strict xfail waits for cases that can catch it rather than for nothing.
CRAFTED: dict[str, Callable[[Context], Tensor]] = {}


def _outcome(backend: str, build: Callable[[Context], Tensor]) -> object:
    with new_backend(None, backend=backend) as be, be.new_context() as ctx:
        try:
            y = build(ctx)
            ctx.compute(y)
        except MlplugError as exc:
            return type(exc).__name__
        return y.to_numpy().tolist()


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_uncaught_bug_changes_a_result(name: str) -> None:
    """Each bug the catalogue cannot catch yet gives another result than cpu_numpy somewhere."""
    (wrong,) = [w for w in WRONG if w.name == name]
    assert wrong.needs is not None, f"{name} is caught today: drop it from CRAFTED"
    right = _outcome("cpu_numpy", CRAFTED[name])
    with registered(wrong):
        got = _outcome(name, CRAFTED[name])
    assert repr(got) != repr(right), f"{wrong.bug}: same result {got}"


def test_every_uncaught_bug_has_a_crafted_input() -> None:
    """A strict xfail without a crafted input could wait for a bug that changes nothing."""
    quantised = {w.name for w in WRONG if w.name.startswith("wrong_qmulmat_")}
    pending = {w.name for w in WRONG if w.needs is not None} - quantised
    assert pending == set(CRAFTED)
