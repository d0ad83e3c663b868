"""The plugin registry: registration, duplicates, priority order and backend selection.

Each test uses its own ``PluginManager`` so the process-wide one (and installed plugins) stay
out of the way; ``MLPLUG_PLUGINS`` limits entry-point discovery to the test's fake plugins.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mlplug.errors import (
    BackendAlreadyRegisteredError,
    BackendLoadError,
    BackendSkippedWarning,
    ModelFileError,
    PluginError,
)
from mlplug.params import BackendParams
from mlplug.registry import PluginManager


class Made:
    """What the fake factories return: which backend was created, with which arguments."""

    def __init__(self, name: str, model_path: str | None, params: BackendParams) -> None:
        self.name = name
        self.model_path = model_path
        self.params = params


def factory(name: str):  # type: ignore[no-untyped-def]
    """Return a factory creating a :class:`Made` tagged ``name``."""

    def make(model_path: str | None, params: BackendParams) -> Made:
        return Made(name, model_path, params)

    return make


def failing(message: str):  # type: ignore[no-untyped-def]
    """Return a factory that raises BackendLoadError(message)."""

    def make(model_path: str | None, params: BackendParams) -> Made:
        raise BackendLoadError(message)

    return make


@pytest.fixture
def pm(monkeypatch: pytest.MonkeyPatch) -> PluginManager:
    """Return a fresh manager that discovers no entry-point plugin."""
    monkeypatch.setenv("MLPLUG_PLUGINS", "")
    monkeypatch.delenv("MLPLUG_BACKEND", raising=False)
    monkeypatch.delenv("MLPLUG_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("MLPLUG_DISABLE_PLUGINS", raising=False)
    return PluginManager()


def test_duplicate_in_process_name_raises(pm: PluginManager) -> None:
    """Registering a taken name raises BackendAlreadyRegisteredError naming the backend."""
    pm.register_backend("dup", factory("first"))
    with pytest.raises(BackendAlreadyRegisteredError, match="'dup'") as info:
        pm.register_backend("dup", factory("second"))
    assert info.value.name == "dup"
    assert pm.new_backend(None, backend="dup").name == "first"  # type: ignore[attr-defined]


def _add_dist(site: Path, dist: str, module: str, backend: str) -> None:
    (site / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from mlplug.hookspecs import hookimpl

            @hookimpl
            def mlplug_register_backends(register):
                register({backend!r}, lambda path, params: {module!r})
            """
        )
    )
    info = site / f"{dist.replace('-', '_')}-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text(f"[mlplug]\n{module} = {module}\n")


def test_duplicate_across_distributions_is_a_conflict_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two distributions registering one name: neither wins; asking for it names both."""
    site = tmp_path / "site"
    site.mkdir()
    _add_dist(site, "dist-one", "regtest_dup_one", "clash")
    _add_dist(site, "dist-two", "regtest_dup_two", "clash")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MLPLUG_PLUGINS", "regtest_dup_one,regtest_dup_two")
    monkeypatch.delenv("MLPLUG_STRICT_PLUGINS", raising=False)
    pm = PluginManager()
    assert [p.status for p in pm.plugins()] == ["ok", "ok"]
    assert pm.backends() == []
    assert [c.distribution for c in pm.conflicts()["clash"]] == ["dist-one", "dist-two"]
    with pytest.raises(BackendAlreadyRegisteredError, match=r"dist-one.*dist-two") as info:
        pm.new_backend(None, backend="clash")
    assert "plugin regtest_dup_two" in str(info.value)
    assert "MLPLUG_DISABLE_PLUGINS" in str(info.value)
    with pytest.warns(BackendSkippedWarning, match="clash"), pytest.raises(BackendLoadError):
        pm.new_backend(None)

    monkeypatch.setenv("MLPLUG_DISABLE_PLUGINS", "regtest_dup_one")
    assert PluginManager().new_backend(None, backend="clash") == "regtest_dup_two"


def test_in_process_name_taken_by_a_plugin_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``register_backend`` of a name an installed plugin registered raises naming it."""
    site = tmp_path / "site"
    site.mkdir()
    _add_dist(site, "dist-one", "regtest_taken", "taken")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MLPLUG_PLUGINS", "regtest_taken")
    pm = PluginManager()
    pm.load()
    with pytest.raises(BackendAlreadyRegisteredError, match="dist-one"):
        pm.register_backend("taken", factory("mine"))
    assert pm.new_backend(None, backend="taken") == "regtest_taken"


@pytest.mark.parametrize(
    ("name", "make", "priority", "devices", "what"),
    [
        ("", factory("x"), 0, None, "non-empty string"),
        ("x", "not callable", 0, None, "factory"),
        ("x", factory("x"), "high", None, "priority"),
        ("x", factory("x"), 0, [], "devices"),
    ],
)
def test_malformed_registration_is_a_plugin_error(
    pm: PluginManager, name: object, make: object, priority: object, devices: object, what: str
) -> None:
    """Bad ``register`` arguments raise PluginError naming what was wrong; nothing is kept."""
    with pytest.raises(PluginError, match=what):
        pm.register_backend(name, make, priority=priority, devices=devices)  # type: ignore[arg-type]
    assert pm.backends() == []


def test_backends_sorted_by_priority_then_name(pm: PluginManager) -> None:
    """``backends()`` lists the highest priority first, ties by name."""
    pm.register_backend("low", factory("low"), priority=1)
    pm.register_backend("high", factory("high"), priority=50)
    pm.register_backend("b_mid", factory("b_mid"), priority=10)
    pm.register_backend("a_mid", factory("a_mid"), priority=10)
    assert [b.name for b in pm.backends()] == ["high", "a_mid", "b_mid", "low"]


def test_default_backend_is_highest_priority(pm: PluginManager) -> None:
    """With no name and no MLPLUG_BACKEND, the highest-priority backend is created."""
    pm.register_backend("low", factory("low"), priority=1)
    pm.register_backend("high", factory("high"), priority=50)
    made = pm.new_backend("model.gguf", BackendParams(num_threads=3))
    assert isinstance(made, Made)
    assert (made.name, made.model_path, made.params.num_threads) == ("high", "model.gguf", 3)


def test_default_skips_backends_that_fail_to_load(pm: PluginManager) -> None:
    """A higher-priority backend that raises BackendLoadError gives way to the next one,
    with a warning naming it and why."""
    pm.register_backend("broken", failing("no driver"), priority=99)
    pm.register_backend("fine", factory("fine"), priority=1)
    with pytest.warns(BackendSkippedWarning, match="broken: no driver"):
        assert pm.new_backend(None).name == "fine"  # type: ignore[attr-defined]


def raising(exc: Exception):  # type: ignore[no-untyped-def]
    """Return a factory that raises ``exc``."""

    def make(model_path: str | None, params: BackendParams) -> Made:
        raise exc

    return make


def test_default_skips_a_factory_raising_any_exception(pm: PluginManager) -> None:
    """A factory raising a plain exception (not BackendLoadError) is skipped too."""
    pm.register_backend("plain", raising(RuntimeError("driver exploded")), priority=99)
    pm.register_backend("fine", factory("fine"), priority=1)
    with pytest.warns(BackendSkippedWarning, match="plain: RuntimeError: driver exploded"):
        assert pm.new_backend(None).name == "fine"  # type: ignore[attr-defined]


def test_named_factory_plain_exception_becomes_backend_load_error(pm: PluginManager) -> None:
    """A named backend whose factory raises KeyError gives BackendLoadError naming it, with the
    KeyError as its cause."""
    original = KeyError("n_layers")
    pm.register_backend("plain", raising(original))
    with pytest.raises(BackendLoadError, match="backend 'plain' could not be loaded") as info:
        pm.new_backend(None, backend="plain")
    assert info.value.backend == "plain"
    assert info.value.__cause__ is original


def test_unreadable_model_is_not_retried_on_every_backend(pm: PluginManager) -> None:
    """A ModelFileError is the model's fault: it propagates at once, no fallback."""
    pm.register_backend("a", raising(ModelFileError("m.gguf", "not a GGUF file")), priority=2)
    pm.register_backend("b", factory("b"), priority=1)
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        pm.new_backend("m.gguf")


def test_no_backend_loads_lists_every_reason(pm: PluginManager) -> None:
    """When every backend fails, the error lists each backend's reason."""
    pm.register_backend("a", failing("no driver"), priority=2)
    pm.register_backend("b", raising(OSError("no library")), priority=1)
    with (
        pytest.warns(BackendSkippedWarning),
        pytest.raises(BackendLoadError, match="a: no driver; b: OSError: no library"),
    ):
        pm.new_backend(None)


def test_no_backend_installed(pm: PluginManager) -> None:
    """With nothing registered, new_backend says no backend plugin is installed."""
    with pytest.raises(BackendLoadError, match="no backend plugin is installed"):
        pm.new_backend(None)


def test_mlplug_backend_env_selects(pm: PluginManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLPLUG_BACKEND picks a backend over priority; an explicit name beats the variable."""
    pm.register_backend("low", factory("low"), priority=1)
    pm.register_backend("high", factory("high"), priority=50)
    monkeypatch.setenv("MLPLUG_BACKEND", "low")
    assert pm.new_backend(None).name == "low"  # type: ignore[attr-defined]
    assert pm.new_backend(None, backend="high").name == "high"  # type: ignore[attr-defined]


def test_mlplug_backend_env_unknown(pm: PluginManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown MLPLUG_BACKEND raises BackendLoadError rather than falling back."""
    pm.register_backend("real", factory("real"))
    monkeypatch.setenv("MLPLUG_BACKEND", "ghost")
    with pytest.raises(BackendLoadError, match="'ghost'"):
        pm.new_backend(None)


def test_unknown_name_lists_installed(pm: PluginManager) -> None:
    """``new_backend(backend=unknown)`` raises BackendLoadError listing installed backends."""
    pm.register_backend("one", factory("one"))
    pm.register_backend("two", factory("two"))
    expected = r"unsupported backend 'nope' \(installed: one, two\)"
    with pytest.raises(BackendLoadError, match=expected):
        pm.new_backend(None, backend="nope")


def test_factory_import_error_becomes_backend_load_error(pm: PluginManager) -> None:
    """A factory whose library is missing (ImportError) raises BackendLoadError naming it."""

    def needs_missing_library(model_path: str | None, params: BackendParams) -> Made:
        import mlplug_no_such_library  # type: ignore[import-not-found]  # noqa: F401

        raise AssertionError

    pm.register_backend("lib", needs_missing_library)
    with pytest.raises(BackendLoadError, match="backend 'lib' could not be loaded"):
        pm.new_backend(None, backend="lib")


def test_module_level_new_backend_unknown_name_lists_installed() -> None:
    """``mlplug.new_backend`` with an unknown name names the installed backends."""
    import mlplug as ml
    from mlplug.registry import manager

    installed = [b.name for b in manager().backends()]
    with pytest.raises(BackendLoadError) as info:
        ml.new_backend(None, backend="definitely_not_a_backend")
    message = str(info.value)
    assert "'definitely_not_a_backend'" in message
    for name in installed:
        assert name in message


def test_devices_of_backend_without_enumerator(pm: PluginManager) -> None:
    """A backend registered without a device enumerator has no devices."""
    pm.register_backend("bare", factory("bare"))
    assert pm.devices("bare") == []


def test_unregister_frees_the_name(pm: PluginManager) -> None:
    """After unregister_backend the name can be registered again."""
    pm.register_backend("tmp", factory("one"))
    pm.unregister_backend("tmp")
    pm.register_backend("tmp", factory("two"))
    assert pm.new_backend(None, backend="tmp").name == "two"  # type: ignore[attr-defined]
