"""``MLPLUG_GGML_LIB`` pointing at the ggml that llama-cpp-python built (its ``lib/`` folder).

Skipped where llama-cpp-python (an optional benchmark dependency) is not installed. The package
is located, never imported: importing it would open its libraries in this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlplug_ggml")

from mlplug_ggml import _lib

ROOT = Path(__file__).resolve().parents[3]

#: Ops a llama/gemma forward pass runs: each must have cases, all passing, on that build.
MODEL_OPS = (
    "mulmat",
    "softmax",
    "rms_norm",
    "rope",
    "rows",
    "set_rows",
    "scaled_dot_product_attention",
    "clamp",
    "add",
    "mul",
)


def _llama_cpp_lib() -> Path | None:
    """The folder of llama-cpp-python's ggml libraries, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return folder if (folder / "libggml.so").is_file() else None


LLAMA_LIB = _llama_cpp_lib()
pytestmark = pytest.mark.skipif(LLAMA_LIB is None, reason="llama-cpp-python is not installed")


def _mlplug(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mlplug ARGS`` with MLPLUG_GGML_LIB set to llama-cpp-python's ggml."""
    env = dict(os.environ)
    paths = [str(ROOT / "core"), str(ROOT / "plugins" / "ggml"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env[_lib.ENV_LIB] = str(LLAMA_LIB)
    env["MLPLUG_PLUGINS"] = "ggml"
    return subprocess.run(
        [sys.executable, "-m", "mlplug", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_devices_report_llama_cpp_build() -> None:
    """``mlplug devices --json`` computes on that build and says it came from the variable."""
    proc = _mlplug("devices", "--backend", "ggml", "--json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    cpu = next(r for r in records if r["backend"] == "cpu")
    assert cpu["LibraryPath"] == [str(LLAMA_LIB)]
    details = cpu["build"]["details"]
    assert details["layout"] == _lib.LAYOUT_ENV
    assert details["library"] == str(LLAMA_LIB / "libggml.so")
    assert "MLPLUG_GGML_LIB" in cpu["build"]["summary"]


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The ggml conformance report on llama-cpp-python's ggml (the whole suite, run once)."""
    report = tmp_path_factory.mktemp("llama_cpp_ggml") / "report.json"
    proc = _mlplug("conformance", "--backend", "ggml", "-q", "--json", str(report))
    assert report.exists(), proc.stderr[-2000:]
    results: list[dict[str, Any]] = json.loads(report.read_text())["results"]
    return results


@pytest.mark.parametrize("op", MODEL_OPS)
def test_model_ops_pass_on_llama_cpp_ggml(op: str, conformance: list[dict[str, Any]]) -> None:
    """The conformance cases of each op a model runs pass on llama-cpp-python's ggml."""
    cases = [r for r in conformance if r["op"] == op]
    assert cases, f"no conformance case of {op!r}"
    bad = [f"{r['case']}: {r['error']}" for r in cases if r["status"] == "fail"]
    assert not bad, "\n".join(bad)


def test_whole_suite_passes_on_llama_cpp_ggml(conformance: list[dict[str, Any]]) -> None:
    """No conformance case fails on that build (unsupported ones are reported, not failed)."""
    bad = [f"{r['case']}: {r['error']}" for r in conformance if r["status"] == "fail"]
    assert not bad, "\n".join(bad)
