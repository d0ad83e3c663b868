"""Make installed plugins look uninstalled in this interpreter: ``MLPLUG_TEST_HIDE=torch,ggml``.

On ``PYTHONPATH`` this module runs at interpreter start (``sitecustomize``). For each name in
``MLPLUG_TEST_HIDE`` it hides that plugin's modules (``mlplug_<name>``, and ``torch`` for the
torch plugin): importing them raises :class:`ModuleNotFoundError` as if absent, and their
distributions are left out of :mod:`importlib.metadata`, so no ``mlplug`` entry point names them.
Child processes inherit both variables and hide the same plugins. ``test_plugin_subsets.py``
runs the suite this way to prove it collects and passes with any subset of plugins installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

_EXTRA = {"torch": ("torch", "torchvision", "torchaudio")}
_DISTS = {
    "torch": ("mlplug-torch", "torch"),
    "ggml": ("mlplug-ggml",),
    "cpu_numpy": ("mlplug-cpu-numpy",),
}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


class _Hider:
    """The hidden plugins' module and distribution names."""

    def __init__(self, plugins: Iterable[str]) -> None:
        self.modules: set[str] = set()
        self.dists: set[str] = set()
        for p in plugins:
            self.modules.update((f"mlplug_{p}", *_EXTRA.get(p, ())))
            self.dists.update(_norm(d) for d in _DISTS.get(p, (f"mlplug-{p}",)))


class _Blind:
    """A meta-path finder that does not see the hidden modules (as if not installed)."""

    def __init__(self, finder: Any, hider: _Hider) -> None:
        self._finder = finder
        self._hider = hider

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> Any:
        if fullname.split(".")[0] in self._hider.modules:
            return None
        find = getattr(self._finder, "find_spec", None)
        return None if find is None else find(fullname, path, target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._finder, name)


def _filter_discovery(module_name: str, hider: _Hider) -> None:
    """Wrap ``Distribution.discover`` of ``importlib.metadata`` or its backport."""
    try:
        module = __import__(module_name, fromlist=["Distribution"])
    except ImportError:
        return
    dist_cls = module.Distribution
    original = dist_cls.discover.__func__

    def discover(cls: Any, **kwargs: Any) -> Iterable[Any]:
        for dist in original(cls, **kwargs):
            if _norm(dist.metadata["Name"] or "") not in hider.dists:
                yield dist

    dist_cls.discover = classmethod(discover)


def _install() -> None:
    hidden = [p.strip() for p in os.environ.get("MLPLUG_TEST_HIDE", "").split(",") if p.strip()]
    if not hidden:
        return
    hider = _Hider(hidden)
    for name in list(sys.modules):
        if name.split(".")[0] in hider.modules:
            del sys.modules[name]
    sys.meta_path[:] = [_Blind(f, hider) for f in sys.meta_path]
    for name in ("importlib.metadata", "importlib_metadata"):
        _filter_discovery(name, hider)


_install()
