"""Block-quantised data as torch tensors: dequantisation on the device, quantisation on the host.

Raw blocks are held as ``uint8`` tensors of shape ``(..., n_blocks, bytes_per_block)``.
Q8_0, Q4_0 and MXFP4 dequantise with torch ops on the tensor's device (the fast path of
``mulmat`` with quantised weights); the other types go through :mod:`mlplug.quants` on the
host. Quantising (``cast``/``cpy``/``set_rows`` into a quantised tensor) always uses
:func:`mlplug.quants.quantize`, so the bytes are those of the other backends.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from mlplug import quants
from mlplug.dtypes import TRAITS, DType
from mlplug.errors import DTypeError

__all__ = ["can_quantize", "dequantize", "quantize"]

#: MXFP4 code points (E2M1 values, doubled), as int8 in the block nibble order.
_MXFP4_VALUES = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


def _f16_scale(raw: torch.Tensor) -> torch.Tensor:
    """The f16 scale in the first two bytes of each block, as float32 ``(..., n_blocks, 1)``."""
    return raw[..., :2].contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """Split 16 packed bytes into 32 values: low nibbles first, then high nibbles."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


def _q8_0(raw: torch.Tensor) -> torch.Tensor:
    q = raw[..., 2:].view(torch.int8).float()
    return q * _f16_scale(raw)


def _q4_0(raw: torch.Tensor) -> torch.Tensor:
    q = _nibbles(raw[..., 2:]).to(torch.int8) - 8
    return _f16_scale(raw) * q.float()


def _mxfp4(raw: torch.Tensor) -> torch.Tensor:
    e = raw[..., :1].to(torch.int32)
    small = torch.bitwise_left_shift(torch.full_like(e, 0x00200000), e)
    bits = torch.where(e < 2, small, (e - 1) << 23)
    d = bits.view(torch.float32)
    table = torch.tensor(_MXFP4_VALUES, dtype=torch.float32, device=raw.device)
    return d * table[_nibbles(raw[..., 1:]).long()]


_DEVICE_KERNELS = {DType.Q8_0: _q8_0, DType.Q4_0: _q4_0, DType.MXFP4: _mxfp4}


def dequantize(raw: torch.Tensor, dtype: DType) -> torch.Tensor:
    """Return float32 values ``(..., n_blocks * block_size)`` of raw blocks ``(..., n_blocks, bytes)``.

    :raises DTypeError: for a type the host codecs cannot decode either.
    """
    lead = raw.shape[:-2]
    kernel = _DEVICE_KERNELS.get(dtype)
    if kernel is not None:
        return kernel(raw).reshape(*lead, -1)
    host = raw.contiguous().cpu().numpy().reshape(*lead, -1)
    values = quants.dequantize(host, dtype)
    return torch.from_numpy(np.ascontiguousarray(values)).to(raw.device)


def quantize(values: torch.Tensor, dtype: DType) -> torch.Tensor:
    """Quantise float rows ``(..., n)`` to raw blocks ``(..., n / block, bytes)`` (on the host).

    :raises DTypeError: if the host has no quantiser for ``dtype``.
    """
    tr = TRAITS[dtype]
    host = values.detach().to(torch.float32).cpu().numpy()
    raw = quants.quantize(host, dtype)
    out = torch.from_numpy(np.ascontiguousarray(raw)).to(values.device)
    return out.reshape(*values.shape[:-1], values.shape[-1] // tr.block_size, tr.type_size)


@cache
def can_quantize(dtype: DType) -> bool:
    """Whether :func:`quantize` supports ``dtype`` (the host codecs lack the k-quants)."""
    tr = TRAITS[dtype]
    try:
        quants.quantize(np.zeros((1, tr.block_size), np.float32), dtype)
    except DTypeError:
        return False
    return True
