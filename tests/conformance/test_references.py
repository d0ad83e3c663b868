"""The suite's own machinery, without a backend: references vs worked examples, metrics, xfails."""

from __future__ import annotations

import numpy as np
import pytest

from mlplug.conformance import Tolerance, all_cases
from mlplug.conformance import reference as R
from mlplug.conformance.data import LAYOUTS
from mlplug.conformance.metrics import compare, nmse, ulp_distance
from mlplug.conformance.runner import ReferenceFailure, prepare, select
from mlplug.conformance.xfails import parse_xfails
from mlplug.dtypes import DType


def test_every_reference_runs_and_matches_the_worked_examples() -> None:
    """Every case's reference computes, and reproduces its worked example if it has one."""
    problems = []
    for case in all_cases():
        try:
            prepare(case, 0)
        except ReferenceFailure as exc:
            problems.append(str(exc))
    assert problems == []
    assert sum(1 for c in all_cases() if c.gold) >= 60  # worked examples with known results


def test_gold_check_catches_a_wrong_reference() -> None:
    """A reference that disagrees with the case's gold values is reported, not trusted."""
    from dataclasses import replace

    case = next(c for c in all_cases() if c.id == "mulmat-f32-gold-3x2")
    wrong = replace(case, id="mulmat-f32-gold-wrong", reference=lambda a, b: R.mulmat(b, a))
    with pytest.raises(ReferenceFailure, match="worked example"):
        prepare(wrong, 0)


def test_inputs_depend_only_on_seed_and_id() -> None:
    """The same seed draws the same inputs; another seed draws others."""
    case = next(c for c in all_cases() if c.id == "mulmat-f32-8x5x3")
    a, b, c = prepare(case, 0), prepare(case, 0), prepare(case, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a.raw, b.raw, strict=True))
    assert not np.array_equal(a.raw[0], c.raw[0])


def test_sort_keys_are_distinct() -> None:
    """Argsort and top_k inputs compared by index never tie (the tie order is unspecified; the
    ``-values-`` cases with ties compare the gathered keys instead)."""
    for case in select(all_cases(), "argsort") + select(all_cases(), "top_k"):
        if "-values-" in case.id:
            continue
        x = prepare(case, 0).operands[0]
        rows = x.reshape(-1, x.shape[-1])
        assert all(len(set(r.tolist())) == r.size for r in rows), case.id


def test_nmse_and_ulp_metrics() -> None:
    """NMSE is ggml's; ulp distance counts representable values, 0 and -0 are equal."""
    assert nmse(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert nmse(np.array([1.1, 2.0]), np.array([1.0, 2.0])) == pytest.approx(0.01 / 5)
    one = np.float32(1.0)
    nxt = np.nextafter(one, np.float32(2))
    assert ulp_distance(np.array([nxt]), np.array([one]), DType.F32).tolist() == [1.0]
    assert ulp_distance(
        np.array([-0.0], np.float32), np.array([0.0], np.float32), DType.F32
    ).tolist() == [0.0]
    h = np.float16(-1.0)
    assert ulp_distance(
        np.array([np.nextafter(h, np.float16(-2))]), np.array([h]), DType.F16
    ).tolist() == [1.0]


def test_compare_exact_and_tolerance_modes() -> None:
    """Exact mode rounds the reference to the result dtype; tolerance mode checks NMSE too."""
    ref = np.array([1.0 + 1e-9, 2.0])
    assert compare(np.array([1.0, 2.0], np.float32), ref, Tolerance(ulp=0), DType.F32).passed
    off = np.array([1.0, np.nextafter(np.float32(2), np.float32(3))], np.float32)
    assert not compare(off, ref, Tolerance(ulp=0), DType.F32).passed
    assert compare(off, ref, Tolerance(ulp=1), DType.F32).passed
    loose = Tolerance(nmse=1e-6, atol=1.0)
    assert not compare(np.array([1.0, 2.5], np.float32), ref, loose, DType.F32).passed
    nan = np.array([np.nan], np.float32)
    assert compare(nan, np.array([np.nan]), Tolerance(ulp=0), DType.F32).passed
    assert not compare(nan, np.array([1.0]), Tolerance(atol=1e9), DType.F32).passed


def test_parse_xfails() -> None:
    """xfails.txt: id or glob, whitespace, reason; comments and blank lines ignored."""
    text = "# header\n\nmulmat-q4_k-256x3x2   slow path is wrong\nrope-f16-*\tF16 angle\nbare\n"
    assert parse_xfails(text) == {
        "mulmat-q4_k-256x3x2": "slow path is wrong",
        "rope-f16-*": "F16 angle",
        "bare": "declared known failure",
    }


def test_select_patterns() -> None:
    """A plain word selects an op (not its prefixes' siblings); globs match ops and ids."""
    ops = {c.op for c in select(all_cases(), "mulmat")}
    assert ops == {"mulmat"}
    assert {c.op for c in select(all_cases(), "mulmat*")} == {
        "mulmat",
        "mulmat_full_prec",
        "mulmat_id",
    }
    # a case id selects the case and its layout variants (``<id>-<layout>[-in<i>]``)
    assert [c.id for c in select(all_cases(), "add-f32-4x3")] == [
        "add-f32-4x3",
        *(f"add-f32-4x3-{lay}" for lay in LAYOUTS),
        "add-f32-4x3-permuted-in0",
        "add-f32-4x3-gapped-in1",
    ]
    assert all("-f16-" in c.id for c in select(all_cases(), "*-f16-*"))
