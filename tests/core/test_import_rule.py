"""The import rule (STYLE section 2): ``import mlplug`` and ``mlplug backends`` load no runtime.

Each check runs in a fresh interpreter and then inspects that process: ``sys.modules`` must not
hold ``torch`` and ``/proc/self/maps`` must not show a ggml shared library (the ggml plugin
opens it with ctypes, which ``sys.modules`` would not reveal). Every installed plugin's entry
point is imported by ``mlplug backends``, so the rule is checked for all of them at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROBE = textwrap.dedent(
    """
    import json, sys

    {body}

    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        maps = None
    print(json.dumps({{
        "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
        "ggml_mapped": None if maps is None else sorted(
            {{line.split()[-1] for line in maps.splitlines() if "libggml" in line}}
        ),
    }}))
    """
)


def run_probe(body: str) -> dict[str, object]:
    """Run ``body`` in a fresh interpreter and return what it loaded."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


needs_proc = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")


@needs_proc
def test_import_mlplug_loads_no_runtime() -> None:
    """``import mlplug`` imports no torch and maps no libggml."""
    loaded = run_probe("import mlplug")
    assert loaded == {"torch": [], "ggml_mapped": []}


@needs_proc
def test_mlplug_backends_loads_no_runtime() -> None:
    """``mlplug backends`` (every plugin's entry point imported) loads no runtime."""
    body = textwrap.dedent(
        """
        import contextlib, io
        from mlplug.cli import main
        from mlplug.registry import manager
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["backends"]) == 0
        assert manager().plugins() is not None
        """
    )
    loaded = run_probe(body)
    assert loaded == {"torch": [], "ggml_mapped": []}


@needs_proc
def test_the_probe_detects_a_loaded_runtime() -> None:
    """The check itself works: importing torch (when installed) shows up in the probe."""
    pytest.importorskip("torch")
    loaded = run_probe("import torch")
    assert loaded["torch"]


@needs_proc
def test_the_probe_detects_a_mapped_libggml() -> None:
    """The check itself works: opening libggml-base with ctypes shows up in the maps."""
    import importlib.util

    spec = importlib.util.find_spec("libggml")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("libggml-python is not installed")
    libs = sorted(
        p for d in spec.submodule_search_locations for p in Path(d).glob("lib*/libggml-base.so*")
    )
    if not libs:
        pytest.skip("libggml-python ships no libggml-base here")
    loaded = run_probe(f"import ctypes; ctypes.CDLL({str(libs[0])!r})")
    assert loaded["ggml_mapped"]
