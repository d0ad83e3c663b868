"""mlplug's PyTorch backend: every op as torch kernels on CPU, CUDA, ROCm or MPS.

``import mlplug_torch`` is light: torch is imported only when the backend is created or
its devices are enumerated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import TorchBackend

__version__ = "0.1.0"

__all__ = ["TorchBackend", "__version__"]


def __getattr__(name: str) -> object:
    if name == "TorchBackend":
        from .backend import TorchBackend

        return TorchBackend
    raise AttributeError(name)
