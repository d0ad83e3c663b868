"""Block-quantised data as torch tensors: dequantisation on the device, quantisation on the host.

Raw blocks are held as ``uint8`` tensors of shape ``(..., n_blocks, bytes_per_block)``.
Q8_0, Q4_0 and MXFP4 dequantise with torch ops on the tensor's device (the fast path of
``mulmat`` with quantised weights); the other types go through :mod:`mlplug.quants` on the
host. Quantising (``cast``/``cpy``/``set_rows`` into a quantised tensor) always uses
:func:`mlplug.quants.quantize`, so the bytes are those of the other backends.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mlplug import quants
from mlplug.plugin_api import TRAITS, DType, can_quantize

__all__ = ["can_quantize", "dequantize", "quantize"]

#: MXFP4 code points (E2M1 values, doubled), as int8 in the block nibble order.
_MXFP4_VALUES = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


def _f16_scale(raw: torch.Tensor) -> torch.Tensor:
    """The f16 scale in the first two bytes of each block, as float32 ``(..., n_blocks, 1)``."""
    return raw[..., :2].contiguous().view(torch.float16).float()


def _q8_0(raw: torch.Tensor) -> torch.Tensor:
    q = raw[..., 2:].view(torch.int8).float()
    return q.mul_(_f16_scale(raw))


def _q4_0(raw: torch.Tensor) -> torch.Tensor:
    # byte j holds element j (low nibble) and element j + 16 (high nibble); value (q - 8) * d
    qs = raw[..., 2:]
    out = torch.empty((*qs.shape[:-1], 32), dtype=torch.float32, device=raw.device)
    out[..., :16] = qs & 0x0F
    out[..., 16:] = qs >> 4
    return out.sub_(8.0).mul_(_f16_scale(raw))


#: ``(low nibble, high nibble)`` E2M1 values of every byte value 0..255.
_MXFP4_PAIRS = [[float(_MXFP4_VALUES[b & 0x0F]), float(_MXFP4_VALUES[b >> 4])] for b in range(256)]


def _mxfp4(raw: torch.Tensor) -> torch.Tensor:
    e = raw[..., :1].to(torch.int32)
    small = torch.bitwise_left_shift(torch.full_like(e, 0x00200000), e)
    d = torch.where(e < 2, small, (e - 1) << 23).view(torch.float32)  # 2^(e-128), e8m0 "half"
    qs = raw[..., 1:]
    table = torch.tensor(_MXFP4_PAIRS, dtype=torch.float32, device=raw.device)
    pairs = F.embedding(qs.int(), table)  # (..., 16, 2)
    return pairs.transpose(-1, -2).reshape(*qs.shape[:-1], 32).mul_(d)


_DEVICE_KERNELS = {DType.Q8_0: _q8_0, DType.Q4_0: _q4_0, DType.MXFP4: _mxfp4}


def dequantize(raw: torch.Tensor, dtype: DType) -> torch.Tensor:
    """Return float32 ``(..., n_blocks * block_size)`` of raw blocks ``(..., n_blocks, bytes)``.

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
