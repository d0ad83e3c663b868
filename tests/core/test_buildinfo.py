"""A backend's build record: what a plugin registers with ``build=``, its checks and its JSON."""

from __future__ import annotations

from typing import Any

import pytest

from mlplug.errors import PluginError
from mlplug.params import BackendParams
from mlplug.plugin_api import BuildInfo
from mlplug.registry import PluginManager


def _factory(model_path: str | None, params: BackendParams) -> Any:
    msg = "not created in these tests"
    raise AssertionError(msg)


@pytest.fixture
def pm(monkeypatch: pytest.MonkeyPatch) -> PluginManager:
    """A fresh manager that discovers no entry-point plugin."""
    monkeypatch.setenv("MLPLUG_PLUGINS", "")
    monkeypatch.delenv("MLPLUG_STRICT_PLUGINS", raising=False)
    return PluginManager()


def test_json_round_trip() -> None:
    """to_json_dict always has the four keys; from_json_dict gives the record back."""
    info = BuildInfo(
        summary="lib 1.0",
        advice="a native build is faster.",
        command="pip install x",
        details={"features": {"AVX2": "1"}, "missing": ["AVX512"]},
    )
    data = info.to_json_dict()
    assert list(data) == ["summary", "advice", "command", "details"]
    assert BuildInfo.from_json_dict(data) == info
    assert info.could_be_faster
    plain = BuildInfo(summary="lib 1.0")
    assert plain.to_json_dict() == {
        "summary": "lib 1.0",
        "advice": "",
        "command": "",
        "details": {},
    }
    assert not plain.could_be_faster


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"summary": 3}, "BuildInfo.summary must be a string"),
        ({"summary": "s", "advice": None}, "BuildInfo.advice must be a string"),
        ({"summary": "s", "details": ["a"]}, "BuildInfo.details must be a mapping"),
        ({"summary": "s", "details": {"f": object()}}, "JSON-serialisable"),
    ],
    ids=["summary", "advice", "details-type", "details-json"],
)
def test_malformed_record_is_a_plugin_error(kwargs: dict[str, Any], needle: str) -> None:
    """A plugin building a bad record gets a PluginError saying which field is wrong."""
    with pytest.raises(PluginError, match=needle):
        BuildInfo(**kwargs)


def test_from_json_needs_a_summary() -> None:
    """A JSON record without a string summary is refused."""
    with pytest.raises(PluginError, match="summary"):
        BuildInfo.from_json_dict({"advice": "x"})


def test_registered_describer_is_called_on_demand(pm: PluginManager) -> None:
    """``build_info(name)``: the describer's record; None for a backend registered without."""
    calls: list[int] = []

    def describe() -> BuildInfo:
        calls.append(1)
        return BuildInfo(summary="fake 1.0")

    pm.register_backend("built", _factory, build=describe)
    pm.register_backend("plain", _factory)
    assert calls == []
    assert pm.build_info("built") == BuildInfo(summary="fake 1.0")
    assert pm.build_info("plain") is None


def test_describer_returning_something_else_is_a_plugin_error(pm: PluginManager) -> None:
    """A describer returning a dict instead of a BuildInfo is a PluginError naming the backend."""
    odd: Any = lambda: {"summary": "x"}  # noqa: E731
    pm.register_backend("odd", _factory, build=odd)
    with pytest.raises(PluginError, match=r"'odd'.*not BuildInfo"):
        pm.build_info("odd")


def test_non_callable_describer_is_refused_at_registration(pm: PluginManager) -> None:
    """``build=`` must be callable or None."""
    with pytest.raises(PluginError, match="the build of 'bad' must be callable"):
        pm.register_backend("bad", _factory, build="AVX2")  # type: ignore[arg-type]
