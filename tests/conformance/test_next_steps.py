"""What to implement next: charging cases to missing ops and dtypes, ranking, renderings."""

from __future__ import annotations

from mlplug.conformance import CaseResult, ConformanceReport
from mlplug.conformance.next_steps import (
    MODEL_FAMILIES,
    OP_FAMILIES,
    family_of,
    missing_item,
    model_count,
    next_steps,
)
from mlplug.errors import NotSupportedError
from mlplug.ops import PRIMITIVES


def result(
    op: str, status: str, error: str | None = None, backend: str = "b", case: str = ""
) -> CaseResult:
    """A CaseResult of ``op`` on ``backend``."""
    return CaseResult(
        op=op,
        case=case or f"{op}-f32-{status}",
        backend=backend,
        status=status,  # type: ignore[arg-type]
        max_abs_err=None,
        nmse=None,
        error=error,
        dtype="f32",
    )


def unsupported(backend: str, op: str, reason: str) -> str:
    """The error text a NotSupportedError gives (what the runner records)."""
    return str(NotSupportedError(backend, op, reason))


def test_the_tables_name_only_primitives() -> None:
    """A renamed or removed primitive cannot linger in the family or model tables."""
    in_families = [op for ops in OP_FAMILIES.values() for op in ops]
    assert len(in_families) == len(set(in_families)), "an op is in two families"
    assert set(in_families) <= set(PRIMITIVES)
    for family, ops in MODEL_FAMILIES.items():
        assert ops <= set(PRIMITIVES), (family, sorted(ops - set(PRIMITIVES)))


def test_a_case_is_charged_to_what_was_missing() -> None:
    """Unsupported: the primitive the error names (not the public op), or the dtype; failed: the
    op; a pass or a known failure: nothing."""
    assert missing_item(result("rms_norm", "unsupported", unsupported("b", "rms_norm", "x"))) == (
        "rms_norm"
    )
    # a composite (layer_norm) missing a primitive (norm) charges the primitive
    err = unsupported("b", "norm", "no kernel for this op")
    assert missing_item(result("layer_norm", "unsupported", err)) == "norm"
    err = unsupported("b", "new tensor", "dtype F16")
    assert missing_item(result("add", "unsupported", err)) == "dtype F16"
    assert missing_item(result("slice", "fail", "wrong values")) == "slice"
    assert missing_item(result("add", "pass")) is None
    assert missing_item(result("add", "xfail", "known")) is None


def test_ranking_is_cases_times_one_plus_model_families() -> None:
    """mulmat (every family) outranks an op no family uses even with fewer cases."""
    no_kernel = "no kernel for this op"
    results = [result("mulmat", "unsupported", unsupported("b", "mulmat", no_kernel), case=f"m{i}")
               for i in range(2)]  # fmt: skip
    results += [result("tri", "unsupported", unsupported("b", "tri", no_kernel), case=f"t{i}")
                for i in range(3)]  # fmt: skip
    results.append(result("cos", "unsupported", unsupported("other", "cos", no_kernel), "other"))
    steps = next_steps(results, "b")
    assert [s.item for s in steps] == ["mulmat", "tri"]
    assert steps[0].models == model_count("mulmat") == len(MODEL_FAMILIES)
    assert steps[0].score == 2 * (1 + len(MODEL_FAMILIES))
    assert steps[1].score == 3 * (1 + model_count("tri"))
    assert steps[0].family == family_of("mulmat") == "linalg"
    assert family_of("dtype Q8_0") == "dtypes" and family_of("slice") == "other"


def test_report_prints_and_writes_the_to_do_list() -> None:
    """The terminal lines group by family; the Markdown has the badge and the ranked table."""
    results = [
        result("add", "pass"),
        result("softmax", "unsupported", unsupported("b", "softmax", "no kernel for this op")),
        result("add", "unsupported", unsupported("b", "new tensor", "dtype F16"), case="a16"),
    ]
    report = ConformanceReport.build(["b"], results)
    lines = report.next_steps_lines("b")
    assert lines[0].startswith("implement next on b, by op family")
    assert any(ln.split()[0] == "reduce" and "softmax (" in ln for ln in lines[1:])
    assert any(ln.split()[0] == "dtypes" and "dtype F16 (" in ln for ln in lines[1:])
    md = report.to_markdown()
    assert "![b conformance](https://img.shields.io/badge/b-1%2F3%20passed-yellow)" in md
    assert "### Implement next on b" in md and "| reduce | `softmax` |" in md
    complete = ConformanceReport.build(["b"], [result("add", "pass")])
    assert complete.next_steps_lines("b") == []
    assert "badge/b-1%2F1%20passed-green" in complete.to_markdown()
    assert "Implement next" not in complete.to_markdown()
    failing = ConformanceReport.build(["b"], [result("add", "fail", "bad")])
    assert failing.badge_url("b").endswith("-red")
