"""ctypes bindings to the ggml C library: discovery, loading, version check, declared functions.

Nothing here runs at import time except the declarations: the shared libraries are opened by the
first call to :func:`load`, which caches the result for the process.

Where the libraries come from, first match wins:

1. the environment variable ``MLPLUG_GGML_LIB``: a directory holding ``libggml`` (and its
   siblings ``libggml-base``, ``libggml-cpu``, dynamically loadable backends), or the path of a
   ``libggml`` shared library of another build (e.g. one with CUDA);
2. the ``libggml`` package of the ``libggml-python`` distribution: its ``lib/`` folder (native
   source build) and then its ``lib64/`` folder (generic wheel).

Which of these was used is :attr:`Lib.layout` (:data:`LAYOUT_ENV`, :data:`LAYOUT_SOURCE`,
:data:`LAYOUT_WHEEL`).

Every pointer crosses the boundary as ``c_void_p``: calls return a plain ``int`` (or ``None`` for
``NULL``) and accept ints. Read a tensor's fields with :meth:`GGMLTensor.at`.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import re
import sys
import threading
from ctypes import (
    POINTER,
    c_bool,
    c_char,
    c_char_p,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_void_p,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mlplug.plugin_api import UNARY_PRIMITIVES, BackendLoadError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ENV_LIB",
    "LAYOUT_ENV",
    "LAYOUT_SOURCE",
    "LAYOUT_WHEEL",
    "MIN_GGML_VERSION",
    "GGMLBackendDevCaps",
    "GGMLBackendDevProps",
    "GGMLBackendFeature",
    "GGMLInitParams",
    "GGMLTensor",
    "Lib",
    "find_library",
    "is_loaded",
    "locate",
    "load",
]

log = logging.getLogger(__name__)

ENV_LIB: Final = "MLPLUG_GGML_LIB"
BACKEND: Final = "ggml"

#: :attr:`Lib.layout` of a library named by ``MLPLUG_GGML_LIB``.
LAYOUT_ENV: Final = "env"
#: :attr:`Lib.layout` of libggml-python built from its source distribution (``libggml/lib/``).
LAYOUT_SOURCE: Final = "source"
#: :attr:`Lib.layout` of libggml-python's generic binary wheel (``libggml/lib64/``).
LAYOUT_WHEEL: Final = "wheel"
_LAYOUT_OF_SUBDIR: Final = {"lib": LAYOUT_SOURCE, "lib64": LAYOUT_WHEEL}

#: Oldest ggml whose ABI these declarations match: ``ggml_version()`` exported, the device-props
#: struct carrying ``device_id``, the IGPU device type. Older builds are refused at load.
MIN_GGML_VERSION: Final = (0, 9, 0)

# ggml.h constants (defaults of the upstream build; checked at load through the struct size).
GGML_MAX_DIMS: Final = 4
GGML_MAX_OP_PARAMS: Final = 64
GGML_MAX_SRC: Final = 10
GGML_MAX_NAME: Final = 64
GGML_DEFAULT_GRAPH_SIZE: Final = 2048
#: sizeof(struct ggml_object) on 64-bit platforms: offs, size, next, type, padding[4].
GGML_OBJECT_SIZE: Final = 32

# enum ggml_status
GGML_STATUS_ALLOC_FAILED: Final = -2
GGML_STATUS_FAILED: Final = -1
GGML_STATUS_SUCCESS: Final = 0
GGML_STATUS_ABORTED: Final = 1

# enum ggml_type (the ids used by this plugin; mlplug.dtypes.TRAITS has the full map)
GGML_TYPE_F32: Final = 0
GGML_TYPE_F16: Final = 1
GGML_TYPE_Q8_0: Final = 8
GGML_TYPE_I32: Final = 26
#: GGML_TYPE_COUNT of the headers these bindings follow (0.20.x). ggml indexes its type tables
#: without a bounds check, so ids at or past this are refused before reaching ggml.
GGML_TYPE_COUNT: Final = 43

# enum ggml_backend_dev_type
GGML_BACKEND_DEVICE_TYPE_CPU: Final = 0
GGML_BACKEND_DEVICE_TYPE_GPU: Final = 1
GGML_BACKEND_DEVICE_TYPE_IGPU: Final = 2
GGML_BACKEND_DEVICE_TYPE_ACCEL: Final = 3
GGML_BACKEND_DEVICE_TYPE_META: Final = 4
DEVICE_TYPE_NAMES: Final[dict[int, str]] = {
    GGML_BACKEND_DEVICE_TYPE_CPU: "CPU",
    GGML_BACKEND_DEVICE_TYPE_GPU: "GPU",
    GGML_BACKEND_DEVICE_TYPE_IGPU: "IGPU",
    GGML_BACKEND_DEVICE_TYPE_ACCEL: "ACCEL",
    GGML_BACKEND_DEVICE_TYPE_META: "META",
}

# enum ggml_backend_buffer_usage
GGML_BACKEND_BUFFER_USAGE_ANY: Final = 0
GGML_BACKEND_BUFFER_USAGE_WEIGHTS: Final = 1
GGML_BACKEND_BUFFER_USAGE_COMPUTE: Final = 2


# --------------------------------------------------------------------------------------------
# Structures (field order and types as in ggml.h / ggml-backend.h)
# --------------------------------------------------------------------------------------------


class GGMLInitParams(ctypes.Structure):
    """``struct ggml_init_params``, passed by value to ``ggml_init``."""

    _fields_ = [
        ("mem_size", c_size_t),
        ("mem_buffer", c_void_p),
        ("no_alloc", c_bool),
    ]


class GGMLTensor(ctypes.Structure):
    """``struct ggml_tensor``; its size is checked against ``ggml_tensor_overhead()`` at load."""

    _fields_ = [
        ("type", c_int),
        ("buffer", c_void_p),
        ("ne", c_int64 * GGML_MAX_DIMS),
        ("nb", c_size_t * GGML_MAX_DIMS),
        ("op", c_int),
        ("op_params", c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", c_int32),
        ("src", c_void_p * GGML_MAX_SRC),
        ("view_src", c_void_p),
        ("view_offs", c_size_t),
        ("data", c_void_p),
        ("name", c_char * GGML_MAX_NAME),
        ("extra", c_void_p),
        ("padding", c_char * 8),
    ]

    @classmethod
    def at(cls, ptr: int) -> GGMLTensor:
        """Return a live view of the tensor at address ``ptr`` (no copy; do not keep past free).

        :param ptr: a ``struct ggml_tensor *`` as returned by the declared functions.
        :raises ValueError: when ``ptr`` is NULL.
        """
        if not ptr:
            msg = "ggml: NULL tensor pointer"
            raise ValueError(msg)
        return cls.from_address(ptr)


class GGMLBackendDevCaps(ctypes.Structure):
    """``struct ggml_backend_dev_caps`` (``async`` is spelt ``async_``: a Python keyword)."""

    _fields_ = [
        ("async_", c_bool),
        ("host_buffer", c_bool),
        ("buffer_from_host_ptr", c_bool),
        ("events", c_bool),
        ("mmap_support", c_bool),
    ]


class GGMLBackendDevProps(ctypes.Structure):
    """``struct ggml_backend_dev_props`` followed by a reserve the C side may grow into.

    ggml zeroes and fills ``sizeof(struct ggml_backend_dev_props)`` of *its* build; the trailing
    reserve keeps a newer, larger struct from writing past this Python-owned memory.
    """

    _fields_ = [
        ("name", c_char_p),
        ("description", c_char_p),
        ("memory_free", c_size_t),
        ("memory_total", c_size_t),
        ("type", c_int),
        ("device_id", c_char_p),
        ("caps", GGMLBackendDevCaps),
        ("_reserve", c_uint8 * 256),
    ]


# --------------------------------------------------------------------------------------------
# Declarations: name -> (restype, argtypes). Optional ones may be absent from a build.
# --------------------------------------------------------------------------------------------

_p = c_void_p  # every opaque or struct pointer
_SizeP = POINTER(c_size_t)
_FloatP = POINTER(c_float)

_REQUIRED: Final[dict[str, tuple[Any, tuple[Any, ...]]]] = {
    # ggml.h: misc, sizes, context
    "ggml_version": (c_char_p, ()),
    "ggml_status_to_string": (c_char_p, (c_int,)),
    "ggml_tensor_overhead": (c_size_t, ()),
    "ggml_graph_overhead_custom": (c_size_t, (c_size_t, c_bool)),
    "ggml_init": (_p, (GGMLInitParams,)),
    "ggml_free": (None, (_p,)),
    "ggml_used_mem": (c_size_t, (_p,)),
    "ggml_get_mem_size": (c_size_t, (_p,)),
    "ggml_type_name": (c_char_p, (c_int,)),
    "ggml_blck_size": (c_int64, (c_int,)),
    "ggml_type_size": (c_size_t, (c_int,)),
    "ggml_row_size": (c_size_t, (c_int, c_int64)),
    "ggml_nbytes": (c_size_t, (_p,)),
    "ggml_is_contiguous": (c_bool, (_p,)),
    "ggml_is_contiguous_1": (c_bool, (_p,)),
    # ggml.h: tensors and ops
    "ggml_new_tensor": (_p, (_p, c_int, c_int, POINTER(c_int64))),
    "ggml_new_tensor_2d": (_p, (_p, c_int, c_int64, c_int64)),
    "ggml_set_name": (_p, (_p, c_char_p)),
    "ggml_get_name": (c_char_p, (_p,)),
    "ggml_set_input": (None, (_p,)),
    "ggml_set_output": (None, (_p,)),
    "ggml_view_1d": (_p, (_p, _p, c_int64, c_size_t)),
    "ggml_add": (_p, (_p, _p, _p)),
    "ggml_mul_mat": (_p, (_p, _p, _p)),
    # ggml.h: graphs
    "ggml_new_graph_custom": (_p, (_p, c_size_t, c_bool)),
    "ggml_build_forward_expand": (None, (_p, _p)),
    "ggml_graph_n_nodes": (c_int, (_p,)),
    # ggml.h: quantization
    "ggml_quantize_requires_imatrix": (c_bool, (c_int,)),
    "ggml_quantize_chunk": (c_size_t, (c_int, _FloatP, _p, c_int64, c_int64, c_int64, _FloatP)),
    # ggml-alloc.h
    "ggml_gallocr_new": (_p, (_p,)),
    "ggml_gallocr_free": (None, (_p,)),
    "ggml_gallocr_reserve": (c_bool, (_p, _p)),
    "ggml_gallocr_alloc_graph": (c_bool, (_p, _p)),
    "ggml_gallocr_get_buffer_size": (c_size_t, (_p, c_int)),
    "ggml_backend_alloc_ctx_tensors_from_buft_size": (c_size_t, (_p, _p)),
    "ggml_backend_alloc_ctx_tensors_from_buft": (_p, (_p, _p)),
    "ggml_backend_alloc_ctx_tensors": (_p, (_p, _p)),
    # ggml-backend.h: buffer types and buffers
    "ggml_backend_buft_name": (c_char_p, (_p,)),
    "ggml_backend_buffer_name": (c_char_p, (_p,)),
    "ggml_backend_buffer_free": (None, (_p,)),
    "ggml_backend_buffer_get_size": (c_size_t, (_p,)),
    "ggml_backend_buffer_clear": (None, (_p, c_uint8)),
    "ggml_backend_buffer_set_usage": (None, (_p, c_int)),
    # ggml-backend.h: backends (streams)
    "ggml_backend_name": (c_char_p, (_p,)),
    "ggml_backend_free": (None, (_p,)),
    "ggml_backend_get_default_buffer_type": (_p, (_p,)),
    "ggml_backend_tensor_set": (None, (_p, _p, c_size_t, c_size_t)),
    "ggml_backend_tensor_get": (None, (_p, _p, c_size_t, c_size_t)),
    "ggml_backend_synchronize": (None, (_p,)),
    "ggml_backend_graph_compute": (c_int, (_p, _p)),
    # ggml-backend.h: devices and registries
    "ggml_backend_dev_name": (c_char_p, (_p,)),
    "ggml_backend_dev_description": (c_char_p, (_p,)),
    "ggml_backend_dev_memory": (None, (_p, _SizeP, _SizeP)),
    "ggml_backend_dev_type": (c_int, (_p,)),
    "ggml_backend_dev_get_props": (None, (_p, POINTER(GGMLBackendDevProps))),
    "ggml_backend_dev_backend_reg": (_p, (_p,)),
    "ggml_backend_dev_init": (_p, (_p, c_char_p)),
    "ggml_backend_reg_name": (c_char_p, (_p,)),
    "ggml_backend_reg_get_proc_address": (_p, (_p, c_char_p)),
    "ggml_backend_dev_count": (c_size_t, ()),
    "ggml_backend_dev_get": (_p, (c_size_t,)),
    "ggml_backend_dev_by_type": (_p, (c_int,)),
    "ggml_backend_load_all_from_path": (None, (c_char_p,)),
}

_OPTIONAL: Final[dict[str, tuple[Any, tuple[Any, ...]]]] = {
    "ggml_commit": (c_char_p, ()),
    # ggml-cpu.h: only exported by libggml when the CPU backend is linked in (no GGML_BACKEND_DL);
    # otherwise the registry's proc address "ggml_backend_set_n_threads" is the way.
    "ggml_backend_cpu_set_n_threads": (None, (_p, c_int)),
}

_I64 = c_int64
_SZ = c_size_t
_F = c_float


def _unary_decls(*names: str) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    out: dict[str, tuple[Any, tuple[Any, ...]]] = {}
    for name in names:
        out[f"ggml_{name}"] = (_p, (_p, _p))
        out[f"ggml_{name}_inplace"] = (_p, (_p, _p))
    return out


#: Graph-building ops and the backend/allocator calls the mlplug backend uses. They are looked
#: up like the optional ones: a build that lacks one makes the ops needing it unsupported
#: (:meth:`Lib.has`) instead of failing to load.
_OPS: Final[dict[str, tuple[Any, tuple[Any, ...]]]] = {
    # layout
    "ggml_view_4d": (_p, (_p, _p, _I64, _I64, _I64, _I64, _SZ, _SZ, _SZ, _SZ)),
    "ggml_reshape_4d": (_p, (_p, _p, _I64, _I64, _I64, _I64)),
    "ggml_permute": (_p, (_p, _p, c_int, c_int, c_int, c_int)),
    "ggml_cont": (_p, (_p, _p)),
    "ggml_cont_4d": (_p, (_p, _p, _I64, _I64, _I64, _I64)),
    "ggml_cpy": (_p, (_p, _p, _p)),
    "ggml_cast": (_p, (_p, _p, c_int)),
    "ggml_get_rows": (_p, (_p, _p, _p)),
    "ggml_set_rows": (_p, (_p, _p, _p, _p)),
    "ggml_set_inplace": (_p, (_p, _p, _p, _SZ, _SZ, _SZ, _SZ)),
    "ggml_concat": (_p, (_p, _p, _p, c_int)),
    "ggml_repeat_4d": (_p, (_p, _p, _I64, _I64, _I64, _I64)),
    "ggml_pad": (_p, (_p, _p, c_int, c_int, c_int, c_int)),
    "ggml_arange": (_p, (_p, _F, _F, _F)),
    "ggml_fill_inplace": (_p, (_p, _p, _F)),
    "ggml_diag": (_p, (_p, _p)),
    "ggml_tri": (_p, (_p, _p, c_int)),
    # arithmetic
    "ggml_sub": (_p, (_p, _p, _p)),
    "ggml_mul": (_p, (_p, _p, _p)),
    "ggml_div": (_p, (_p, _p, _p)),
    "ggml_add_id": (_p, (_p, _p, _p, _p)),
    "ggml_mul_mat_set_prec": (None, (_p, c_int)),
    "ggml_mul_mat_id": (_p, (_p, _p, _p, _p)),
    "ggml_scale": (_p, (_p, _p, _F)),
    "ggml_scale_bias": (_p, (_p, _p, _F, _F)),
    "ggml_clamp": (_p, (_p, _p, _F, _F)),
    # ggml_clamp returned a view of its input (in place) up to 0.2x; from 0.25 it allocates a
    # new tensor and ggml_clamp_inplace is the in-place form mlplug's clamp needs.
    "ggml_clamp_inplace": (_p, (_p, _p, _F, _F)),
    **_unary_decls(*UNARY_PRIMITIVES),
    "ggml_geglu_split": (_p, (_p, _p, _p)),
    "ggml_geglu_quick_split": (_p, (_p, _p, _p)),
    "ggml_swiglu_split": (_p, (_p, _p, _p)),
    "ggml_reglu_split": (_p, (_p, _p, _p)),
    "ggml_swiglu_oai": (_p, (_p, _p, _p, _F, _F)),
    # rows
    "ggml_soft_max": (_p, (_p, _p)),
    "ggml_soft_max_ext": (_p, (_p, _p, _p, _F, _F)),
    "ggml_soft_max_add_sinks": (None, (_p, _p)),
    "ggml_norm": (_p, (_p, _p, _F)),
    "ggml_rms_norm": (_p, (_p, _p, _F)),
    "ggml_l2_norm": (_p, (_p, _p, _F)),
    "ggml_sum_rows": (_p, (_p, _p)),
    "ggml_mean": (_p, (_p, _p)),
    "ggml_cumsum": (_p, (_p, _p)),
    "ggml_argsort": (_p, (_p, _p, c_int)),
    "ggml_solve_tri": (_p, (_p, _p, _p, c_bool, c_bool, c_bool)),
    # nn
    "ggml_pool_2d": (_p, (_p, _p, c_int, c_int, c_int, c_int, c_int, _F, _F)),
    "ggml_im2col": (_p, (_p, _p, _p, c_int, c_int, c_int, c_int, c_int, c_int, c_bool, c_int)),
    "ggml_conv_3d": (
        _p,
        (_p, _p, _p, _I64, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int),
    ),
    "ggml_im2col_3d": (
        _p,
        (_p, _p, _p, _I64, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int),
    ),
    "ggml_ssm_conv": (_p, (_p, _p, _p)),
    # Declared with today's trailing ``int64_t K`` (state snapshots; 1 = final state only).
    # Builds from before K ignore the extra argument (C calling convention).
    "ggml_ssm_scan": (_p, (_p, _p, _p, _p, _p, _p, _p, _p, _I64)),
    "ggml_interpolate": (_p, (_p, _p, _I64, _I64, _I64, _I64, c_uint32)),
    "ggml_rope_ext": (_p, (_p, _p, _p, _p, c_int, c_int, c_int, _F, _F, _F, _F, _F, _F)),
    "ggml_rope_multi": (
        _p,
        (_p, _p, _p, _p, c_int, POINTER(c_int), c_int, c_int, _F, _F, _F, _F, _F, _F),
    ),
    "ggml_flash_attn_ext": (_p, (_p, _p, _p, _p, _p, _F, _F, _F)),
    "ggml_flash_attn_ext_set_prec": (None, (_p, c_int)),
    "ggml_flash_attn_ext_add_sinks": (None, (_p, _p)),
    # graphs
    "ggml_graph_node": (_p, (_p, c_int)),
    "ggml_graph_size": (c_int, (_p,)),
    "ggml_op_desc": (c_char_p, (_p,)),
    "ggml_graph_add_node": (None, (_p, _p)),
    # backends, buffers, allocators
    "ggml_backend_supports_op": (c_bool, (_p, _p)),
    "ggml_backend_get_device": (_p, (_p,)),
    "ggml_backend_dev_buffer_type": (_p, (_p,)),
    "ggml_backend_buft_alloc_buffer": (_p, (_p, _SZ)),
    "ggml_backend_buft_get_alignment": (_SZ, (_p,)),
    "ggml_backend_buft_get_max_size": (_SZ, (_p,)),
    "ggml_backend_buft_get_alloc_size": (_SZ, (_p, _p)),
    "ggml_backend_buft_is_host": (c_bool, (_p,)),
    "ggml_backend_buffer_get_base": (_p, (_p,)),
    "ggml_backend_tensor_alloc": (c_int, (_p, _p, _p)),
    "ggml_backend_tensor_memset": (None, (_p, c_uint8, _SZ, _SZ)),
    "ggml_gallocr_reserve_n_size": (None, (_p, _p, _p, _p, _SizeP)),
    # the scheduler (graphs across devices: local and remote)
    "ggml_backend_sched_new": (
        _p,
        (POINTER(c_void_p), POINTER(c_void_p), c_int, _SZ, c_bool, c_bool),
    ),
    "ggml_backend_sched_free": (None, (_p,)),
    "ggml_backend_sched_reserve_size": (None, (_p, _p, _SizeP)),
    "ggml_backend_sched_alloc_graph": (c_bool, (_p, _p)),
    "ggml_backend_sched_graph_compute": (c_int, (_p, _p)),
    "ggml_backend_sched_set_tensor_backend": (None, (_p, _p, _p)),
    "ggml_backend_sched_get_buffer_size": (_SZ, (_p, _p)),
    "ggml_backend_sched_get_n_splits": (c_int, (_p,)),
    "ggml_backend_sched_get_n_copies": (c_int, (_p,)),
    "ggml_backend_buffer_get_usage": (c_int, (_p,)),
}

#: ``ggml_backend_set_n_threads_t`` from ggml-backend.h, for proc addresses.
SetNThreadsFn: Final = ctypes.CFUNCTYPE(None, c_void_p, c_int)


class GGMLBackendFeature(ctypes.Structure):
    """``struct ggml_backend_feature``: one ``(name, value)`` of a backend's build features."""

    _fields_ = [
        ("name", c_char_p),
        ("value", c_char_p),
    ]


#: ``ggml_backend_get_features_t`` from ggml-backend.h (proc address
#: ``"ggml_backend_get_features"``): an array of features ended by a NULL name.
GetFeaturesFn: Final = ctypes.CFUNCTYPE(POINTER(GGMLBackendFeature), c_void_p)


# --------------------------------------------------------------------------------------------
# The loaded library
# --------------------------------------------------------------------------------------------


class Lib:
    """The opened ggml libraries; each declared function is an attribute named as in C.

    Optional functions missing from the build are ``None``; test with :meth:`has`.
    ``layout`` says where the libraries were found (``LAYOUT_*``; "" when not known).
    """

    def __init__(
        self,
        directory: Path,
        paths: Sequence[Path],
        handles: Sequence[ctypes.CDLL],
        version: str,
        commit: str,
        layout: str = "",
    ) -> None:
        self.directory = directory
        self.paths = tuple(paths)
        self.version = version
        self.commit = commit
        self.layout = layout
        self._handles = tuple(handles)
        missing = []
        for name, (restype, argtypes) in _REQUIRED.items():
            fn = self._lookup(name)
            if fn is None:
                missing.append(name)
                continue
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        if missing:
            msg = (
                f"ggml library in {directory} (version {version}) lacks required "
                f"symbol(s): {', '.join(missing)}"
            )
            raise BackendLoadError(msg, backend=BACKEND)
        for name, (restype, argtypes) in (_OPTIONAL | _OPS).items():
            fn = self._lookup(name)
            if fn is not None:
                fn.restype = restype
                fn.argtypes = argtypes
            setattr(self, name, fn)

    def _lookup(self, name: str) -> Any:
        for handle in self._handles:
            try:
                return getattr(handle, name)
            except AttributeError:
                continue
        return None

    def symbol(self, name: str) -> Any:
        """The undeclared C function ``name`` of the opened libraries (a ctypes function whose
        ``restype``/``argtypes`` the caller sets), or None when no library exports it."""
        return self._lookup(name)

    def has(self, name: str) -> bool:
        """Whether the declared function ``name`` exists in this build."""
        return getattr(self, name, None) is not None

    @property
    def version_tuple(self) -> tuple[int, ...]:
        """The ggml version as integers, e.g. ``(0, 20, 2)``."""
        return _parse_version(self.version) or (0,)

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...


_LIB: Lib | None = None
_LOCK = threading.Lock()


def is_loaded() -> bool:
    """Whether :func:`load` has opened the libraries in this process."""
    return _LIB is not None


def load() -> Lib:
    """Open the ggml libraries once per process and return the declared functions.

    :returns: the cached :class:`Lib`.
    :raises BackendLoadError: the library is missing, cannot be opened, is too old, has an
        unexpected ``struct ggml_tensor`` size, or lacks a required symbol.
    """
    global _LIB
    if _LIB is not None:
        return _LIB
    with _LOCK:
        if _LIB is None:
            _LIB = _open(*locate())
    return _LIB


# --------------------------------------------------------------------------------------------
# Discovery and opening
# --------------------------------------------------------------------------------------------


def _lib_filename(stem: str) -> str:
    """Platform file name of a ggml library: ``ggml-base`` -> ``libggml-base.so`` on Linux."""
    if sys.platform == "win32":
        return f"{stem}.dll"
    if sys.platform == "darwin":
        return f"lib{stem}.dylib"
    return f"lib{stem}.so"


def _sibling(directory: Path, stem: str) -> Path | None:
    """Path of library ``stem`` in ``directory`` (also a versioned ``.so.N`` only), or None."""
    exact = directory / _lib_filename(stem)
    if exact.is_file():
        return exact
    versioned = sorted(directory.glob(_lib_filename(stem) + ".*"))
    return versioned[0] if versioned else None


def _package_dir() -> Path | None:
    """Folder of the installed ``libggml`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("libggml")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_library() -> tuple[Path, Path]:
    """Locate the ggml libraries without opening them.

    :returns: ``(directory, path of libggml)``.
    :raises BackendLoadError: nothing usable was found; the message says where it looked.
    """
    directory, main, _ = locate()
    return directory, main


def locate() -> tuple[Path, Path, str]:
    """Like :func:`find_library`, and say which way the library was found.

    :returns: ``(directory, path of libggml, layout)``; layout is :data:`LAYOUT_ENV`,
        :data:`LAYOUT_SOURCE` (``libggml/lib/``) or :data:`LAYOUT_WHEEL` (``libggml/lib64/``).
    :raises BackendLoadError: nothing usable was found; the message says where it looked.
    """
    env = os.environ.get(ENV_LIB, "").strip()
    if env:
        given = Path(env).expanduser()
        if given.is_dir():
            main = _sibling(given, "ggml")
            if main is None:
                msg = f"{ENV_LIB}={env!r}: directory has no {_lib_filename('ggml')}"
                raise BackendLoadError(msg, backend=BACKEND)
            return given, main, LAYOUT_ENV
        if given.is_file():
            return given.parent, given, LAYOUT_ENV
        msg = f"{ENV_LIB}={env!r}: no such file or directory"
        raise BackendLoadError(msg, backend=BACKEND)
    package = _package_dir()
    if package is None:
        msg = (
            "ggml library not found: the libggml-python package is not installed "
            f"(pip install libggml-python) and {ENV_LIB} is not set"
        )
        raise BackendLoadError(msg, backend=BACKEND)
    for sub in ("lib", "lib64"):
        directory = package / sub
        main = _sibling(directory, "ggml") if directory.is_dir() else None
        if main is not None:
            return directory, main, _LAYOUT_OF_SUBDIR[sub]
    msg = f"ggml library not found in {package}/lib or {package}/lib64"
    raise BackendLoadError(msg, backend=BACKEND)


def _parse_version(text: str) -> tuple[int, ...] | None:
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def _open(directory: Path, main: Path, layout: str = "") -> Lib:
    """dlopen base, cpu (when a separate, linked library) and main with RTLD_GLOBAL, then check."""
    mode = getattr(os, "RTLD_GLOBAL", 0) | getattr(os, "RTLD_NOW", 0)
    order: list[Path] = []
    for stem in ("ggml-base", "ggml-cpu"):
        # A plain libggml-cpu is the linked CPU backend; variants (libggml-cpu-haswell, ...) of a
        # GGML_BACKEND_DL build are picked by ggml_backend_load_all_from_path instead.
        path = _sibling(directory, stem)
        if path is not None:
            order.append(path)
    order.append(main)
    handles = []
    for path in order:
        try:
            handles.append(ctypes.CDLL(str(path), mode=mode))
        except OSError as exc:
            msg = f"cannot load ggml library {path}: {exc}"
            raise BackendLoadError(msg, backend=BACKEND) from exc
    handles.reverse()  # look symbols up in libggml first, then cpu, then base

    version_fn = None
    for handle in handles:
        version_fn = getattr(handle, "ggml_version", None)
        if version_fn is not None:
            break
    if version_fn is None:
        msg = (
            f"ggml library {main} is too old or not ggml: it does not export ggml_version(); "
            f"mlplug-ggml needs ggml >= {'.'.join(map(str, MIN_GGML_VERSION))}"
        )
        raise BackendLoadError(msg, backend=BACKEND)
    version_fn.restype = c_char_p
    version_fn.argtypes = ()
    version = (version_fn() or b"").decode(errors="replace")
    parsed = _parse_version(version)
    if parsed is None or parsed < MIN_GGML_VERSION:
        msg = (
            f"ggml library {main} has version {version!r}; mlplug-ggml needs ggml >= "
            f"{'.'.join(map(str, MIN_GGML_VERSION))}"
        )
        raise BackendLoadError(msg, backend=BACKEND)
    if parsed[0] >= 1:
        log.warning("ggml %s is newer than the 0.x ABI these bindings were written for", version)

    lib = Lib(directory, order, handles, version, "", layout)
    commit_fn = lib.ggml_commit
    lib.commit = (commit_fn() or b"").decode(errors="replace") if commit_fn is not None else ""

    tensor_size = lib.ggml_tensor_overhead() - GGML_OBJECT_SIZE
    if tensor_size != ctypes.sizeof(GGMLTensor):
        msg = (
            f"ggml {version} in {directory}: struct ggml_tensor is {tensor_size} bytes, the "
            f"bindings expect {ctypes.sizeof(GGMLTensor)} (built with other GGML_MAX_* values?)"
        )
        raise BackendLoadError(msg, backend=BACKEND)
    log.debug("loaded ggml %s (%s) from %s", version, lib.commit, directory)
    return lib
