"""Comparing a result with its reference: ggml's NMSE, max absolute error, ulp distance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dtypes import DType
from .case import Tolerance
from .data import bf16_bits

__all__ = ["Comparison", "compare", "max_abs_err", "nmse", "round_to", "ulp_distance"]

_FLOAT_VIEWS: dict[DType, tuple[type, type]] = {
    DType.F32: (np.float32, np.int32),
    DType.F16: (np.float16, np.int16),
}


def nmse(got: np.ndarray, ref: np.ndarray) -> float:
    """Return ggml's normalised mean squared error ``sum((got-ref)^2) / sum(ref^2)``.

    Non-finite values at the same positions with the same value are left out; any other
    non-finite difference gives ``inf``. A zero reference gives 0 for an exact match, else inf.
    """
    g, r = _finite_pair(got, ref)
    if g is None or r is None:
        return float("inf")
    scale = float(max(np.max(np.abs(g), initial=0.0), np.max(np.abs(r), initial=0.0)))
    if scale > 0.0:  # values near the float64 range must not overflow when squared
        g, r = g / scale, r / scale
    err = float(np.sum((g - r) ** 2))
    den = float(np.sum(r * r))
    if den == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return err / den


def max_abs_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Return ``max |got - ref|`` (0 for empty arrays; matching non-finite values ignored)."""
    g, r = _finite_pair(got, ref)
    if g is None or r is None:
        return float("inf")
    return float(np.max(np.abs(g - r))) if g.size else 0.0


def _finite_pair(got: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    g = np.asarray(got, np.float64).reshape(-1)
    r = np.asarray(ref, np.float64).reshape(-1)
    fin = np.isfinite(g) & np.isfinite(r)
    if not fin.all():
        same = (np.isnan(g) & np.isnan(r)) | (g == r)
        if not np.all(fin | same):
            return None, None
    return g[fin], r[fin]


def round_to(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Round float64 reference values to ``dtype`` (nearest even), returned in that dtype."""
    if dtype == DType.BF16:
        return bf16_bits(np.asarray(values, np.float64).astype(np.float32))
    if dtype in _FLOAT_VIEWS:
        with np.errstate(over="ignore"):
            return np.asarray(values, np.float64).astype(_FLOAT_VIEWS[dtype][0])
    return np.asarray(values)


def ulp_distance(got: np.ndarray, ref: np.ndarray, dtype: DType) -> np.ndarray:
    """Return element-wise distances in units in the last place of ``dtype``.

    ``got`` and ``ref`` hold values of ``dtype``; ``0`` and ``-0`` are 0 apart, two NaNs are 0
    apart, a NaN and a number are infinitely far apart.
    """
    if dtype == DType.BF16:
        gi = np.asarray(got, np.uint16).astype(np.int64)
        ri = np.asarray(ref, np.uint16).astype(np.int64)
        gi = np.where(gi & 0x8000, -(gi & 0x7FFF), gi)
        ri = np.where(ri & 0x8000, -(ri & 0x7FFF), ri)
        gf, rf = bf16_float(got), bf16_float(ref)
    elif dtype in _FLOAT_VIEWS:
        ftype, itype = _FLOAT_VIEWS[dtype]
        gf = np.asarray(got, ftype)
        rf = np.asarray(ref, ftype)
        sign = np.iinfo(itype).min
        gi = gf.view(itype).astype(np.int64)
        ri = rf.view(itype).astype(np.int64)
        gi = np.where(gi < 0, sign - gi, gi)
        ri = np.where(ri < 0, sign - ri, ri)
    else:
        return np.abs(np.asarray(got, np.int64) - np.asarray(ref, np.int64)).astype(np.float64)
    dist = np.abs(gi - ri).astype(np.float64)
    gnan, rnan = np.isnan(gf), np.isnan(rf)
    dist = np.where(gnan | rnan, np.where(gnan & rnan, 0.0, np.inf), dist)
    return np.asarray(dist, np.float64)


def bf16_float(bits: np.ndarray) -> np.ndarray:
    """Return bfloat16 bit patterns as float32."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class Comparison:
    """Outcome of one comparison: pass/fail, the metrics, and what failed.

    ``max_ulp`` is the largest distance in units in the last place of the result dtype from the
    reference rounded to that dtype (float results only); ``limit_used`` the largest
    ``|got - ref|`` as a fraction of its element's limit ``atol + rtol |ref| + bound`` (1 is the
    edge of the tolerance; None where no per-element limit applies).
    """

    passed: bool
    max_abs_err: float
    nmse: float
    detail: str = ""
    max_ulp: float | None = None
    limit_used: float | None = None


def _max_ulp(got: np.ndarray, ref: np.ndarray, dtype: DType) -> float | None:
    """Largest ulp distance of ``got`` from float64 ``ref`` rounded to ``dtype`` (floats only)."""
    if dtype not in (*_FLOAT_VIEWS, DType.BF16) or got.size == 0:
        return None
    dist = ulp_distance(got, round_to(ref, dtype), dtype)
    return float(dist.max())


def compare(
    got: np.ndarray,
    ref: np.ndarray,
    tol: Tolerance,
    dtype: DType,
    bound: np.ndarray | None = None,
) -> Comparison:
    """Compare ``got`` (values of ``dtype``, flat) with float64 ``ref`` under ``tol``.

    :param got: the result as stored: float32/float16 values, int values, bf16 bits.
    :param ref: the reference in float64 (or integers), same number of elements.
    :param bound: optional per-element absolute bound added to ``tol.atol``.
    """
    got = np.asarray(got).reshape(-1)
    ref = np.asarray(ref).reshape(-1)
    if got.size != ref.size:
        return Comparison(
            False, float("inf"), float("inf"), f"{got.size} elements, reference has {ref.size}"
        )
    got_v = bf16_float(got) if dtype == DType.BF16 else got
    ref_v = np.asarray(ref, np.float64)
    if tol.ulp is not None:  # exact: measure against the reference rounded to the result dtype
        rounded = round_to(ref, dtype)
        ref_v = np.asarray(bf16_float(rounded) if dtype == DType.BF16 else rounded, np.float64)
    err, rel = max_abs_err(got_v, ref_v), nmse(got_v, ref_v)
    if tol.ulp is not None:
        dist = ulp_distance(got, rounded, dtype)
        worst = float(dist.max()) if dist.size else 0.0
        ulp = worst if dtype in (*_FLOAT_VIEWS, DType.BF16) else None
        if worst > tol.ulp:
            i = int(np.argmax(dist))
            unit = "ulp" if dtype in (*_FLOAT_VIEWS, DType.BF16) else ""
            detail = (
                f"element {i}: got {float(got_v[i])!r}, expected {float(ref_v[i])!r} "
                f"({worst:g} {unit} apart, allowed {tol.ulp})"
            )
            return Comparison(False, err, rel, detail, ulp)
        return Comparison(True, err, rel, max_ulp=ulp)
    g = np.asarray(got_v, np.float64)
    limit = tol.atol + tol.rtol * np.abs(ref_v)
    if bound is not None:
        limit = limit + np.asarray(bound, np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        diff = np.abs(g - ref_v)
    same = (g == ref_v) | (np.isnan(g) & np.isnan(ref_v))
    bad = ~same & ~(diff <= limit)
    ulp = _max_ulp(got, ref_v, dtype)
    used = _limit_used(diff, limit, same) if (tol.atol or tol.rtol or bound is not None) else None
    if (tol.atol or tol.rtol or bound is not None) and bad.any():
        i = int(np.argmax(bad))
        detail = (
            f"element {i}: got {float(g[i])!r}, expected {float(ref_v[i])!r} "
            f"(|diff| {diff[i]:.3g} > "
            f"{float(np.broadcast_to(limit, diff.shape)[i]):.3g}); "
            f"{int(bad.sum())} of {bad.size} elements out of tolerance"
        )
        return Comparison(False, err, rel, detail, ulp, used)
    if tol.nmse is not None and not rel <= tol.nmse:
        return Comparison(False, err, rel, f"nmse {rel:.3g} > {tol.nmse:g}", ulp, used)
    return Comparison(True, err, rel, max_ulp=ulp, limit_used=used)


def _limit_used(diff: np.ndarray, limit: np.ndarray, same: np.ndarray) -> float:
    """Largest ``diff / limit`` over the elements that differ (inf where a limit is 0)."""
    lim = np.broadcast_to(np.asarray(limit, np.float64), diff.shape)
    differ = ~same
    if not differ.any():
        return 0.0
    d, m = diff[differ], lim[differ]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(m > 0, d / np.where(m > 0, m, 1.0), np.inf)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    return float(ratio.max())
