"""mlplug-ggml: the ``ggml`` backend of mlplug, running on the real ggml C library.

Importing this package loads no native library; the ggml shared libraries are opened on first
use (see :mod:`mlplug_ggml._lib`).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
