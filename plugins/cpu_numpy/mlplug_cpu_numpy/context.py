"""NumpyContext: tensors as strided numpy views of flat uint8 buffers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mlplug.plugin_api import (
    TRAITS,
    ArrayContext,
    DType,
    bf16_to_f32,
    dequantize,
    f32_to_bf16,
    half_to_f32,
    quantize,
)

if TYPE_CHECKING:
    from mlplug import Tensor

#: numpy dtype holding one storage unit (an element, or a whole block for quantised types).
_UNIT: dict[DType, np.dtype] = {
    d: (tr.numpy if tr.numpy is not None else np.dtype(("V", tr.type_size)))
    for d, tr in TRAITS.items()
    if tr.type_size
}
_UNIT[DType.BF16] = np.dtype("<u2")


def _rev(v: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return (v[3], v[2], v[1], v[0])


class NumpyContext(ArrayContext):
    """Context of the cpu_numpy backend."""

    def new_storage(self, nbytes: int, zero: bool) -> np.ndarray:
        return np.zeros(nbytes, np.uint8) if zero else np.empty(nbytes, np.uint8)

    def _execute(self, graph: Sequence[Tensor]) -> None:
        with np.errstate(all="ignore"):  # IEEE results (inf, nan) are the ops' semantics
            super()._execute(graph)

    def store(self, storage: np.ndarray, data: bytes) -> None:
        storage[:] = np.frombuffer(data, np.uint8)

    # -- views ----------------------------------------------------------------------------------
    def arr(self, t: Tensor) -> np.ndarray:
        """Return ``t``'s storage as a 4-D strided array ``(ne3, ne2, ne1, ne0/block)``."""
        h = t.handle
        if h is not None:
            return h  # type: ignore[no-any-return]
        root = t.root
        block = TRAITS[t.dtype].block_size
        ne = t.ne
        shape = (ne[3], ne[2], ne[1], ne[0] // block)
        a: np.ndarray = np.ndarray(
            shape, _UNIT[t.dtype], buffer=root.data, offset=t.view_offs, strides=_rev(t.nb)
        )
        t.handle = a
        return a

    def values(self, t: Tensor) -> np.ndarray:
        """Return ``t``'s values as float32 ``(ne3, ne2, ne1, ne0)`` (a view for F32)."""
        a = self.arr(t)
        d = t.dtype
        if d == DType.F32:
            return a
        if d == DType.BF16:
            return bf16_to_f32(a)
        if d.is_quantized:
            return dequantize(a, d).reshape(_rev(t.ne))
        if d == DType.F16:
            return half_to_f32(a)  # numpy's own float16 cast is about 20x slower
        return a.astype(np.float32)

    def put(self, t: Tensor, v: np.ndarray) -> None:
        """Write float values ``v`` (broadcastable to ``t``) into ``t``, converting to its dtype."""
        a = self.arr(t)
        d = t.dtype
        if d in (DType.F32, DType.F16, DType.F64):
            a[...] = v
        elif d == DType.BF16:
            a[...] = f32_to_bf16(np.broadcast_to(v, a.shape))
        elif d.is_quantized:
            q = quantize(np.broadcast_to(v, _rev(t.ne)), d)
            a[...] = q.view(_UNIT[d]).reshape(a.shape)
        else:  # integers: truncate toward zero
            a[...] = np.trunc(v)

    def read_bytes(self, t: Tensor) -> bytes:
        return np.ascontiguousarray(self.arr(t)).tobytes()
