"""Everything a backend plugin imports from mlplug, in one public module.

A plugin (in-tree or third-party) imports from here and from the public top level
(:mod:`mlplug`) only; every other module of the core is an implementation detail that may move.
A test in the core's suite enforces that for the in-tree plugins.

What is here, by job:

- registration: :data:`hookimpl` (the pluggy marker for ``mlplug_register_backends``) and the
  :class:`Register` callable's type;
- the classes a backend derives from: :class:`Backend` (it overrides the ``hook_*`` methods
  and declares its capabilities as class attributes, and may declare the (op, dtype) pairs it
  runs with :meth:`Backend.supported_ops`, checked by the conformance report; see its
  docstring), :class:`Context`,
  :class:`ArrayContext` (the engine of backends holding tensors as strided views of flat
  buffers, with its :data:`Preparer` / :data:`Step` table of kernels that bind their arrays once
  per plan) and the :class:`Tensor` nodes kernels receive;
- the op contract: the primitive op table and its derived lists, the parameter records nodes
  carry (``NormParams``, ``RopeParams``, ...; read by field name), the :data:`LEAF` op name of
  constructor tensors, and the kernel-table helpers :func:`implementer` / :func:`register_kernel`;
- the dtype table, host quantisation codecs, the tiled products of weights kept as raw
  blocks (:func:`mulmat_rows`, :func:`row_tiles`, :func:`decode_rows`) and the numeric
  helpers several backends share;
- weight writers (what :meth:`Backend.hook_weight_writer` returns: how the model loader hands
  file bytes to a backend's storage);
- devices, the build record of a native library (:class:`BuildInfo`), parameters and the
  typed errors a backend raises.
"""

from __future__ import annotations

from ._child_processes import env_seconds
from ._tensorbase import LEAF
from .array_context import ArrayContext, Preparer, Step
from .backend import Backend, Kernel
from .buildinfo import BuildInfo
from .context import Context
from .device import DeviceInfo
from .dtypes import TRAITS, DType, TypeTraits, align_up
from .endpoints import Endpoint, env_endpoints, is_loopback, parse_endpoint, parse_endpoints
from .errors import (
    BackendLoadError,
    ConfigError,
    DTypeError,
    ErrNoMem,
    GraphError,
    NotSupportedError,
    OutOfRangeError,
    RemoteDeviceError,
    ShapeError,
)
from .halves import every_half, f16_round, half_to_f32
from .hookspecs import BackendFactory, BuildDescriber, DeviceEnumerator, Register, hookimpl
from .host import can_quantize, cpu_device_info
from .kernels import implementer
from .kernels import register as register_kernel
from .numerics import (
    MROPE_MODES,
    bilinear_axis,
    last_seen,
    nearest_index,
    query_blocks,
    rope_n_pairs,
    rope_pairs,
    rope_rows,
    rope_theta_scale,
    rope_thetas,
    yarn_mix,
)
from .ops import PRIMITIVES, UNARY_PRIMITIVES, VIEW_OPS, WRITE_OPS, OpSpec
from .ops.records import (
    NO_PARAMS,
    ArangeParams,
    ArgsortParams,
    AttentionParams,
    CastParams,
    ClampParams,
    ConcatParams,
    Conv3dParams,
    FillParams,
    GluParams,
    Im2colParams,
    InterpolateParams,
    MulmatParams,
    NoParams,
    NormParams,
    OpParams,
    PadParams,
    PermuteParams,
    Pool2dParams,
    ReshapeParams,
    RopeParams,
    ScaleParams,
    SetParams,
    SwigluOaiParams,
    TriParams,
    ViewParams,
)
from .params import BackendParams, CacheConfig, FlashAttentionType
from .quantmm import (
    BYTE_BITS,
    DOT_ROUNDINGS,
    WIDE_TILE_BYTES,
    WeightCopies,
    decode_rows,
    dot_rounding,
    mulmat_rows,
    q8_0_quants,
    row_tiles,
    tile_spans,
)
from .quantmm import FAST_TYPES as FAST_DECODE_TYPES
from .quants import bf16_to_f32, dequantize, f32_to_bf16, quantize
from .sysinfo import host_memory
from .tensor import Tensor
from .writers import HostWriter, StagedWriter, WeightWriter

__all__ = [
    "BYTE_BITS",
    "DOT_ROUNDINGS",
    "NO_PARAMS",
    "ArangeParams",
    "ArgsortParams",
    "AttentionParams",
    "CastParams",
    "ClampParams",
    "ConcatParams",
    "ConfigError",
    "Conv3dParams",
    "FillParams",
    "GluParams",
    "Im2colParams",
    "InterpolateParams",
    "MulmatParams",
    "NoParams",
    "NormParams",
    "OpParams",
    "PadParams",
    "PermuteParams",
    "Pool2dParams",
    "ReshapeParams",
    "RopeParams",
    "ScaleParams",
    "SetParams",
    "SwigluOaiParams",
    "TriParams",
    "ViewParams",
    "LEAF",
    "MROPE_MODES",
    "PRIMITIVES",
    "TRAITS",
    "UNARY_PRIMITIVES",
    "VIEW_OPS",
    "WRITE_OPS",
    "ArrayContext",
    "Backend",
    "BackendFactory",
    "BackendLoadError",
    "BackendParams",
    "BuildDescriber",
    "BuildInfo",
    "CacheConfig",
    "Context",
    "DType",
    "FAST_DECODE_TYPES",
    "WIDE_TILE_BYTES",
    "DTypeError",
    "TypeTraits",
    "DeviceEnumerator",
    "DeviceInfo",
    "Endpoint",
    "ErrNoMem",
    "FlashAttentionType",
    "GraphError",
    "HostWriter",
    "Kernel",
    "NotSupportedError",
    "OpSpec",
    "OutOfRangeError",
    "RemoteDeviceError",
    "Preparer",
    "Register",
    "ShapeError",
    "StagedWriter",
    "Step",
    "Tensor",
    "WeightCopies",
    "WeightWriter",
    "align_up",
    "bf16_to_f32",
    "bilinear_axis",
    "can_quantize",
    "cpu_device_info",
    "decode_rows",
    "dot_rounding",
    "dequantize",
    "f32_to_bf16",
    "hookimpl",
    "host_memory",
    "env_endpoints",
    "implementer",
    "is_loopback",
    "last_seen",
    "nearest_index",
    "query_blocks",
    "parse_endpoint",
    "parse_endpoints",
    "mulmat_rows",
    "q8_0_quants",
    "quantize",
    "register_kernel",
    "rope_n_pairs",
    "rope_pairs",
    "rope_rows",
    "rope_theta_scale",
    "rope_thetas",
    "row_tiles",
    "env_seconds",
    "tile_spans",
    "every_half",
    "f16_round",
    "half_to_f32",
    "yarn_mix",
]
