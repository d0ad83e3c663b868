"""The ggml stream (``ggml_backend_t``) a :class:`~mlplug_ggml.backend.GGMLBackend` computes on.

The object owns one C backend and frees it in ``free()``, which is idempotent (the pointer is
set to ``None`` on the first call); nothing is freed implicitly by the garbage collector, so the
owner decides the order. Leaf storage lives in :mod:`mlplug_ggml._arena`, graphs in
:mod:`mlplug_ggml._graph`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.plugin_api import BackendLoadError

from . import _lib
from .device import GGMLDevice, load_backends

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._lib import Lib

__all__ = ["Backend"]


class Backend:
    """A ggml backend (``ggml_backend_t``, a stream) on one device."""

    def __init__(
        self, device: GGMLDevice | int, *, n_threads: int | None = None, params: str | None = None
    ) -> None:
        """Initialise a backend with ``ggml_backend_dev_init``.

        :param device: a :class:`GGMLDevice` or a raw ``ggml_backend_dev_t``.
        :param n_threads: CPU threads, when the backend takes a thread count.
        :param params: backend-specific init string (usually None).
        :raises BackendLoadError: ggml could not create the backend.
        """
        self._lib: Lib = load_backends()
        lib = self._lib
        self.dev = device.dev if isinstance(device, GGMLDevice) else int(device)
        self.device_type = int(lib.ggml_backend_dev_type(self.dev))
        ptr = lib.ggml_backend_dev_init(self.dev, params.encode() if params else None)
        if not ptr:
            dev_name = (lib.ggml_backend_dev_name(self.dev) or b"?").decode(errors="replace")
            msg = f"ggml: cannot initialise a backend on device {dev_name}"
            raise BackendLoadError(msg, backend=_lib.BACKEND)
        self.ptr: int | None = ptr
        self.name: str = (lib.ggml_backend_name(ptr) or b"").decode(errors="replace")
        self._set_n_threads = self._find_set_n_threads()
        self.n_threads: int | None = None
        if n_threads is not None:
            self.set_n_threads(n_threads)

    def _find_set_n_threads(self) -> Callable[[int, int], object] | None:
        lib = self._lib
        reg = lib.ggml_backend_dev_backend_reg(self.dev)
        if reg:
            addr = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_set_n_threads")
            if addr:
                fn: Callable[[int, int], object] = _lib.SetNThreadsFn(addr)
                return fn
        if self.device_type == _lib.GGML_BACKEND_DEVICE_TYPE_CPU and lib.has(
            "ggml_backend_cpu_set_n_threads"
        ):
            direct: Callable[[int, int], object] = lib.ggml_backend_cpu_set_n_threads
            return direct
        return None

    @property
    def supports_threads(self) -> bool:
        """Whether this backend takes a thread count."""
        return self._set_n_threads is not None

    def set_n_threads(self, n: int) -> bool:
        """Set the number of compute threads.

        :param n: threads, at least 1.
        :returns: False when the backend has no thread setting (GPU backends).
        :raises ValueError: ``n < 1``.
        """
        if n < 1:
            msg = f"ggml: thread count must be >= 1, got {n}"
            raise ValueError(msg)
        ptr = self._require()
        if self._set_n_threads is None:
            return False
        self._set_n_threads(ptr, int(n))
        self.n_threads = int(n)
        return True

    @property
    def buffer_type(self) -> int:
        """The backend's default ``ggml_backend_buffer_type_t``."""
        buft: int = self._lib.ggml_backend_get_default_buffer_type(self._require())
        return buft

    def _require(self) -> int:
        if self.ptr is None:
            msg = "ggml backend is already freed"
            raise ValueError(msg)
        return self.ptr

    def free(self) -> None:
        """Free the backend; a second call does nothing."""
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._lib.ggml_backend_free(ptr)
