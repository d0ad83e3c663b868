"""The catalogue's tiers, its layout transform and its fused-op cases, met as a backend author
meets them: ``--tier full`` runs the real sizes, wrong kernels derived from cpu_numpy are
rejected by the cases written for them, and a case can ask for flash attention."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlplug import FlashAttentionType
from mlplug.conformance import Arg, all_cases, run, select
from mlplug.conformance.case import Case, Tolerance
from mlplug.conformance.data import LAYOUTS, case_rng, draw, make_input
from mlplug.conformance.runner import run_case
from mlplug.dtypes import DType
from mlplug.errors import ShapeError
from mlplug.ops.table import WRITE_OPS
from mlplug.registry import manager, register_backend

cpu_numpy = pytest.importorskip("mlplug_cpu_numpy.backend", reason="needs the cpu_numpy plugin")
KERNELS: dict[str, Any] = dict(cpu_numpy.CpuNumpyBackend.kernels)


@pytest.fixture
def throwaway() -> Iterator[Callable[..., str]]:
    """Register backends derived from cpu_numpy with some kernels replaced; unregister after."""
    names: list[str] = []

    def make(name: str, **kernels: Any) -> str:
        cls: type = type(
            f"Throwaway_{name}",
            (cpu_numpy.CpuNumpyBackend,),
            {"name": name, "kernels": dict(KERNELS, **kernels)},
        )
        register_backend(name, lambda path, params: cls(path, params))
        names.append(name)
        return name

    yield make
    for n in names:
        manager().unregister_backend(n)


def _statuses(name: str, pattern: str, tier: str = "default") -> dict[str, str]:
    return {r.case: r.status for r in run([name], pattern, tier=tier).results}


# -- tiers ------------------------------------------------------------------------------------
def test_the_full_tier_holds_real_sizes_and_the_default_tier_does_not() -> None:
    """Large K, N >= 9, long rows and many keys live in the full tier only."""
    default, full = all_cases(), all_cases("full")
    assert {c.tier for c in default} == {"default"} and {c.tier for c in full} == {"full"}
    assert [c.id for c in all_cases("all")] == [c.id for c in default + full]

    def biggest_k(cases: tuple[Case, ...], op: str) -> int:
        return max(c.args[0].ne[0] for c in cases if c.op == op and c.args)

    assert biggest_k(full, "mulmat") == 4096 and biggest_k(default, "mulmat") < 1024
    assert biggest_k(full, "softmax") >= 1025
    sdpa = [c for c in full if c.op == "scaled_dot_product_attention"]
    assert max(c.args[1].ne[2] for c in sdpa) >= 37
    assert {c.args[0].ne[0] for c in sdpa} >= {64, 128}
    assert any(c.backend_params for c in sdpa) and any(not c.backend_params for c in sdpa)
    quant_k = {c.args[0].ne[0] // 32 for c in full if c.op == "mulmat" and c.dtype == "q4_0"}
    assert {3, 5, 7} <= quant_k


def test_an_unknown_tier_is_refused() -> None:
    """A misspelt tier is an error naming the tiers, not an empty run."""
    with pytest.raises(ValueError, match="default, full, all"):
        all_cases("ful")


def test_run_selects_by_tier() -> None:
    """``run(tier=...)`` runs that tier's cases only."""
    full = run(["cpu_numpy"], "softmax", tier="full")
    assert [r.case for r in full.results] == [c.id for c in select(all_cases("full"), "softmax")]
    assert any("-full-" in r.case for r in full.results) and not full.failed()
    default = run(["cpu_numpy"], "softmax")
    assert [r.case for r in default.results] == [c.id for c in select(all_cases(), "softmax")]
    assert not any("-full-" in r.case for r in default.results)


def test_cli_runs_the_full_tier(tmp_path: Path) -> None:
    """``mlplug conformance --tier full`` runs the real-size cases and exits 0 on cpu_numpy."""
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlplug",
            "conformance",
            "--backend",
            "cpu_numpy",
            "--tier",
            "full",
            "--op",
            "softmax",
            "-q",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    cases = {r["case"] for r in __import__("json").loads(out.read_text())["results"]}
    assert cases == {c.id for c in select(all_cases("full"), "softmax")}


def test_pytest_plugin_selects_the_tier(tmp_path: Path) -> None:
    """``--mlplug-tier full`` collects the full tier's cases."""
    import os

    (tmp_path / "test_c.py").write_text(
        "from mlplug.conformance.testing import test_op  # noqa: F401\n"
    )
    args = [sys.executable, "-m", "pytest", "-p", "mlplug.conformance", "--collect-only", "-q",
            "--mlplug-backend", "cpu_numpy", "--mlplug-op", "softmax", "-p", "no:cacheprovider",
            "--mlplug-tier=full", str(tmp_path / "test_c.py")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLPLUG_CONFORMANCE_TIER"}
    proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    collected = {line.split("[cpu_numpy-")[1].rstrip("]") for line in
                 proc.stdout.splitlines() if "[cpu_numpy-" in line}  # fmt: skip
    assert collected == {c.id for c in select(all_cases("full"), "softmax")}


def test_pytest_plugin_takes_the_tier_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the option, ``$MLPLUG_CONFORMANCE_TIER`` names the tier; else ``default``."""
    from mlplug.conformance.pytest_plugin import TIER_ENV, tier

    class Config:
        def __init__(self, value: str | None) -> None:
            self.value = value

        def getoption(self, name: str, default: object = None) -> object:
            return self.value if name == "mlplug_tier" else default

    monkeypatch.delenv(TIER_ENV, raising=False)
    assert tier(Config(None)) == "default"  # type: ignore[arg-type]
    monkeypatch.setenv(TIER_ENV, "full")
    assert tier(Config(None)) == "full"  # type: ignore[arg-type]
    assert tier(Config("all")) == "all"  # type: ignore[arg-type]


# -- broadcasting: tile for the binary ops, repeat for mulmat ---------------------------------
def _mulmat_tiled(ctx: Any, t: Any) -> None:
    """A mulmat that tiles a's batches over b's instead of repeating them."""
    a, b = t.src
    av, bv = ctx.values(a), ctx.values(b)
    av = np.tile(av, (b.ne[3] // a.ne[3], b.ne[2] // a.ne[2], 1, 1))
    ctx.put(t, bv @ av.swapaxes(-1, -2))


def _add_repeated(ctx: Any, t: Any) -> None:
    """An add that repeats b's planes over a's instead of tiling them."""
    a, b = t.src
    av, bv = ctx.values(a), ctx.values(b)
    for axis, (na, nb) in enumerate(zip(reversed(a.ne), reversed(b.ne))):
        if nb != na:
            bv = np.repeat(bv, na // nb, axis=axis)
    ctx.put(t, av + bv)


def test_broadcast_rules_swapped_are_caught_on_dims_2_and_3(
    throwaway: Callable[..., str],
) -> None:
    """Tile instead of repeat (mulmat) and repeat instead of tile (add) both fail."""
    name = throwaway("swapped_bcast", mulmat=_mulmat_tiled, add=_add_repeated)
    got = _statuses(name, "*-bcast23-*")
    assert got["mulmat-f32-bcast23-32x3x2x3"] == "fail"
    assert got["add-f32-bcast23-8x3x4x6"] == "fail"
    assert _statuses("cpu_numpy", "*-bcast23-*") == dict.fromkeys(got, "pass")


# -- layouts ----------------------------------------------------------------------------------
def test_the_layout_transform_reaches_every_op_the_table_allows() -> None:
    """Every op with an eligible case has layout variants; write ops take them where allowed
    and have error cases where their destination must be contiguous."""
    cases = all_cases("all")
    with_layout = {c.op for c in cases if any(a.layout for a in c.args) and not c.expect_error}
    assert {"set_rows", "copy", "set_inplace"} <= with_layout
    reading = {
        c.op
        for c in cases
        if c.args
        and all(a.tensor for a in c.args)
        and not c.raw_ref
        and c.check is None
        and c.read is None
        and not c.op.startswith("Context.")
        and c.op not in WRITE_OPS
        and c.op != "view"
        and "-values-" not in c.id
        and c.expect_error is None
    }  # fmt: skip  (the special-value cases come after the transform: their values are the point)
    assert reading - with_layout == set()
    assert {c.op for c in cases if c.expect_error is ShapeError} >= {"set_inplace", "set_rows"}
    fused = [c for c in cases if c.id.endswith("-fused") and c.args[0].dtype == DType.Q4_0]
    assert fused, "quantised weights are met as rows of a fused buffer"


@pytest.mark.parametrize("dtype", [DType.F32, DType.F16, DType.Q8_0, DType.Q4_K])
def test_fused_layout_is_a_view_at_an_offset_with_nan_around(dtype: DType) -> None:
    """The ``fused`` input is slot 1 of 3 in one buffer, NaN where the other tensors are."""
    from mlplug import new_backend

    k = 256 if dtype == DType.Q4_K else 32
    arg = Arg((k, 3, 2), dtype, layout="fused")
    raw = draw(case_rng(0, "fused"), arg)
    with new_backend(None, backend="cpu_numpy") as be, be.new_context() as ctx:
        t = make_input(ctx, arg, raw)
        assert t.shape == (k, 3, 2) and t.dtype == dtype and not t.is_contiguous()
        base = t.view_src
        assert base is not None and t.view_offs > 0
        c = t.cast(ctx, DType.F32) if dtype.is_quantized else t.contiguous(ctx)
        whole = base.cast(ctx, DType.F32)
        ctx.compute(c, whole)
        got, every = c.to_numpy(), whole.to_numpy()
    from mlplug.conformance.data import operand

    np.testing.assert_array_equal(np.asarray(got, np.float64), operand(arg, raw).reshape(2, 3, k))
    assert int(np.isnan(np.asarray(every)).sum()) == 2 * every.size // 3


def test_an_error_case_passes_only_on_the_expected_error() -> None:
    """An error case fails when nothing is raised or another error is."""
    from mlplug import new_backend

    case = next(c for c in all_cases() if c.expect_error is not None)
    with new_backend(None, backend="cpu_numpy") as be:
        assert run_case(be, case).status == "pass"
        fine = replace(case, args=tuple(replace(a, layout="") for a in case.args))
        out = run_case(be, fine)
        assert out.status == "fail" and "nothing was raised" in (out.error or "")
        wrong = replace(case, expect_error=KeyError)
        out = run_case(be, wrong)
        assert out.status == "fail" and "ShapeError" in (out.error or "")


# -- fused ops against their parts, and backend parameters ------------------------------------
def _sdpa_off_by_1e4(ctx: Any, t: Any) -> None:
    KERNELS["scaled_dot_product_attention"](ctx, t)
    ctx.put(t, ctx.values(t) * 1.0001)


def test_fused_attention_is_held_to_its_decomposition(throwaway: Callable[..., str]) -> None:
    """An attention kernel 1e-4 off fails the f32 parts cases; cpu_numpy passes them all."""
    name = throwaway("sdpa_off", scaled_dot_product_attention=_sdpa_off_by_1e4)
    got = _statuses(name, "scaled_dot_product_attention-f32-parts-*")
    assert got and set(got.values()) == {"fail"}
    assert set(_statuses("cpu_numpy", "*-parts-*").values()) == {"pass"}


def _sdpa_broken_with_flash(ctx: Any, t: Any) -> None:
    KERNELS["scaled_dot_product_attention"](ctx, t)
    if ctx.backend.params.flash_attention == FlashAttentionType.ENABLED:
        ctx.put(t, ctx.values(t) * 0.5)


def test_a_case_can_ask_for_flash_attention(throwaway: Callable[..., str]) -> None:
    """Cases with backend parameters run on an instance opened with them (flash attention)."""
    name = throwaway("flash_broken", scaled_dot_product_attention=_sdpa_broken_with_flash)
    got = _statuses(name, "scaled_dot_product_attention-*-parts-*")
    assert {s for c, s in got.items() if c.endswith("-flash")} == {"fail"}
    assert {s for c, s in got.items() if not c.endswith("-flash")} == {"pass"}


def test_a_parts_case_with_a_vacuous_tolerance_is_refused() -> None:
    """Fused cases take atol/rtol: an NMSE against a zero difference would mean nothing."""
    from mlplug.conformance.cases_fused import fused_case

    with pytest.raises(ValueError, match="atol/rtol"):
        fused_case(
            "add-f32-parts-x",
            "add",
            (Arg((2,)),),
            lambda ctx, x: x[0],
            lambda ctx, x: x[0],
            lambda a: a,
            Tolerance(nmse=1e-6),
        )


def test_layouts_cover_every_kind() -> None:
    """Each layout of LAYOUTS is used by some default-tier case."""
    used = {a.layout for c in all_cases() for a in c.args}
    assert set(LAYOUTS) <= used
