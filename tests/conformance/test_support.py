"""Support that cannot shrink silently, error cases, and reproducible failures.

A backend author meets these when a kernel goes missing (the pinned ``unsupported.txt`` turns the
new unsupported cases into failures), when a selection runs nothing, with ``--strict``, when the
(op, dtype) pairs a backend declares disagree with what it does, when an error case is not
raised, and when a failure has to be rerun alone with its data written to a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from mlplug import register_backend
from mlplug.cli import main
from mlplug.conformance import Arg, Case, Tolerance, all_cases, run, run_case
from mlplug.conformance.runner import prepare
from mlplug.conformance.xfails import UNSUPPORTED_FILE, pin_file
from mlplug.errors import DTypeError, ShapeError
from mlplug.registry import manager

cpu_numpy = pytest.importorskip("mlplug_cpu_numpy.backend")

MakeBackend = Callable[..., str]

_HEADER = "# pinned by the test\n"


@pytest.fixture
def make_backend(tmp_path: Path) -> Iterator[MakeBackend]:
    """Register a cpu_numpy-derived backend without some kernels, pinned or not."""
    names: list[str] = []

    def make(
        name: str,
        *,
        drop: tuple[str, ...] = (),
        pinned: str | None = None,
        declared: set[tuple[str, str]] | None = None,
    ) -> str:
        folder = tmp_path / name
        folder.mkdir()
        if pinned is not None:
            (folder / UNSUPPORTED_FILE).write_text(_HEADER + pinned, encoding="utf-8")

        class Derived(cpu_numpy.CpuNumpyBackend):  # type: ignore[misc, name-defined]
            kernels: ClassVar[dict[str, Any]] = {
                k: v for k, v in cpu_numpy.CpuNumpyBackend.kernels.items() if k not in drop
            }
            xfails_path: ClassVar[str] = str(folder / "xfails.txt")

            def supported_ops(self) -> set[tuple[str, str]] | None:
                return declared

        Derived.name = name
        register_backend(name, Derived, devices=lambda: Derived(None).devices())
        names.append(name)
        return name

    yield make
    for name in names:
        manager().unregister_backend(name)


def _statuses(report: Any) -> dict[str, str]:
    return {r.case: r.status for r in report.results}


def test_in_repo_plugins_pin_their_unsupported_sets() -> None:
    """Each installed in-repo plugin ships unsupported.txt, so its support is pinned."""
    from mlplug.registry import new_backend

    in_repo = [b.name for b in manager().backends() if b.name in ("cpu_numpy", "ggml", "torch")]
    assert in_repo
    for name in in_repo:
        with new_backend(None, backend=name) as be:
            assert pin_file(be) is not None, name


def test_kernel_removed_from_pinned_backend_fails(make_backend: MakeBackend) -> None:
    """A pinned backend that loses its softmax kernel fails every softmax case, naming the pin."""
    name = make_backend("pinned_nosoftmax", drop=("softmax",), pinned="")
    report = run([name], "softmax")
    value_cases = [r for r in report.results if r.dtype != "err"]
    assert value_cases and all(r.status == "fail" for r in value_cases)
    assert all("support shrank" in (r.error or "") for r in value_cases)
    assert report.failed()


def test_same_backend_unpinned_only_counts(make_backend: MakeBackend) -> None:
    """Without a pin, the lost op is counted per op in the summary and the JSON, not failed."""
    name = make_backend("unpinned_nosoftmax", drop=("softmax",))
    report = run([name], "softmax")
    summary = report.summary[name]
    n_value_cases = sum(1 for c in all_cases() if c.op == "softmax" and c.expect_error is None)
    assert summary.unsupported_by_op == {"softmax": n_value_cases}
    assert not summary.pinned
    assert not report.failed()
    data = json.loads(report.to_json())
    assert data["summary"][name]["unsupported_by_op"] == {"softmax": n_value_cases}
    assert any("unsupported cases by op (not pinned): softmax" in x for x in report.summary_lines())


def test_strict_fails_on_unsupported(make_backend: MakeBackend) -> None:
    """``strict`` turns any unsupported case into a failure of the run, saying why."""
    name = make_backend("strict_nosoftmax", drop=("softmax",))
    report = run([name], "softmax", strict=True)
    assert report.failed()
    assert any("--strict" in p for p in report.problems())


def test_pinned_case_that_runs_asks_for_the_list_to_be_updated(make_backend: MakeBackend) -> None:
    """A pinned case that runs and passes is an xpass telling to remove it from the list."""
    name = make_backend("stale_pin", pinned="softmax-f32-10x4   said to lack softmax\n")
    report = run([name], "softmax-f32-10x4")
    result = next(r for r in report.results if r.case == "softmax-f32-10x4")
    assert result.status == "xpass"
    assert "remove it from the list" in (result.error or "")
    assert report.failed()


def test_zero_cases_ran_fails(make_backend: MakeBackend) -> None:
    """A run in which a backend ran nothing (every case unsupported) fails, saying so."""
    name = make_backend("nothing_runs", drop=("softmax",))
    report = run([name], "softmax-f32-*")
    assert report.summary[name].ran == 0
    assert report.failed()
    assert any("no case ran" in p for p in report.problems())


def test_declared_support_is_checked_both_ways(make_backend: MakeBackend) -> None:
    """Declared-but-unsupported and passing-but-undeclared pairs are both reported."""
    name = make_backend("claims", drop=("softmax",), declared={("softmax", "f32"), ("neg", "f32")})
    report = run([name], "softmax-f32-10x4")
    report2 = run([name], "sqr-f32-*")
    s, s2 = report.summary[name], report2.summary[name]
    assert s.declares_support and s.declared_but_failing == ["softmax f32"]
    assert report.failed()
    assert s2.working_but_undeclared == ["sqr f32"]
    assert not report2.failed()  # a warning only
    assert "sqr f32" in json.loads(report2.to_json())["summary"][name]["working_but_undeclared"]


def _error_case(build: Callable[..., Any]) -> Case:
    return Case(
        id="add-err-test",
        op="add",
        args=(Arg((4, 3)), Arg((3, 3))),
        build=build,
        reference=lambda *a: [],
        tol=Tolerance(ulp=0),
        dtype="err",
        expect_error=ShapeError,
    )


@pytest.mark.parametrize(
    ("build", "status", "text"),
    [
        (lambda ctx, x: x[0].add(ctx, x[1]), "pass", None),
        (lambda ctx, x: x[0].neg(ctx), "fail", "nothing was raised"),
        (lambda ctx, x: x[0].rows(ctx, x[1]), "fail", "got DTypeError"),
    ],
)
def test_error_case_needs_exactly_the_expected_error(
    build: Callable[..., Any], status: str, text: str | None
) -> None:
    """An error case passes only when the named typed error is raised."""
    with cpu_numpy.CpuNumpyBackend(None) as be:
        out = run_case(be, _error_case(build))
    assert out.status == status
    if text:
        assert text in (out.error or "")


def test_every_op_with_checked_inputs_has_an_error_case() -> None:
    """Every public op whose inputs the core checks has at least one error case."""
    from mlplug.conformance.completeness import public_ops

    nothing_to_reject = {"bytes", "floats", "duplicate"}  # accessors; any tensor duplicates
    with_errors = {c.op for c in all_cases() if c.expect_error is not None}
    assert sorted(set(public_ops()) - with_errors - nothing_to_reject) == []
    kinds = {c.expect_error for c in all_cases() if c.expect_error is not None}
    assert {ShapeError, DTypeError} <= kinds


def test_seed_comes_from_the_case_id_and_the_seed() -> None:
    """Inputs depend on the case id and a seed number: same pair, same data; else other data."""
    a, b = (next(c for c in all_cases() if c.id == i) for i in ("add-f32-4x3", "sub-f32-4x3"))
    same = prepare(a, 0).raw[0]
    assert np.array_equal(same, prepare(a, 0).raw[0])
    assert not np.array_equal(same, prepare(a, 1).raw[0])
    assert not np.array_equal(same, prepare(b, 0).raw[0])


def test_failure_prints_one_rerun_command_and_dump_writes_the_case(
    make_backend: MakeBackend, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A failed case is followed by the command that reruns it; --dump writes its data."""
    name = make_backend("cli_nosoftmax", drop=("softmax",), pinned="")
    assert main(["conformance", "-b", name, "--case", "softmax-f32-10x4", "--seed", "2", "-q"]) == 1
    lines = capsys.readouterr().out.splitlines()
    command = f"mlplug conformance --backend {name} --case softmax-f32-10x4 --seed 2"
    assert [x.strip() for x in lines if "mlplug conformance" in x] == [command]
    dump = tmp_path / "case.npz"
    argv = ["conformance", "-b", "cpu_numpy", "--case", "softmax-f32-10x4", "--seed", "2"]
    assert main([*argv, "--dump", str(dump), "-q"]) == 0
    data = np.load(dump)
    assert str(data["case"]) == "softmax-f32-10x4" and int(data["seed"]) == 2
    np.testing.assert_allclose(data["cpu_numpy.output0"], data["reference0"], rtol=1e-5)
    assert data["input0"].shape == (4, 10)


def test_dump_needs_one_case_and_case_must_exist(capsys: pytest.CaptureFixture[str]) -> None:
    """--dump with several cases, or an unknown --case id, is a usage error (exit 2)."""
    assert main(["conformance", "-b", "cpu_numpy", "--op", "softmax", "--dump", "x.npz"]) == 2
    assert "--case ID" in capsys.readouterr().err
    assert main(["conformance", "-b", "cpu_numpy", "--case", "softmax-f32-nope"]) == 2
    assert "'softmax-f32-nope'" in capsys.readouterr().err


def test_pin_unsupported_prints_the_list(
    make_backend: MakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    """--pin-unsupported prints the run's unsupported cases in unsupported.txt format."""
    name = make_backend("pin_list", drop=("softmax",))
    main(["conformance", "-b", name, "--op", "softmax-f32-10x4*", "--pin-unsupported", "-q"])
    lines = capsys.readouterr().out.splitlines()
    assert [x.split()[0] for x in lines] == [
        c.id for c in all_cases() if c.id.startswith("softmax-f32-10x4")
    ]


def _pytest_in(folder: Path, *args: str, seed: str = "") -> Any:
    import os
    import subprocess
    import sys
    import textwrap

    (folder / "test_mlplug_conformance.py").write_text(
        "from mlplug.conformance.testing import test_op  # noqa: F401\n", encoding="utf-8"
    )
    # every in-repo backend runs every case: a cpu_numpy without its cast kernel, registered by
    # the run's conftest, has unsupported cases (pinned beside it, as a plugin pins its own)
    (folder / UNSUPPORTED_FILE).write_text(_HEADER + "cast-*  no cast kernel\n", encoding="utf-8")
    (folder / "conftest.py").write_text(
        textwrap.dedent(f"""\
            from mlplug import register_backend
            from mlplug_cpu_numpy.backend import CpuNumpyBackend

            class NoCast(CpuNumpyBackend):
                name = "nocast"
                kernels = {{k: v for k, v in CpuNumpyBackend.kernels.items() if k != "cast"}}
                xfails_path = {str(folder / "xfails.txt")!r}

            register_backend("nocast", NoCast, devices=lambda: NoCast(None).devices())
            """),
        encoding="utf-8",
    )
    env = dict(os.environ, MLPLUG_CONFORMANCE_SEED=seed)
    argv = [sys.executable, "-m", "pytest", "-p", "mlplug.conformance", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*argv, "--mlplug-backend", "nocast", "-q", "-rA", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_pytest_plugin_strict_seed_and_empty_selection(tmp_path: Path) -> None:
    """Under pytest: --mlplug-strict fails an unsupported case with its rerun command (seed from
    MLPLUG_CONFORMANCE_SEED); without it the case is an xfail counted per op; a pattern
    matching no case is a usage error."""
    case = "cast-f32-to-q4_k-256x2"  # and its layout variant: unsupported on nocast (pinned)
    strict = _pytest_in(tmp_path, "--mlplug-op", case, "--mlplug-strict", seed="7")
    assert strict.returncode == 1, strict.stdout
    assert f"mlplug conformance --backend nocast --case {case} --seed 7" in strict.stdout
    lenient = _pytest_in(tmp_path, "--mlplug-op", case)
    assert lenient.returncode == 0, lenient.stdout
    assert "2 xfailed" in lenient.stdout
    assert "unsupported cases by op: cast 2" in lenient.stdout
    empty = _pytest_in(tmp_path, "--mlplug-op", "nosuchop")
    assert empty.returncode == 2  # a collection error: nothing runs
    assert "no conformance case matches --mlplug-op 'nosuchop'" in empty.stderr + empty.stdout
