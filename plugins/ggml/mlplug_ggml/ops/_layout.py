"""Layout helpers for kernels: ggml's stride predicates and the copies that satisfy them.

mlplug's op builders already make operands as contiguous as ggml's graph builders demand, but
several ggml CPU kernels assert more (dim 0 packed, rows packed, canonical strides) at compute
time, where a failed assertion aborts the process. Kernels use these helpers to hand ggml an
operand it accepts: the same values, copied with ``ggml_cont`` only when needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.plugin_api import TRAITS

from .._lib import GGMLTensor
from ._registry import Builder

if TYPE_CHECKING:
    from mlplug import Tensor

__all__ = [
    "canonical_strides",
    "dim0_packed",
    "mul_mat_operand",
    "packed_src",
]

Shape4 = tuple[int, int, int, int]


def dim0_packed(t: Tensor) -> bool:
    """Whether dim 0 is packed (``nb[0]`` is the element/block size, or one block only)."""
    tr = TRAITS[t.dtype]
    return t.ne[0] == tr.block_size or t.nb[0] == tr.type_size


def canonical_strides(t: Tensor) -> Shape4:
    """Return ``t``'s strides with those of size-1 dims replaced by packed values.

    A size-1 dim is never stepped over, so its stride does not change which bytes a tensor
    covers; ggml's kernels and predicates (``ggml_is_padded_1d``, ``nb[1] == ne[0]*nb[0]``)
    read it all the same.
    """
    tr = TRAITS[t.dtype]
    ne, nb = t.ne, list(t.nb)
    if ne[0] == tr.block_size:
        nb[0] = tr.type_size
    for i in range(1, 4):
        if ne[i] == 1:
            nb[i] = nb[i - 1] * (ne[i - 1] // tr.block_size if i == 1 else ne[i - 1])
    return nb[0], nb[1], nb[2], nb[3]


def packed_src(b: Builder, t: Tensor, i: int, rows: bool = False, c1: bool = False) -> int:
    """Return source ``i``'s ggml tensor, copied with ``ggml_cont`` unless it is as packed as
    the kernel asserts: dim 0 (by default), every dim (``rows``: ``ggml_is_contiguous``) or
    ggml's ``ggml_is_contiguous_1`` (``c1``, what GLUs assert), judged by ggml itself."""
    ptr = b.src(t, i)
    if rows:
        ok = bool(b.lib.ggml_is_contiguous(ptr))
    elif c1:
        ok = bool(b.lib.ggml_is_contiguous_1(ptr))
    else:
        ok = dim0_packed(t.src[i])
    return ptr if ok else int(b.lib.ggml_cont(b.ctx, ptr))


def mul_mat_operand(b: Builder, ptr: int) -> int:
    """Return ggml tensor ``ptr``, or a contiguous copy when ``ggml_mul_mat`` cannot take it as
    its first operand: dim 0 not packed, or transposed (``nb[0] > nb[1]``, which ggml asserts).

    Judged on ggml's own strides: on a dim of extent 1 they can differ from mlplug's (a stride
    there is never used), so a view mlplug calls packed may still read as transposed to ggml.
    """
    g = GGMLTensor.at(ptr)
    if g.nb[0] == int(b.lib.ggml_type_size(g.type)) and g.nb[0] <= g.nb[1]:
        return ptr
    return int(b.lib.ggml_cont(b.ctx, ptr))
