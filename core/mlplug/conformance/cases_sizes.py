"""Cases at real sizes (the ``full`` tier) and the batch-broadcast cases of the default tier.

Kernels block, tile, vectorise and thread at sizes the default tier never reaches: these cases
meet them. Matrix products with K up to 4096 and N >= 9 (a second column tile), quantised rows
of 3, 5 and 7 blocks (odd block counts) and of 16 super-blocks, softmax and norm rows of 1025
and 4096 elements, attention over 37 to 64 keys with head dims 64 and 128 (with flash
attention on and off), and vector tails (lengths 1, 7, 33 and 1025: one element, less than one
SIMD register, one past a multiple of 32). They carry ``tier="full"``: ``mlplug conformance
--tier full`` runs them.

The batch-broadcast cases (dims 2 and 3 at once, each with a ratio of 2 and more than one
plane on the small side) are cheap and stay in the default tier: the binary ops tile their
second operand (plane ``i % n``) while mulmat repeats its first (plane ``i // r``), and a
kernel that swaps the two rules fails them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..context import Context
from ..dtypes import DType
from ..params import FlashAttentionType
from ..tensor import Tensor
from . import reference as R
from ._common import (
    BF16,
    F16,
    F32,
    K_QUANTS,
    MULMAT_FULL_PREC,
    Q4_0,
    Q8_0,
    QUANTS,
    TRANSCENDENTAL,
    dequant_tol,
    exact,
    lbl,
    mulmat_tol,
    rows_tol,
    scaled_bound,
    sx,
)
from .case import Arg, Case, Inputs, Tolerance
from .cases_linalg import _mulmat_bound, _mulmat_id_bound, _mulmat_id_ref, _mulmat_ref

__all__ = ["FLASH", "cases"]

FULL = "full"
#: Backend parameters that turn flash attention on (a backend without it ignores them).
FLASH: tuple[tuple[str, object], ...] = (("flash_attention", FlashAttentionType.ENABLED),)
#: Vector lengths that leave a tail after every common SIMD width and block of work.
TAILS = (1, 7, 33, 1025)


def _mulmat(tag: str, a: Arg, b: Arg, *, tier: str = FULL) -> Case:
    def build(ctx: Context, x: Inputs) -> Tensor:
        return x[0].mulmat(ctx, x[1])

    return Case(
        f"mulmat-{tag}",
        "mulmat",
        (a, b),
        build,
        _mulmat_ref(a.dtype, b.dtype),
        mulmat_tol(a.dtype, a.ne[0]),
        dtype=lbl(a.dtype),
        out_dtype=F32,
        bound=_mulmat_bound("mulmat", a.dtype, b.dtype),
        tier=tier,
    )


def _mulmat_cases() -> list[Case]:
    out = [
        _mulmat(f"f32-full-{sx(k)}", Arg(k), Arg((k[0], 9)))
        for k in ((4096, 16), (1025, 33), (33, 7))
    ]
    out += [
        _mulmat("f32-full-batch-512x8x17x3", Arg((512, 8, 3)), Arg((512, 17, 3))),
        _mulmat("f16-full-4096x16x9", Arg((4096, 16), F16), Arg((4096, 9))),
        _mulmat("f16-full-1025x9x11", Arg((1025, 9), F16), Arg((1025, 11))),
        _mulmat("f16xf16-full-2048x8x9", Arg((2048, 8), F16), Arg((2048, 9), F16)),
        _mulmat("q8_0-full-4096x8x9", Arg((4096, 8), Q8_0), Arg((4096, 9))),
        _mulmat("q4_0-full-4096x8x9", Arg((4096, 8), Q4_0), Arg((4096, 9))),
        _mulmat("f32-full-2048x32x33", Arg((2048, 32)), Arg((2048, 33))),
        _mulmat("f16-full-2048x32x33", Arg((2048, 32), F16), Arg((2048, 33))),
    ]
    for q in (*QUANTS, *K_QUANTS):  # 128 blocks, 16 super-blocks per row
        if q not in (Q8_0, Q4_0):
            out.append(_mulmat(f"{lbl(q)}-full-4096x4x9", Arg((4096, 4), q), Arg((4096, 9))))
    out += [
        Case(
            "mulmat_full_prec-f16-full-4096x8x9",
            "mulmat_full_prec",
            (Arg((4096, 8), F16), Arg((4096, 9))),
            lambda ctx, x: x[0].mulmat_full_prec(ctx, x[1]),
            _mulmat_ref(F16, F32),
            MULMAT_FULL_PREC,
            dtype="f16",
            bound=_mulmat_bound("mulmat_full_prec", F16, F32),
            out_dtype=F32,
            tier=FULL,
        )
    ]
    for q, k in ((F32, 1024), (Q4_0, 2048), (DType.Q4_K, 1280), (DType.MXFP4, 160)):
        # experts [k, 16, 8]; 9 tokens, 3 experts each
        out.append(
            Case(
                f"mulmat_id-{lbl(q)}-full-{k}x16x8-u3b1t9",
                "mulmat_id",
                (Arg((k, 16, 8), q), Arg((k, 1, 9)), Arg((3, 9), DType.I32, gen="perm", hi=8)),
                lambda ctx, x: x[0].mulmat_id(ctx, x[1], x[2]),
                _mulmat_id_ref(q),
                mulmat_tol(q, k),
                dtype=lbl(q),
                bound=_mulmat_id_bound(q),
                out_dtype=F32,
                tier=FULL,
            )
        )
    for q in QUANTS:  # rows of 3, 5 and 7 blocks (odd counts)
        for blocks in (3, 5, 7):
            k = 32 * blocks
            out.append(_mulmat(f"{lbl(q)}-full-{k}x5x9", Arg((k, 5), q), Arg((k, 9))))
    for q in K_QUANTS:  # 3 and 5 super-blocks
        for blocks in (3, 5):
            k = 256 * blocks
            out.append(_mulmat(f"{lbl(q)}-full-{k}x4x10", Arg((k, 4), q), Arg((k, 10))))
    # One column: a decode step, where backends take their matrix-vector paths (torch splits
    # an f32 weight of 1 MiB or more between threads; numpy sums Q8_0 per block). 700 rows
    # span several tiles; 701 rows split unevenly between threads.
    out += [
        _mulmat(f"f32-full-column-1024x{m}x1", Arg((1024, m)), Arg((1024, 1))) for m in (700, 701)
    ]
    for q in (F16, BF16, *QUANTS, *K_QUANTS):
        out.append(_mulmat(f"{lbl(q)}-full-column-1024x700x1", Arg((1024, 700), q), Arg((1024, 1))))
    out.append(_mulmat("q8_0-column-160x7x1", Arg((160, 7), Q8_0), Arg((160, 1)), tier="default"))
    return out


def _broadcast_cases() -> list[Case]:
    """Dims 2 and 3 broadcast at once (default tier): tile for binary ops, repeat for mulmat."""
    out = [
        _mulmat(
            f"{lbl(dt)}-bcast23-32x3x2x3",
            Arg((32, 3, 2, 3), dt),
            Arg((32, 4, 4, 6)),
            tier="default",
        )
        for dt in (F32, F16, Q8_0)
    ]
    for op in ("add", "sub", "mul", "div"):
        lo = 0.5 if op == "div" else -1.0
        gen = "magnitude" if op == "div" else "uniform"
        for dt in (F32, F16):
            out.append(
                Case(
                    f"{op}-{lbl(dt)}-bcast23-8x3x4x6",
                    op,
                    (Arg((8, 3, 4, 6), dt), Arg((8, 3, 2, 3), dt, gen=gen, lo=lo, hi=1.0)),
                    lambda ctx, x, op=op: getattr(x[0], op)(ctx, x[1]),
                    lambda a, b, op=op: R.binary(op, a, b),
                    exact(dt) if dt == F32 else Tolerance(ulp=1),
                    dtype=lbl(dt),
                    out_dtype=dt,
                )
            )
    return out


def _tail_cases() -> list[Case]:
    out: list[Case] = []
    for n in TAILS:
        for dt in (F32, F16):
            for op in ("add", "mul"):
                out.append(
                    Case(
                        f"{op}-{lbl(dt)}-full-tail-{n}",
                        op,
                        (Arg((n,), dt), Arg((n,), dt)),
                        lambda ctx, x, op=op: getattr(x[0], op)(ctx, x[1]),
                        lambda a, b, op=op: R.binary(op, a, b),
                        exact(dt),
                        dtype=lbl(dt),
                        out_dtype=dt,
                        tier=FULL,
                    )
                )
            for op in ("exp", "silu", "gelu_erf", "tanh", "sigmoid"):
                out.append(
                    Case(
                        f"{op}-{lbl(dt)}-full-tail-{n}",
                        op,
                        (Arg((n, 3), dt, lo=-4, hi=4),),
                        lambda ctx, x, op=op: getattr(x[0], op)(ctx),
                        R.ACTIVATIONS[op],
                        TRANSCENDENTAL[dt],
                        dtype=lbl(dt),
                        out_dtype=dt,
                        tier=FULL,
                    )
                )
        out.append(
            Case(
                f"scale-f32-full-tail-{n}",
                "scale",
                (Arg((n, 2)),),
                lambda ctx, x: x[0].scale(ctx, 0.37),
                lambda a: a * float(np.float32(0.37)),
                Tolerance(atol=0, rtol=1e-7),
                out_dtype=F32,
                tier=FULL,
            )
        )
        out.append(
            Case(
                f"mulmat-f32-full-tail-{n}",
                "mulmat",
                (Arg((n, 3)), Arg((n, 2))),
                lambda ctx, x: x[0].mulmat(ctx, x[1]),
                R.mulmat,
                mulmat_tol(F32, n),
                out_dtype=F32,
                tier=FULL,
            )
        )
    return out


def _abs_row_sum(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    def bound(a: np.ndarray) -> np.ndarray:
        return np.asarray(factor * np.abs(a).sum(-1, keepdims=True))

    return bound


def _row_cases() -> list[Case]:
    out: list[Case] = []
    for ne in ((1025, 3), (4096, 2), (1031, 2, 2)):
        tag = sx(ne)
        out += [
            Case(
                f"softmax-f32-full-{tag}",
                "softmax",
                (Arg(ne, lo=-8, hi=8),),
                lambda ctx, x: x[0].softmax(ctx),
                R.softmax,
                rows_tol(),
                out_dtype=F32,
                tier=FULL,
            ),
            Case(
                f"rms_norm-f32-full-{tag}",
                "rms_norm",
                (Arg(ne),),
                lambda ctx, x: x[0].rms_norm(ctx, None, 1e-6),
                lambda a: R.rms_norm(a, 1e-6),
                rows_tol(),
                out_dtype=F32,
                tier=FULL,
            ),
            Case(
                f"l2_norm-f32-full-{tag}",
                "l2_norm",
                (Arg(ne),),
                lambda ctx, x: x[0].l2_norm(ctx, 1e-12),
                lambda a: R.l2_norm(a, 1e-12),
                rows_tol(),
                out_dtype=F32,
                tier=FULL,
            ),
            Case(
                f"layer_norm-f32-full-{tag}",
                "layer_norm",
                (Arg(ne), Arg((ne[0],)), Arg((ne[0],))),
                lambda ctx, x: x[0].layer_norm(ctx, x[1], x[2], 1e-5),
                lambda a, w, b: R.layer_norm(a, 1e-5, w, b),
                rows_tol(4.0),
                out_dtype=F32,
                tier=FULL,
            ),
            Case(
                f"sum_rows-f32-full-{tag}",
                "sum_rows",
                (Arg(ne),),
                lambda ctx, x: x[0].sum_rows(ctx),
                R.sum_rows,
                Tolerance(nmse=1e-10, rtol=1e-5),
                out_dtype=F32,
                bound=_abs_row_sum(1e-6),
                tier=FULL,
            ),
            Case(
                f"cum_sum-f32-full-{tag}",
                "cum_sum",
                (Arg(ne),),
                lambda ctx, x: x[0].cum_sum(ctx),
                R.cumsum,
                Tolerance(nmse=1e-10, rtol=1e-5),
                out_dtype=F32,
                bound=lambda a: 1e-6 * np.abs(a).sum(-1, keepdims=True),
                tier=FULL,
            ),
        ]
    out += [
        Case(
            f"argsort-f32-full-{n}x2",
            "argsort",
            (Arg((n, 2), gen="distinct"),),
            lambda ctx, x: x[0].argsort(ctx),
            lambda a: np.argsort(a, axis=-1, kind="stable"),
            exact(DType.I32),
            dtype="f32",
            out_dtype=DType.I32,
            tier=FULL,
        )
        for n in (1025, 4096)
    ]
    return out


def sdpa_case(
    tag: str,
    dk: int,
    h: int,
    hkv: int,
    lq: int,
    lk: int,
    *,
    kv: DType = F32,
    mask: bool = True,
    flash: bool = False,
    tier: str = FULL,
    mask_gen: str = "mask",
) -> Case:
    """An attention case ``[dk, h, lq]`` over ``lk`` keys of ``hkv`` heads (value dim = dk)."""
    op = "scaled_dot_product_attention"
    scale = 1 / math.sqrt(dk)
    args = [
        Arg((dk, h, lq), lo=-2, hi=2),
        Arg((dk, hkv, lk), kv, lo=-2, hi=2),
        Arg((dk, hkv, lk), kv),
    ]
    if mask:
        args.append(Arg((lk, lq), gen=mask_gen))

    def build(ctx: Context, x: Inputs) -> Tensor:
        m = x[3] if mask else None
        return x[0].scaled_dot_product_attention(ctx, x[1], x[2], m, None, None, scale, False)

    def ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, *rest: np.ndarray) -> np.ndarray:
        return R.sdpa(q, k, v, scale, mask=rest[0] if mask else None)

    f16 = kv == F16
    tol = Tolerance(atol=1e-6, rtol=1e-5)
    bound = None
    if f16:  # ggml's CPU flash path also accumulates the weighted values in f16
        tol, bound = Tolerance(rtol=3e-3), scaled_bound(4e-3 if flash else 1e-3, 2)
    return Case(
        f"{op}-{'f16kv' if f16 else 'f32'}-{tag}{'-flash' if flash else ''}",
        op,
        tuple(args),
        build,
        ref,
        tol,
        dtype="f16" if f16 else "f32",
        out_dtype=F32,
        bound=bound,
        tier=tier,
        backend_params=FLASH if flash else (),
    )


def _sdpa_cases() -> list[Case]:
    out: list[Case] = []
    shapes = (
        ("full-d64-h4x2-q7-k37", 64, 4, 2, 7, 37),
        ("full-d128-h4x1-q1-k64", 128, 4, 1, 1, 64),
        ("full-d80-h2x2-q5-k41", 80, 2, 2, 5, 41),
        ("full-d128-h8x2-q16-k256", 128, 8, 2, 16, 256),
    )
    for flash in (False, True):
        for tag, dk, h, hkv, lq, lk in shapes:
            out.append(sdpa_case(tag, dk, h, hkv, lq, lk, flash=flash))
            out.append(sdpa_case(tag, dk, h, hkv, lq, lk, kv=F16, flash=flash))
        out.append(sdpa_case("full-d64-nomask-q3-k40", 64, 2, 1, 3, 40, mask=False, flash=flash))
        for kv in (F32, F16):  # a causal prompt over a padded cache: backends may cut it in blocks
            out.append(
                sdpa_case(
                    "causal-d64-h4x2-q300-k320",
                    64,
                    4,
                    2,
                    300,
                    320,
                    kv=kv,
                    flash=flash,
                    mask_gen="causal",
                )
            )
    return out


def _rows_cases() -> list[Case]:
    """Quantised tables with rows of 5 blocks and 3 super-blocks (``rows`` dequantises)."""
    out = []
    for q, k in ((Q8_0, 160), (Q4_0, 224), (DType.Q4_K, 768), (DType.Q6_K, 1280)):
        out.append(
            Case(
                f"rows-{lbl(q)}-full-{k}x6",
                "rows",
                (Arg((k, 6), q), Arg((4,), DType.I32, gen="int", lo=0, hi=6)),
                lambda ctx, x: x[0].rows(ctx, x[1]),
                R.rows,
                dequant_tol(q),
                dtype=lbl(q),
                out_dtype=F32,
                tier=FULL,
            )
        )
    return out


def cases() -> list[Case]:
    """Return the real-size cases (tier ``full``) and the batch-broadcast cases (default)."""
    return [
        *_broadcast_cases(),
        *_mulmat_cases(),
        *_tail_cases(),
        *_row_cases(),
        *_sdpa_cases(),
        *_rows_cases(),
    ]
