"""What a conformance case is: its inputs (:class:`Arg`), its tolerance and the :class:`Case`.

A case is data plus three small functions: ``build`` makes the op's graph from input tensors
using only the public API, ``reference`` computes the expected result in float64 numpy from the
values the inputs really hold (after f16 rounding or dequantisation), and an optional ``check``
looks at the result's metadata (strides of a view, say). Shapes are ggml shapes (dim 0 first);
arrays handed to references are numpy views, i.e. of shape ``reversed(ne)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..dtypes import DType

if TYPE_CHECKING:
    from ..tensor import Tensor

__all__ = [
    "Arg",
    "Build",
    "Case",
    "Inputs",
    "Reference",
    "TIERS",
    "Tolerance",
]

#: The tiers of the catalogue: ``default`` runs everywhere (fast), ``full`` holds the cases at
#: real sizes (large K, long rows, many keys); a selection names one tier or ``all``.
TIERS: tuple[str, ...] = ("default", "full")

#: ``reference(*operands) -> array | list of arrays`` (float64 / int numpy views).
Reference = Callable[..., "np.ndarray | Sequence[np.ndarray]"]
#: ``build(ctx, inputs) -> Tensor | list[Tensor]``, public API only (``ctx`` a Context,
#: ``inputs`` an :class:`Inputs`; extra keyword defaults may bind loop variables).
Build = Callable[..., "Tensor | Sequence[Tensor]"]


@dataclass(frozen=True)
class Arg:
    """One input of a case: ggml shape, dtype and how its values are drawn.

    ``gen`` is one of ``uniform`` (in ``[lo, hi)``), ``magnitude`` (``|x|`` in ``[lo, hi)``,
    random sign: safe denominators), ``distinct`` (all values distinct, spread over
    ``[lo, hi)``: sort keys), ``int`` (integers in ``[lo, hi)``), ``perm`` (each dim-0 row
    holds distinct integers drawn from ``range(hi)``, or a permutation of ``range(ne0)`` when
    ``hi`` is 0), ``lower`` (square matrices with ``|diag|`` in ``[1, 2)`` and small
    off-diagonal values: well-conditioned triangular systems), ``mask`` (0 or ``-inf``, key 0
    always visible: attention masks), ``causal`` (query row ``i`` sees keys ``0..i``, later
    keys never: a prompt's mask over a padded cache), ``fixed`` (``values``, flat in
    ggml order: worked examples with known results) or ``zeros``. Quantised dtypes ignore
    ``gen``: their blocks are drawn directly (values of magnitude about 1). With ``tensor=False``
    the build gets only the raw array (``inputs.raw[i]``), for cases that test the constructors.

    ``layout`` presents the same values through a non-contiguous view (see
    :data:`mlplug.conformance.data.LAYOUTS`): ``permuted`` (dims 0 and 1 stored swapped),
    ``gapped`` (rows padded with NaN filler on both sides) or ``strided2`` (every other dim-2
    plane of a tensor twice as deep); ``""`` is a plain contiguous tensor.
    """

    ne: tuple[int, ...]
    dtype: DType = DType.F32
    gen: str = "uniform"
    lo: float = -1.0
    hi: float = 1.0
    values: tuple[float, ...] | None = None
    tensor: bool = True
    layout: str = ""


@dataclass(frozen=True)
class Tolerance:
    """How close a result must be to the reference.

    ``ulp`` set: an exact comparison in the result's dtype (0 = bit for bit, NaN matches NaN,
    ``-0`` matches ``0``); integers compare equal. Otherwise every element must satisfy
    ``|got - ref| <= atol + rtol * |ref| (+ the case's per-element bound)`` and, when ``nmse`` is
    set, ggml's normalised mean squared error ``sum((got - ref)^2) / sum(ref^2)`` must not
    exceed it.
    """

    nmse: float | None = None
    atol: float = 0.0
    rtol: float = 0.0
    ulp: int | None = None

    def scaled(self, factor: float) -> Tolerance:
        """Return this tolerance widened by ``factor`` (NMSE by ``factor**2``)."""
        return Tolerance(
            nmse=None if self.nmse is None else self.nmse * factor * factor,
            atol=self.atol * factor,
            rtol=self.rtol * factor,
            ulp=None if self.ulp is None else int(np.ceil(self.ulp * factor)),
        )

    def describe(self) -> str:
        """Return a short human-readable form (``ulp<=0``, ``nmse<=1e-07 atol=1e-06``)."""
        if self.ulp is not None:
            return "exact" if self.ulp == 0 else f"ulp<={self.ulp}"
        parts = []
        if self.nmse is not None:
            parts.append(f"nmse<={self.nmse:g}")
        if self.atol:
            parts.append(f"atol={self.atol:g}")
        if self.rtol:
            parts.append(f"rtol={self.rtol:g}")
        return " ".join(parts) or "bound"


class Inputs(Sequence["Tensor"]):
    """The inputs a build receives: ``inputs[i]`` is input i's tensor, ``inputs.raw[i]`` its data.

    ``raw`` holds the stored data as numpy views (float32, float16, int32, uint16 for BF16,
    or uint8 rows for block-quantised types).
    """

    def __init__(self, tensors: Sequence[Tensor | None], raw: Sequence[np.ndarray]) -> None:
        self._tensors = list(tensors)
        self.raw = list(raw)

    def __getitem__(self, i: int) -> Tensor:  # type: ignore[override]
        t = self._tensors[i]
        if t is None:
            msg = f"input {i} is raw data only (Arg(tensor=False)); use inputs.raw[{i}]"
            raise TypeError(msg)
        return t

    def __len__(self) -> int:
        return len(self._tensors)


@dataclass(frozen=True)
class Case:
    """One op case: inputs, a build on the public API, a float64 reference and a tolerance.

    :param id: stable identifier, ``<op>-<dtype>-<shape or variant>`` (``mulmat-f16-32x6x5``).
    :param op: the public method exercised (``mulmat``), or ``Context.<name>`` for constructors.
    :param dtype: the dtype label of the report's op x dtype matrix (``f32``, ``q8_0``, ...).
    :param out_dtype: the dtype every output must have (None: not checked).
    :param bound: ``bound(*operands)`` -> per-element absolute bounds added to ``tol.atol``
        (one array per output), for data-dependent tolerances (quantisation steps, row sums).
    :param check: ``check(outputs)`` -> an error text if the outputs' metadata is wrong.
    :param read: how to read an output instead of its raw bytes (accessor cases).
    :param raw_ref: the reference receives the inputs' raw storage instead of their values
        (block moves of quantised data).
    :param gold: the worked example's known result (flat, ggml order) per output; the
        reference must reproduce it within ``gold_atol`` or the case fails on every backend.
    :param expect_error: an error case: building (or computing) must raise this typed error
        (a subclass of :class:`~mlplug.errors.MlplugError`), the same on every backend; the
        reference is not called and the tolerance is not used.
    :param tier: ``default`` (the fast run) or ``full`` (real sizes, where kernels block, tile
        and thread: ``mlplug conformance --tier full``); see :data:`TIERS`.
    :param backend_params: ``BackendParams`` fields the case needs, as ``(name, value)`` pairs
        (``(("flash_attention", FlashAttentionType.ENABLED),)``); the runner opens one more
        instance of the backend with them. Empty: the backend as given.
    """

    id: str
    op: str
    args: tuple[Arg, ...]
    build: Build
    reference: Reference
    tol: Tolerance
    dtype: str = "f32"
    out_dtype: DType | None = None
    bound: Callable[..., np.ndarray | Sequence[np.ndarray]] | None = None
    check: Callable[[Sequence[Tensor]], str | None] | None = None
    read: Callable[[Tensor], np.ndarray | None] | None = None
    raw_ref: bool = False
    gold: tuple[tuple[float, ...], ...] | None = None
    gold_atol: float = 1e-6
    expect_error: type[Exception] | None = None
    tier: str = "default"
    backend_params: tuple[tuple[str, object], ...] = ()

    def with_id(self, new_id: str) -> Case:
        """Return a copy with another id."""
        return replace(self, id=new_id)
