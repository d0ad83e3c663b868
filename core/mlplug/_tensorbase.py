"""TensorBase: the backend-independent graph node every backend's tensors are.

A tensor is ggml-shaped metadata (dtype, 4 extents ``ne``, 4 byte strides ``nb``) plus, for a
graph node, the op that makes it and its sources. Storage belongs to the backend: a root tensor
(constructor-made or the result of a non-view op) has ``data`` set by its context's backend; a
view (or the result of an in-place op) points at the root whose storage it shares through
``view_src`` and a byte offset ``view_offs``. The op methods live in the mixins of
:mod:`mlplug.ops` and are gathered into :class:`mlplug.Tensor`.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

import numpy as np

from .dtypes import TRAITS, DType, nbytes_of
from .errors import DTypeError, GraphError, ShapeError
from .halves import half_to_f32
from .ops.records import NO_PARAMS, OpParams

if TYPE_CHECKING:
    from .context import Context
    from .tensor import Tensor

__all__ = ["TensorBase", "as_tensor", "contiguous_strides"]

Shape4 = tuple[int, int, int, int]

#: Op name of tensors made by a Context constructor (they own data from the start).
LEAF = "leaf"


def contiguous_strides(dtype: DType, ne: Shape4) -> Shape4:
    """Return the byte strides of a fresh contiguous tensor of ``dtype`` and shape ``ne``."""
    tr = TRAITS[dtype]
    nb0 = tr.type_size
    nb1 = nb0 * (ne[0] // tr.block_size)
    nb2 = nb1 * ne[1]
    return (nb0, nb1, nb2, nb2 * ne[2])


def as_tensor(t: TensorBase) -> Tensor:
    """Return ``t`` typed as the :class:`mlplug.Tensor` it is.

    The op methods live in mixins of :class:`TensorBase` that :class:`mlplug.Tensor` gathers, so
    their ``self`` is statically a mixin; every instance is a Tensor (checked here).

    :raises GraphError: ``t`` is a bare mixin or TensorBase instance, not a Tensor.
    """
    if isinstance(t, _TENSOR_CLASS or tensor_class()):
        return t
    msg = f"{type(t).__name__} is not an mlplug.Tensor"
    raise GraphError(msg)


_TENSOR_CLASS: type[Tensor] | None = None


def register_tensor_class(cls: type[Tensor]) -> None:
    """Record :class:`mlplug.Tensor`, the class every node is (called once, by mlplug.tensor).

    The graph layer defines the node's data; the op methods are gathered above it, so the
    class that unites them announces itself here instead of being imported upwards.
    """
    global _TENSOR_CLASS
    _TENSOR_CLASS = cls


def tensor_class() -> type[Tensor]:
    """Return :class:`mlplug.Tensor` (registered by :mod:`mlplug.tensor` when imported)."""
    if _TENSOR_CLASS is None:
        msg = "mlplug.tensor has not been imported: import mlplug first"
        raise GraphError(msg)
    return _TENSOR_CLASS


class TensorBase:
    """Metadata, graph links and data access shared by every backend's tensors."""

    __slots__ = (
        "__weakref__",
        "ctx",
        "data",
        "dtype",
        "handle",
        "name",
        "nb",
        "ne",
        "op",
        "params",
        "readable",
        "src",
        "view_offs",
        "view_src",
    )

    def __init__(
        self,
        ctx: Context,
        dtype: DType,
        ne: Shape4,
        nb: Shape4 | None = None,
        op: str = LEAF,
        src: tuple[Tensor, ...] = (),
        params: OpParams = NO_PARAMS,
        view_src: Tensor | None = None,
        view_offs: int = 0,
    ) -> None:
        self.ctx = ctx
        self.dtype = dtype
        self.ne = ne
        self.nb = nb if nb is not None else contiguous_strides(dtype, ne)
        self.op = op
        self.src = src
        self.params = params
        #: The root tensor owning the storage, for views and in-place results.
        self.view_src = view_src
        #: Byte offset of element 0 inside the root's storage.
        self.view_offs = view_offs
        #: Backend storage of a root tensor (numpy buffer, torch tensor, ggml pointer, ...).
        self.data: Any = None
        #: Backend-private per-node cache (compiled views, ggml tensor pointer, ...).
        self.handle: Any = None
        self.name = ""
        #: Set when the tensor was passed to ``compute``; only then are its bytes readable.
        self.readable = False

    # -- shape and layout -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The extents in ggml order (dim 0 fastest), trailing size-1 dims dropped.

        >>> ctx.zeros(DType.F32, 4, 1, 5, 1).shape
        (4, 1, 5)
        >>> ctx.zeros(DType.F32, 3, 1).shape
        (3,)
        """
        ne = self.ne
        n = 4
        while n > 1 and ne[n - 1] == 1:
            n -= 1
        return ne[:n]

    def dim(self, n: int) -> int:
        """Return the extent of dimension ``n`` (0..3; dims never given are 1).

        >>> t = ctx.zeros(DType.F32, 3, 2)
        >>> t.dim(0), t.dim(1), t.dim(3)
        (3, 2, 1)

        :raises IndexError: if ``n`` is outside 0..3.
        """
        _check_dim(n)
        return self.ne[n]

    def stride(self, n: int) -> int:
        """Return the stride of dimension ``n`` in bytes.

        >>> t = ctx.zeros(DType.F32, 3, 2)
        >>> t.stride(0), t.stride(1), t.stride(2)
        (4, 12, 24)
        >>> q = ctx.zeros(DType.Q8_0, 64, 2)
        >>> q.stride(0), q.stride(1)
        (34, 68)

        :raises IndexError: if ``n`` is outside 0..3.
        """
        _check_dim(n)
        return self.nb[n]

    @property
    def nelements(self) -> int:
        """Number of elements."""
        ne = self.ne
        return ne[0] * ne[1] * ne[2] * ne[3]

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data when packed contiguously."""
        return nbytes_of(self.dtype, self.ne)

    @property
    def root(self) -> Tensor:
        """The tensor owning this tensor's storage (itself for a root)."""
        vs = self.view_src
        return vs if vs is not None else as_tensor(self)

    def is_contiguous(self) -> bool:
        """Whether strides equal the fresh-tensor strides (size-1 dims ignored)."""
        if not self._dim0_packed():
            return False
        tr = TRAITS[self.dtype]
        (n0, n1, n2, n3), (_, nb1, nb2, nb3) = self.ne, self.nb
        expected = tr.type_size * (n0 // tr.block_size)
        if n1 != 1:
            if nb1 != expected:
                return False
            expected *= n1
        if n2 != 1:
            if nb2 != expected:
                return False
            expected *= n2
        return n3 == 1 or nb3 == expected

    def is_rows_contiguous(self) -> bool:
        """Whether dim 0 is packed and dims 2, 3 are packed relative to dim 1's stride."""
        if not self._dim0_packed():
            return False
        ne, nb = self.ne, self.nb
        if ne[2] > 1 and nb[2] != nb[1] * ne[1]:
            return False
        return not (ne[3] > 1 and nb[3] != nb[2] * ne[2])

    def _dim0_packed(self) -> bool:
        tr = TRAITS[self.dtype]
        return self.ne[0] == tr.block_size or self.nb[0] == tr.type_size

    def is_transposed(self) -> bool:
        """ggml's ``is_transposed``: ``nb[0] > nb[1]``."""
        return self.nb[0] > self.nb[1]

    # -- data access ------------------------------------------------------------------------
    def bytes(self) -> bytes | None:
        """Return the tensor's data packed in ggml order, or None if it was not computed.

        Only tensors passed to ``Context.compute`` are readable (docs/tensors.md, section 'Graph
        semantics').

        >>> t = ctx.from_ints([1, 258], 2)
        >>> t.bytes() is None
        True
        >>> ctx.compute(t)
        >>> list(t.bytes())
        [1, 0, 0, 0, 2, 1, 0, 0]
        """
        if not self.readable or self.nelements == 0:
            return None
        self.ctx.check_open()
        return self.ctx.read_bytes(as_tensor(self))

    def _array(self) -> np.ndarray | None:
        """The data as a new writable ``uint8`` array (see :meth:`bytes`), or None."""
        if not self.readable or self.nelements == 0:
            return None
        self.ctx.check_open()
        return self.ctx.read_array(as_tensor(self))

    def floats(self) -> np.ndarray | None:
        """Return the data as a 1-D float32 array in ggml order, or None if not computed.

        F32 is returned as is, F16/BF16 converted; I32 data is reinterpreted bit for bit as
        float32, the ``ml`` interface's rule (use :meth:`to_numpy` for integers).

        >>> t = ctx.from_floats([1.5, 2], 2)
        >>> i = ctx.from_ints([1], 1)
        >>> ctx.compute(t, i)
        >>> t.floats().tolist(), i.floats().tolist()
        ([1.5, 2.0], [1.401298464324817e-45])

        :raises DTypeError: for block-quantised tensors (read them after ``cast`` to F32).
        """
        raw = self._array()
        if raw is None:
            return None
        if self.dtype in (DType.F32, DType.I32):
            return raw.view("<f4")
        if self.dtype == DType.F16:
            return half_to_f32(raw.view("<u2"))
        if self.dtype == DType.BF16:
            wide: np.ndarray = raw.view("<u2").astype(np.uint32) << 16
            return wide.view(np.float32)
        msg = f"floats() of a {self.dtype.name} tensor: cast it to F32 first"
        raise DTypeError(msg, op="floats", dtypes=(self.dtype,))

    def to_numpy(self) -> np.ndarray | None:
        """Return the computed data as an array of shape ``reversed(t.shape)``, or None.

        F32/F16/BF16 come back as float32, integer types keep their numpy integer type.

        >>> t = ctx.from_floats([1, 2, 3, 4, 5, 6], 3, 2)
        >>> ctx.compute(t)
        >>> a = t.to_numpy()
        >>> a.shape, a.dtype, a.tolist()
        ((2, 3), dtype('float32'), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        """
        np_dtype = TRAITS[self.dtype].numpy
        if np_dtype is not None and self.dtype != DType.F16:
            raw = self._array()
            if raw is None:
                return None
            arr = raw.view(np_dtype)
        else:
            floats = self.floats()
            if floats is None:
                return None
            arr = floats
        shaped: np.ndarray = arr.reshape(tuple(reversed(self.shape)))
        return shaped

    def from_bytes(self, data: builtins.bytes | bytearray | memoryview | np.ndarray) -> None:
        """Overwrite this tensor's storage now with raw bytes (no dtype check).

        >>> t = ctx.zeros(DType.F32, 2)
        >>> t.from_bytes(np.float32([5, 6]).tobytes())
        >>> ctx.compute(t)
        >>> t.floats().tolist()
        [5.0, 6.0]
        >>> t.from_bytes(bytes(4))
        Traceback (most recent call last):
            ...
        mlplug.errors.ShapeError: data size does not match tensor size: got 4 bytes ...

        :raises ShapeError: if the byte length differs from the tensor's byte size.
        :raises GraphError: if the tensor is a graph node without its own storage.
        """
        if isinstance(data, np.ndarray):
            buf = memoryview(np.ascontiguousarray(data).tobytes())
        else:
            buf = memoryview(data).cast("B")
        if len(buf) == 0:
            return
        if self.op != LEAF:
            msg = f"from_bytes on a {self.op!r} graph node: only constructor-made tensors own data"
            raise GraphError(msg)
        if len(buf) != self.nbytes:
            msg = (
                f"data size does not match tensor size: got {len(buf)} bytes for a "
                f"{self.dtype.name} tensor of shape {list(self.shape)} ({self.nbytes} bytes)"
            )
            raise ShapeError(msg, op="from_bytes", shapes=(self.shape,))
        self.ctx.check_open()
        if self.ctx.allocates:
            self.ctx.write_bytes(as_tensor(self), buf.tobytes())

    def from_floats(self, values: Any) -> None:
        """Overwrite this tensor's storage now with float32 values (raw bit copy).

        >>> t = ctx.empty(DType.F32, 3)
        >>> t.from_floats([1, 2, 3])
        >>> ctx.compute(t)
        >>> t.floats().tolist()
        [1.0, 2.0, 3.0]
        """
        self.from_bytes(np.asarray(values, dtype="<f4"))

    def from_ints(self, values: Any) -> None:
        """Overwrite this tensor's storage now with int32 values (raw bit copy).

        >>> t = ctx.empty(DType.I32, 2)
        >>> t.from_ints([7, -1])
        >>> ctx.compute(t)
        >>> t.to_numpy().tolist()
        [7, -1]
        """
        self.from_bytes(np.asarray(values, dtype="<i4"))

    def __repr__(self) -> str:
        kind = "" if self.op == LEAF else f" op={self.op}"
        return f"<Tensor {self.dtype.name} {list(self.shape)}{kind}>"


def _check_dim(n: int) -> None:
    if not 0 <= n < 4:
        msg = f"dimension {n} out of range 0..3"
        raise IndexError(msg)


def check_shape(shape: tuple[int, ...], what: str = "shape") -> Shape4 | None:
    """Validate a constructor shape; return it padded to 4 dims, or None for an empty tensor.

    :raises ShapeError: for more than 4 dims, non-integer or non-positive extents.
    """
    if len(shape) == 0 or shape[0] == 0:
        return None
    if len(shape) > 4:
        msg = f"unsupported number of dimensions: {what} {list(shape)} has {len(shape)} (max 4)"
        raise ShapeError(msg, shapes=(tuple(shape),))
    for d in shape:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            msg = f"invalid shape: {what} {list(shape)} has a non-integer extent {d!r}"
            raise ShapeError(msg, shapes=(tuple(shape),))
        if d < 1:
            msg = f"invalid shape: {what} {list(shape)} has an extent < 1"
            raise ShapeError(msg, shapes=(tuple(shape),))
    p = (*(int(d) for d in shape), 1, 1, 1)
    return (p[0], p[1], p[2], p[3])
