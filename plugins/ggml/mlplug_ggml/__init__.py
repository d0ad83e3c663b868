"""mlplug-ggml: the ``ggml`` backend of mlplug, running on the real ggml C library.

Importing this package loads no native library; the ggml shared libraries are opened on first
use (see :mod:`mlplug_ggml._lib`).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["GGMLBackend", "__version__"]


def __getattr__(name: str) -> object:
    if name == "GGMLBackend":
        from .backend import GGMLBackend

        return GGMLBackend
    raise AttributeError(name)
