"""Import rules: no runtime on import, one-way core layers, one plugin interface.

``import mlplug`` and ``mlplug backends`` load no runtime (torch, libggml). The core's modules
import only their own layer and lower ones at run time (:data:`LAYERS`; parsed with ``ast``,
function-local imports included, ``if TYPE_CHECKING:`` imports allowed). The in-tree plugin
packages import the core through ``mlplug`` and ``mlplug.plugin_api`` only.

Each check runs in a fresh interpreter and then inspects that process: ``sys.modules`` must not
hold ``torch`` and ``/proc/self/maps`` must not show a ggml shared library (the ggml plugin
opens it with ctypes, which ``sys.modules`` would not reveal). Every installed plugin's entry
point is imported by ``mlplug backends``, so the rule is checked for all of them at once.
"""

from __future__ import annotations

import ast
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


# -- one-way layers ----------------------------------------------------------------------------
CORE = Path(__file__).resolve().parents[2] / "core" / "mlplug"
PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

#: The core's layers, lowest first. A module may import (at run time) its own layer and those
#: below it; an import of a higher layer is allowed only under ``if TYPE_CHECKING:``. Each entry
#: is a module name relative to ``mlplug`` or a package prefix ending in ``.``.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "errors",
            "dtypes",
            "numerics",
            "halves",
            "paths",
            "sysinfo",
            "kquants",
            "quants",
            "_child_processes",
            "endpoints",
            "quantmm",
        ),
    ),
    (
        "devices and records",
        ("device", "buildinfo", "layers", "memory", "params", "runner", "host", "dump"),
    ),
    ("op contract", ("ops", "ops.table", "ops.records")),
    ("graph", ("_tensorbase", "graph")),
    ("op builders and tensor", ("ops.", "tensor", "kernels")),
    ("context", ("context", "array_context")),
    ("backend base", ("backend", "writers")),
    ("model files", ("modelfile", "modelfile.")),
    (
        "models",
        (
            "tokenizer",
            "tokenizer.",
            "nn",
            "nn.",
            "kvcache",
            "kvcache.",
            "models",
            "models.",
            "sample",
        ),
    ),
    ("plugin registry", ("hookspecs", "_plugin_screen", "registry", "plugin_api", "")),
    ("text generation", ("generate", "generate.")),
    ("conformance", ("conformance", "conformance.")),
    ("command line", ("cli", "cli.", "__main__")),
)


def core_modules() -> dict[str, Path]:
    """Every module of the core by dotted name (``mlplug.x.y``)."""
    found = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> int:
    """Return the rank of ``module`` (``mlplug.x``) in :data:`LAYERS`."""
    rel = module[len("mlplug.") :] if module.startswith("mlplug.") else ""
    for rank, (_, members) in enumerate(LAYERS):
        for m in members:
            if rel == m or (m.endswith(".") and rel.startswith(m)):
                return rank
    msg = f"{module} is in no layer: add it to LAYERS"
    raise AssertionError(msg)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """Return ``(line, imported mlplug module)`` for every run-time import in ``path``.

    Function-local imports count; imports under ``if TYPE_CHECKING:`` do not. ``from . import x``
    names the module ``x`` when it is one, else the package.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit(stmt)
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target == "mlplug" or target.startswith("mlplug."):
                    subs = [f"{target}.{a.name}" for a in child.names]
                    modules = [s for s in subs if s in known]
                    if len(modules) < len(subs):
                        modules.append(target)
                    found.extend((child.lineno, m) for m in modules)
            elif isinstance(child, ast.Import):
                found.extend(
                    (child.lineno, a.name)
                    for a in child.names
                    if a.name == "mlplug" or a.name.startswith("mlplug.")
                )
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def layer_violations() -> list[str]:
    """Every run-time import of a higher layer in the core, as readable lines."""
    modules = core_modules()
    known = set(modules)
    bad = []
    for module, path in modules.items():
        rank = layer_of(module)
        for line, target in runtime_imports(path, module, known):
            if target == module:
                continue
            other = layer_of(target)
            if other > rank:
                bad.append(
                    f"{path.relative_to(CORE.parent)}:{line}: {module} ({LAYERS[rank][0]}) "
                    f"imports {target} ({LAYERS[other][0]})"
                )
    return bad


def test_core_layers_import_one_way() -> None:
    """No core module imports a higher layer at run time (TYPE_CHECKING imports are fine)."""
    bad = layer_violations()
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_layer_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The scanner sees function-local imports and skips TYPE_CHECKING ones."""
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        from .errors import GraphError
        if TYPE_CHECKING:
            from .modelfile.config import Config
        def f():
            from .modelfile import model
        """
    )
    path = tmp_path / "backend.py"
    path.write_text(source)
    known = {"mlplug.errors", "mlplug.modelfile", "mlplug.modelfile.model"}
    found = runtime_imports(path, "mlplug.backend", known)
    assert found == [(3, "mlplug.errors"), (7, "mlplug.modelfile.model")]
    assert layer_of("mlplug.modelfile.model") > layer_of("mlplug.backend")


def test_every_core_module_has_a_layer() -> None:
    """A new module must be placed in LAYERS (layer_of raises for an unknown one)."""
    for module in core_modules():
        layer_of(module)


# -- one plugin interface --------------------------------------------------------------------
PLUGIN_ALLOWED = {"mlplug", "mlplug.plugin_api"}


def plugin_core_imports() -> list[str]:
    """Imports of the core by the in-tree plugin packages that are not the plugin interface."""
    bad = []
    for path in sorted(PLUGINS.glob("*/mlplug_*/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] == "mlplug" and name not in PLUGIN_ALLOWED:
                    bad.append(f"{path.relative_to(PLUGINS)}:{node.lineno}: imports {name}")
    return bad


def test_plugins_import_only_the_plugin_api() -> None:
    """Plugin packages import the core through ``mlplug`` and ``mlplug.plugin_api`` only."""
    assert sorted(PLUGINS.glob("*/mlplug_*/__init__.py")), "no plugin packages found"
    bad = plugin_core_imports()
    assert not bad, "plugins import private core modules:\n" + "\n".join(bad)


def test_plugin_api_names_resolve() -> None:
    """Everything ``mlplug.plugin_api`` lists exists, and the hook marker is the registry's."""
    import mlplug.hookspecs
    import mlplug.plugin_api as api

    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing
    assert api.hookimpl is mlplug.hookspecs.hookimpl
