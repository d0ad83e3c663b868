"""The runner's classification (pass/fail/unsupported/xfail/xpass), cross-backend agreement and
the report's renderings, with throwaway backends derived from cpu_numpy."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlplug.conformance import ConformanceReport, run
from mlplug.conformance.report import CaseResult
from mlplug.registry import manager, register_backend

cpu_numpy = pytest.importorskip("mlplug_cpu_numpy.backend", reason="needs the cpu_numpy plugin")
KERNELS: dict[str, Any] = dict(cpu_numpy.CpuNumpyBackend.kernels)


def _add_as_sub(ctx: Any, t: Any) -> None:
    KERNELS["sub"](ctx, t)


@pytest.fixture
def throwaway() -> Iterator[Callable[..., str]]:
    """Register backends derived from cpu_numpy in process; unregister them afterwards."""
    names: list[str] = []

    def make(
        name: str,
        kernels: dict[str, Any] | None = None,
        known: dict[str, str] | None = None,
        xfails_path: Path | None = None,
    ) -> str:
        attrs: dict[str, Any] = {"name": name}
        if kernels is not None:
            attrs["kernels"] = kernels
        if known is not None:
            attrs["known_failures"] = lambda self: dict(known)
        if xfails_path is not None:
            attrs["xfails_path"] = xfails_path
        cls: type = type(f"Throwaway_{name}", (cpu_numpy.CpuNumpyBackend,), attrs)
        register_backend(name, lambda path, params: cls(path, params))
        names.append(name)
        return name

    yield make
    for n in names:
        manager().unregister_backend(n)


def _by_case(report: ConformanceReport) -> dict[tuple[str, str], CaseResult]:
    return {(r.backend, r.case): r for r in report.results}


def test_report_of_a_conforming_backend() -> None:
    """cpu_numpy passes the add cases; JSON, table and Markdown carry the contract's keys."""
    report = run(["cpu_numpy"], "add")
    assert not report.failed()
    assert {r.status for r in report.results} == {"pass"}
    data = json.loads(report.to_json())
    assert {"backends", "results", "summary"} <= set(data)
    assert set(data["results"][0]) >= {"op", "case", "backend", "status", "max_abs_err", "nmse"}
    assert data["summary"]["cpu_numpy"]["passed"] == len(report.results)
    assert "add f16" in report.table() and "cpu_numpy" in report.table()
    assert "| `add` | pass (" in report.to_markdown()


def test_wrong_values_fail_missing_kernels_are_unsupported(throwaway: Callable[..., str]) -> None:
    """A wrong kernel fails with both metrics; a missing kernel is unsupported, never a pass."""
    kernels = {k: v for k, v in KERNELS.items() if k != "sin"}
    kernels["add"] = _add_as_sub
    name = throwaway("broken", kernels)
    report = run([name], "add-f32-4x3")  # the case and its layout variants
    assert {r.status for r in report.results} == {"fail"}
    res = report.results[0]
    assert res.case == "add-f32-4x3"
    assert res.status == "fail" and res.max_abs_err and res.max_abs_err > 0.1 and res.nmse
    assert res.error and "ulp" in res.error
    report = run([name], "s[iq][nr]*-f32-*")  # the value cases of sin, sqr and sqrt
    assert {r.status for r in report.results if r.op == "sin"} == {"unsupported"}
    assert report.summary[name].unsupported_ops == ["sin"]
    assert not report.failed()
    assert "unsup" in report.table()
    report = run([name], "sin-f*")  # nothing but sin: no case ran, which fails the run
    assert report.failed() and report.problems() == [
        f"{name}: no case ran (every case was unsupported)"
    ]


def test_known_failures_are_strict(throwaway: Callable[..., str], tmp_path: Path) -> None:
    """A declared failure that fails is xfail; one that passes is xpass, a failure."""
    kernels = dict(KERNELS, add=_add_as_sub)
    xf = tmp_path / "xfails.txt"
    xf.write_text("# known bugs\nadd-f32-4x3  add subtracts\nsub-f32-*  declared but fine\n")
    name = throwaway("known", kernels, known={"mul-f32-4x3": "declared by method"}, xfails_path=xf)
    report = run([name], "*-f32-4x3")
    got = {r.case: r.status for r in report.results}
    assert got["add-f32-4x3"] == "xfail"
    assert got["sub-f32-4x3"] == "xpass"
    assert got["mul-f32-4x3"] == "xpass"
    assert got["div-f32-4x3"] == "pass"
    assert report.failed()
    assert report.summary[name].xfail == 1 and report.summary[name].xpass == 2


def test_cross_backend_agreement(throwaway: Callable[..., str]) -> None:
    """A backend that disagrees with a passing one is listed; two identical wrong backends
    point at the reference."""
    a = throwaway("wrong_a", dict(KERNELS, add=_add_as_sub))
    b = throwaway("wrong_b", dict(KERNELS, add=_add_as_sub))
    report = run(["cpu_numpy", a, b], "add-f32-4x3")
    pairs = {d.backends: d.status for d in report.disagreements}
    assert pairs[("cpu_numpy", a)] == "disagree"
    assert pairs[("cpu_numpy", b)] == "disagree"
    assert pairs[(a, b)] == "suspect-reference"
    assert not any(d.status == "fail" for d in report.disagreements)


def test_backend_that_cannot_be_created_fails_every_case() -> None:
    """An unknown backend name is reported as failures with the reason, not dropped."""
    report = run(["no_such_backend"], "add-f32-4x3")
    assert {r.status for r in report.results} == {"fail"}
    res = report.results[0]
    assert res.status == "fail" and res.error and "no_such_backend" in res.error


def test_summary_counts_and_markdown() -> None:
    """The summary counts statuses per backend; Markdown shows pass/fail/unsupported cells."""
    results = [
        CaseResult(
            op="add",
            case="add-a",
            backend="x",
            status="pass",
            max_abs_err=0.0,
            nmse=0.0,
            dtype="f32",
        ),
        CaseResult(
            op="add",
            case="add-b",
            backend="x",
            status="fail",
            max_abs_err=float("inf"),
            nmse=1.0,
            error="bad",
            dtype="f16",
        ),
        CaseResult(
            op="sin",
            case="sin-a",
            backend="x",
            status="unsupported",
            max_abs_err=None,
            nmse=None,
            error="no kernel",
            dtype="f32",
        ),
    ]
    rep = ConformanceReport.build(["x"], results)
    s = rep.summary["x"]
    assert (s.passed, s.failed, s.unsupported, s.total) == (1, 1, 1, 3)
    assert s.unsupported_ops == ["sin"] and s.failed_ops == ["add"]
    assert rep.failed()
    assert json.loads(rep.to_json())["results"][1]["max_abs_err"] is None
    md = rep.to_markdown()
    assert "| `add` | **fail** (1/2) |" in md and "| `sin` | unsupported |" in md
    assert "FAIL 1/1" in rep.table()


def test_progress_reports_each_cell() -> None:
    """``progress`` gets one line per case and backend."""
    lines: list[str] = []
    report = run(["cpu_numpy"], "neg-f*", progress=lines.append)
    assert len(lines) == len(report.results) and all(" pass" in ln for ln in lines)
    assert np.all([r.max_abs_err == 0 for r in report.results])


def test_xfails_file_is_found_in_the_installed_package() -> None:
    """cpu_numpy's ``xfails.txt`` ships inside its package and is found from the backend."""
    from mlplug.conformance.xfails import xfails_file

    package = Path(cpu_numpy.__file__).resolve().parent
    be = cpu_numpy.CpuNumpyBackend(None)
    try:
        assert xfails_file(be) == package / "xfails.txt"
    finally:
        be.close()
