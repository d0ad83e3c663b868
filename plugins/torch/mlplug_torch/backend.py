"""TorchBackend: the PyTorch implementation of mlplug's Backend."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch

from mlplug import Backend
from mlplug.plugin_api import TRAITS, DType, SetParams, WeightCopies

from . import quant
from .compile import COMPILE_ENV, GraphCompiler, compile_backend_from_env
from .context import TorchContext
from .device import devices, select_device
from .ops import KERNELS, PREPARERS
from .ops.compiled import FUSED_ENV, CompiledKernels, fused_from_env

if TYPE_CHECKING:
    from mlplug import BackendParams, DeviceInfo, Tensor

__all__ = ["TorchBackend"]

#: Ops whose result is written in the node's dtype by quantising on the host.
_QUANTISING_OPS = frozenset({"cast", "copy", "set_rows", "add"})
#: Element size of the multi-byte element types (torch views count offsets in elements).
_ELEMENT_SIZE = {
    d: tr.type_size for d, tr in TRAITS.items() if tr.block_size == 1 and tr.type_size > 1
}


def _misaligned(node: Tensor, es: int) -> str | None:
    offs = [node.view_offs, *(nb for ne, nb in zip(node.ne, node.nb, strict=True) if ne > 1)]
    if node.op == "set_inplace":
        p = SetParams.of(node)
        offs += [p.nb1, p.nb2, p.nb3, p.offset]
    bad = [o for o in offs if o % es]
    if not bad:  # only strides of size-1 dimensions are odd: never used
        return None
    return (
        f"byte offset/stride {bad[0]} of a {node.dtype.name} tensor is not a multiple of the "
        f"element size {es} (torch views count in elements)"
    )


TorchContext.preparers = PREPARERS


class TorchBackend(Backend):
    """Every op as torch kernels on one device (CPU, a CUDA/ROCm GPU, or MPS).

    The device is ``device`` if given, else the ``MLPLUG_TORCH_DEVICE`` environment variable
    (``cpu``, ``cuda:1``, ``mps``), else the current CUDA/ROCm GPU when torch sees one, else
    the CPU. ``compile`` (else ``MLPLUG_TORCH_COMPILE``: ``1`` for inductor, or a
    torch.compile backend name such as ``aot_eager``) compiles graphs that repeat; see
    :mod:`mlplug_torch.compile`. ``fused_gemv`` (else ``MLPLUG_TORCH_FUSED``: ``0`` off, ``1``
    for every operand size; default on from 64 KiB) compiles a CPU decode step's one-column
    products and one-query attention into one loop each, once per shape; see
    :mod:`mlplug_torch.ops.compiled`. ``params.num_threads`` > 0 sets torch's (process-wide)
    intra-op thread count when computing on the CPU.

    :raises BackendLoadError: if the requested device is not available.
    """

    name: ClassVar[str] = "torch"
    kernels = KERNELS
    plain_library = "torch"
    dtypes = frozenset(d for d in DType if d not in (DType.OTHER, DType.F64))

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        params: BackendParams | None = None,
        *,
        device: str | None = None,
        compile: bool | str | None = None,
        fused_gemv: bool | None = None,
    ) -> None:
        super().__init__(model_path, params)
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
        if self.params.num_threads > 0 and self.device.type == "cpu":
            torch.set_num_threads(self.params.num_threads)
        #: Float32 copies of CPU weights (``BackendParams.dequantize``); mulmat prefers them.
        self.weight_copies: WeightCopies = WeightCopies()
        self.dequantized_copies = self.device.type == "cpu"
        #: Per thread, the float32 buffer tiled products decode into (grown as needed).
        self.tile_scratch = threading.local()
        if fused_gemv is None:
            min_bytes = fused_from_env(os.environ.get(FUSED_ENV))
        else:
            min_bytes = 0 if fused_gemv else None
        #: The compiled decode kernels: one-column products, one-query attention (CPU only).
        self.compiled = CompiledKernels(min_bytes if self.device.type == "cpu" else None)

    def __enter__(self) -> TorchBackend:
        """Return self (the backend closes when the ``with`` block ends)."""
        return self

    def hook_make_context(self, max_nodes: int) -> TorchContext:
        return TorchContext(self, max_nodes)

    def devices(self) -> list[DeviceInfo]:
        """Return the host CPU and every GPU torch can use."""
        return devices()

    def hook_unsupported_reason(self, node: Tensor) -> str | None:
        """Say why ``node`` cannot run here: misaligned views, or quantising to a type without
        a host quantiser (none today)."""
        d = node.dtype
        es = _ELEMENT_SIZE.get(d)
        if es is not None and node.view_src is None:
            return None  # fresh storage: packed strides, offset 0
        if es is not None:
            nb = node.nb
            bits = node.view_offs | nb[0] | nb[1] | nb[2] | nb[3]
            if node.op == "set_inplace":
                p = SetParams.of(node)
                bits |= p.nb1 | p.nb2 | p.nb3 | p.offset
            if bits % es:
                return _misaligned(node, es)
        elif node.op in _QUANTISING_OPS and d.is_quantized and not quant.can_quantize(d):
            return f"quantising to {d.name} (no host quantiser for it)"
        return None

    def hook_gpu_devices(self) -> list[DeviceInfo]:
        """Return the backend's compute device when it is a GPU (all layers run there)."""
        if self.device.type == "cpu":
            return []
        index = self.device.index or 0
        lib = {"cuda": ("CUDA", "ROCm"), "mps": ("Metal",)}.get(self.device.type, ())
        gpus = [g for g in self.devices() if g.library in lib]
        return gpus[index : index + 1]

    def hook_host_buffer(self, t: Tensor) -> memoryview | None:
        """Return a writable view of a CPU root tensor's storage, for zero-copy loading."""
        data = t.data
        if (
            self.device.type != "cpu"
            or t.view_src is not None
            or data is None
            or data.numel() != t.nbytes
            or not data.is_contiguous()
        ):
            return None
        return memoryview(data.numpy()).cast("B")

    def hook_copy_weights(self, weights: Sequence[Tensor]) -> None:
        """Decode each (CPU) weight once into a float32 copy (the user asked for copies)."""
        for t in weights:
            ctx = t.ctx
            assert isinstance(ctx, TorchContext)
            raw = ctx.arr(t)
            host = raw if raw.dtype == torch.uint8 else raw.view(torch.uint8)
            self.weight_copies.make(t, host.numpy(), t.dtype, t.ne)

    def hook_close(self) -> None:
        self.compiled.clear()
        if self.compiler is not None:
            self.compiler.clear()
