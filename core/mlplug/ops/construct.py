"""Context constructors that are ops: ``arange``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..dtypes import DType
from ..errors import NotSupportedError, ShapeError
from ._build import node
from .records import ArangeParams

if TYPE_CHECKING:
    from ..context import Context
    from ..tensor import Tensor

_MAX_ARANGE = 1 << 31


def arange(ctx: Context, start: float, stop: float, step: float, dtype: DType) -> Tensor:
    """Build ``[start, stop)`` by ``step``: an F32 graph op, or I32 values computed now."""
    f32 = np.float32
    if dtype not in (DType.F32, DType.I32):
        raise NotSupportedError(
            ctx.backend.name, "arange", f"unsupported dtype for arange: {dtype!r}"
        )
    if not all(math.isfinite(v) for v in (start, stop, step)):
        msg = f"arange: start, stop and step must be finite, got {start}, {stop}, {step}"
        raise ShapeError(msg, op="arange")
    if step <= 0 and start < stop:
        msg = f"arange: step must be > 0, got {step}"
        raise ShapeError(msg, op="arange")
    if dtype == DType.F32:
        if stop <= start:
            msg = f"arange: stop ({stop}) must be greater than start ({start})"
            raise ShapeError(msg, op="arange")
        n = math.ceil(f32(f32(f32(stop) - f32(start)) / f32(step)))
        if n > _MAX_ARANGE:
            msg = f"arange: {n} values is too many"
            raise ShapeError(msg, op="arange")
        return node(
            ctx,
            "arange",
            (),
            DType.F32,
            (n, 1, 1, 1),
            ArangeParams(float(start), float(stop), float(step)),
        )
    if stop <= start:
        return ctx.input().from_ints([], 0)
    if (stop - start) / step > _MAX_ARANGE:
        msg = f"arange: about {(stop - start) / step:.0f} values is too many"
        raise ShapeError(msg, op="arange")
    values = []
    v, fstop, fstep = f32(start), f32(stop), f32(step)
    while v < fstop:
        values.append(int(v))
        v = f32(v + fstep)
    return ctx.input().from_ints(np.asarray(values, dtype=np.int32), len(values))
