"""A third-party distribution ships an architecture through ``mlplug_register_architectures``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from model_files import write_llama

import mlplug as ml
from mlplug.models import Llama, architectures, load_model
from mlplug.models.catalog import entries
from mlplug.registry import PluginManager, manager

HAS_NUMPY = "cpu_numpy" in [e.name for e in manager().backends()]


def add_dist(site: Path, dist: str, module: str, body: str) -> None:
    """Install a fake distribution ``dist`` whose ``mlplug`` entry point is ``module``."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[mlplug]\n{module} = {module}\n")


ARCH_PLUGIN = """
from mlplug.hookspecs import hookimpl
from mlplug.models import Llama


class Llamaish(Llama):
    architecture = "llamaish"


@hookimpl
def mlplug_register_architectures(register):
    register("llamaish", Llamaish)
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path for fake distributions; strict plugin loading off."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.delenv("MLPLUG_STRICT_PLUGINS", raising=False)
    return path


@pytest.mark.skipif(not HAS_NUMPY, reason="cpu_numpy not installed")
def test_plugin_architecture_runs_a_file(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An architecture-only plugin loads cleanly and ``load_model`` runs its files."""
    add_dist(site, "mlplug-llamaish", "archtest_llamaish", ARCH_PLUGIN)
    monkeypatch.setenv("MLPLUG_PLUGINS", "archtest_llamaish")
    pm = PluginManager()
    [rec] = pm.plugins()
    assert (rec.status, rec.error, rec.architectures, rec.backends) == ("ok", "", ["llamaish"], [])
    assert "llamaish" in architectures
    assert [e.distribution for e in entries() if e.name == "llamaish"] == ["mlplug-llamaish"]
    t = write_llama(tmp_path / "m.gguf", arch="llamaish")
    be = ml.new_backend(str(t.path), ml.BackendParams(alloc_memory=True), backend="cpu_numpy")
    be.load()
    with be, load_model(be, num_ctx=8) as model:
        assert type(model).__name__ == "Llamaish" and isinstance(model, Llama)
        assert model.forward([1, 2], [0, 1]).shape == (1, t.vocab)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            """
            from mlplug.hookspecs import hookimpl
            from mlplug.models import Llama

            @hookimpl
            def mlplug_register_architectures(register):
                register("llama", type("Other", (Llama,), {}))
            """,
            "'llama' is already provided",
        ),
        (
            """
            from mlplug.hookspecs import hookimpl

            @hookimpl
            def mlplug_register_architectures(register):
                register("thing", object)
            """,
            "Model subclass",
        ),
        (
            """
            from mlplug.hookspecs import hookimpl

            @hookimpl
            def mlplug_register_architecture(register):
                pass
            """,
            "unknown hook",
        ),
    ],
    ids=["taken-name", "not-a-model", "misspelt-hook"],
)
def test_bad_architecture_plugins_are_reported(
    site: Path, monkeypatch: pytest.MonkeyPatch, body: str, error: str
) -> None:
    """A clash with the core's llama, a non-Model class or a misspelt hook: the plugin errors."""
    module = f"archtest_bad_{abs(hash(body))}"  # a fresh module per case
    add_dist(site, "bad-arch", module, body)
    monkeypatch.setenv("MLPLUG_PLUGINS", module)
    [rec] = PluginManager().plugins()
    assert rec.status == "error" and error in rec.error
    assert architectures["llama"] is Llama
    assert "thing" not in architectures
