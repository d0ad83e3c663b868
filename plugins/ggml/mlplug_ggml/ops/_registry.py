"""The kernel table, its ``@implements`` decorator and the :class:`Builder` kernels receive.

A ggml kernel does not compute anything: it *builds* the ggml tensor (graph node) for one mlplug
node, out of the ggml tensors already built for the node's sources, and returns its address.
The context then adds it to a ggml graph, allocates the graph and runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from mlplug.plugin_api import GraphError
from mlplug.plugin_api import register_kernel as register

if TYPE_CHECKING:
    from mlplug import Tensor

    from .._lib import Lib

__all__ = ["KERNELS", "REQUIRES", "Builder", "GGMLKernel", "implements"]


class Builder:
    """What a kernel needs: the library, the graph's ggml context and the sources' tensors."""

    __slots__ = ("ctx", "flash", "lib", "ptrs")

    #: The backend name errors carry.
    BACKEND: Final = "ggml"

    def __init__(self, lib: Lib, ctx: int, flash: bool) -> None:
        self.lib = lib
        #: ``struct ggml_context *`` (no-alloc) that holds the graph's tensors.
        self.ctx = ctx
        #: ``id(mlplug tensor)`` -> ``struct ggml_tensor *`` of every node built so far.
        self.ptrs: dict[int, int] = {}
        #: Whether scaled dot-product attention uses ``ggml_flash_attn_ext``.
        self.flash = flash

    def src(self, t: Tensor, i: int = 0) -> int:
        """Return the ggml tensor of source ``i`` of ``t``.

        :raises GraphError: ``t`` has no source ``i`` (a negative ``i`` included: Python's
            from-the-end indexing would silently hand a kernel the wrong operand).
        """
        if not 0 <= i < len(t.src):
            msg = f"ggml kernel of {t.op!r} asked for source {i}; the node has {len(t.src)}"
            raise GraphError(msg)
        return self.ptrs[id(t.src[i])]


#: ``kernel(builder, node) -> struct ggml_tensor *``.
GGMLKernel = Callable[[Builder, "Tensor"], int]

KERNELS: dict[str, GGMLKernel] = {}
#: Primitive -> the ggml functions its kernel calls (checked against the loaded build).
REQUIRES: dict[str, tuple[str, ...]] = {}

_PREFIX: Final = "ggml_"


def implements(*names: str, needs: tuple[str, ...] = ()) -> Callable[[GGMLKernel], GGMLKernel]:
    """Register the decorated function as the kernel of the primitive ops ``names``.

    :param needs: ggml function names (without the ``ggml_`` prefix) the kernel calls; an op
        whose function is missing from the loaded library is reported as unsupported.
    :raises KeyError: a name is not a primitive of :mod:`mlplug.ops`.
    """

    required = tuple(_PREFIX + n for n in needs)

    def deco(fn: GGMLKernel) -> GGMLKernel:
        register(KERNELS, names, fn)
        for name in names:
            REQUIRES[name] = required
        return fn

    return deco
