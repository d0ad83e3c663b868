"""mlplug's numpy backend: every op on the host CPU in numpy, with ggml's semantics."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["CpuNumpyBackend", "__version__"]


def __getattr__(name: str) -> object:
    if name == "CpuNumpyBackend":
        from .backend import CpuNumpyBackend

        return CpuNumpyBackend
    raise AttributeError(name)
