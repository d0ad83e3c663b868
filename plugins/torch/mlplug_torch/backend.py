"""TorchBackend: the PyTorch implementation of mlplug's Backend."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, ClassVar

import torch

from mlplug import Backend
from mlplug.dtypes import TRAITS, DType

from . import quant
from .compile import COMPILE_ENV, GraphCompiler, compile_backend_from_env
from .context import TorchContext
from .device import devices, select_device
from .ops import KERNELS

if TYPE_CHECKING:
    from mlplug import BackendParams, DeviceInfo, Tensor

__all__ = ["TorchBackend"]

#: Ops whose result is written in the node's dtype by quantising on the host.
_QUANTISING_OPS = frozenset({"cast", "cpy", "set_rows", "add"})


class TorchBackend(Backend):
    """Every op as torch kernels on one device (CPU, a CUDA/ROCm GPU, or MPS).

    The device is ``device`` if given, else the ``MLPLUG_TORCH_DEVICE`` environment variable
    (``cpu``, ``cuda:1``, ``mps``), else the current CUDA/ROCm GPU when torch sees one, else
    the CPU. ``compile`` (else ``MLPLUG_TORCH_COMPILE``: ``1`` for inductor, or a
    torch.compile backend name such as ``aot_eager``) compiles graphs that repeat; see
    :mod:`mlplug_torch.compile`. ``params.num_threads`` > 0 sets torch's (process-wide)
    intra-op thread count when computing on the CPU.

    :raises BackendLoadError: if the requested device is not available.
    """

    name: ClassVar[str] = "torch"
    kernels = KERNELS
    dtypes = frozenset(d for d in DType if d not in (DType.OTHER, DType.F64))

    def __init__(
        self,
        model_path: str | None = None,
        params: BackendParams | None = None,
        *,
        device: str | None = None,
        compile: bool | str | None = None,  # noqa: A002 - the option's natural name
    ) -> None:
        #: The torch device every tensor of this backend lives on.
        self.device: torch.device = select_device(device)
        if compile is None:
            backend = compile_backend_from_env(os.environ.get(COMPILE_ENV))
        elif isinstance(compile, str):
            backend = compile_backend_from_env(compile)
        else:
            backend = "inductor" if compile else None
        #: The graph compiler, or None when graphs always run eagerly.
        self.compiler: GraphCompiler | None = GraphCompiler(backend) if backend else None
        super().__init__(model_path, params)
        if self.params.num_threads > 0 and self.device.type == "cpu":
            torch.set_num_threads(self.params.num_threads)

    def _make_context(self, max_nodes: int) -> TorchContext:
        return TorchContext(self, max_nodes)

    def devices(self) -> list[DeviceInfo]:
        """Return the host CPU and every GPU torch can use."""
        return devices()

    def unsupported_reason(self, node: Tensor) -> str | None:
        """Say why ``node`` cannot run here: misaligned views, or quantising to a k-quant."""
        d = node.dtype
        tr = TRAITS[d]
        if tr.block_size == 1 and tr.type_size > 1:
            es = tr.type_size
            offs = (node.view_offs, *(nb for ne, nb in zip(node.ne, node.nb) if ne > 1))
            if node.op == "set":
                offs += tuple(node.params)
            bad = [o for o in offs if o % es]
            if bad:
                return (
                    f"byte offset/stride {bad[0]} of a {d.name} view is not a multiple of the "
                    f"element size {es} (torch views count in elements)"
                )
        if node.op in _QUANTISING_OPS and d.is_quantized and not quant.can_quantize(d):
            return f"quantising to {d.name} (no host quantiser for k-quants)"
        return None

    def _close(self) -> None:
        if self.compiler is not None:
            self.compiler.clear()
