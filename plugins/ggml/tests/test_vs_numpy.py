"""Every primitive on the ggml backend against cpu_numpy (the numerical reference).

Each case runs the same graph on the same input bytes on both backends and compares the
results. Run with ``MLPLUG_GGML_VERIFY=1`` to also check every ggml node's layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from ggml_opcases import Case, In, make_inputs, run
from mlplug import Backend, BackendParams, DType, FlashAttentionType, new_backend
from mlplug.ops import UNARY_METHODS
from mlplug.registry import manager

F, H, I32 = DType.F32, DType.F16, DType.I32
QUANTS = (
    DType.Q8_0,
    DType.Q4_0,
    DType.Q4_1,
    DType.Q5_0,
    DType.Q5_1,
    DType.MXFP4,
    DType.Q2_K,
    DType.Q3_K,
    DType.Q4_K,
    DType.Q5_K,
    DType.Q6_K,
    DType.BF16,
)
UNARY = UNARY_METHODS
_LOOSE: dict[str, Any] = {"rtol": 2e-3, "atol": 2e-3}
_EXACT: dict[str, Any] = {}


def _unary_cases() -> Iterator[Case]:
    for name in UNARY:
        gen = "pos" if name == "sqrt" else "uniform"
        for dt, tol in ((F, _EXACT), (H, _LOOSE)):
            yield Case(
                f"{name}-{dt.name}",
                (In((16, 3), dt, gen, -3, 3),),
                lambda c, a, n=name: getattr(a, n)(c),
                **tol,  # type: ignore[misc]
            )
    # through a permuted view (the core makes rows contiguous first)
    yield Case("silu-view", (In((4, 6)),), lambda c, a: a.permute(c, 1, 0).silu(c))


def _binary_cases() -> Iterator[Case]:
    for op in ("add", "sub", "mul", "div"):
        yield Case(
            f"{op}-f32-tile",
            (In((8, 3, 2)), In((8, 1, 2), gen="pos")),
            lambda c, a, b, o=op: getattr(a, o)(c, b),
        )
        yield Case(
            f"{op}-tile-dim0",
            (In((6, 2)), In((2, 1), gen="pos")),
            lambda c, a, b, o=op: getattr(a, o)(c, b),
        )
        yield Case(
            f"{op}-f16",
            (In((8, 3), H), In((8, 3), H, "pos")),
            lambda c, a, b, o=op: getattr(a, o)(c, b),
            **_LOOSE,
        )
        yield Case(
            f"{op}-f16-f32",
            (In((8, 3), H), In((8, 1), F, "pos")),
            lambda c, a, b, o=op: getattr(a, o)(c, b),
            **_LOOSE,
        )
    yield Case(
        "add-q8_0-f32",
        (In((32, 2), DType.Q8_0), In((32, 2))),
        lambda c, a, b: a.add(c, b).cast(c, F),
        rtol=0.05,
        atol=0.05,
    )
    yield Case(
        "add-strided", (In((6, 4)), In((4, 6))), lambda c, a, b: a.add(c, b.permute(c, 1, 0))
    )


def _misc_cases() -> Iterator[Case]:
    yield Case("scale", (In((8, 3)),), lambda c, a: a.scale(c, 0.37))
    yield Case("clamp", (In((8, 3)),), lambda c, a: a.clamp(c, -0.3, 0.4))
    yield Case("clamp-f16", (In((8, 3), H),), lambda c, a: a.clamp(c, -0.3, 0.4), **_LOOSE)
    yield Case("fill-leaf", (In((8, 3)),), lambda c, a: a.fill(c, 2.5))
    yield Case("fill-node", (In((8, 3)),), lambda c, a: a.scale(c, 2).fill(c, -1.5))
    for kind in ("gelu", "quick_gelu", "silu", "relu"):
        for dt, tol in ((F, _EXACT), (H, _LOOSE)):
            yield Case(
                f"glu-{kind}-{dt.name}",
                (In((8, 3), dt, lo=-3, hi=3), In((8, 3), dt)),
                lambda c, a, b, k=kind: getattr(a, k)(c, b),
                **tol,
            )
    yield Case(
        "silu_alpha_limit",
        (In((8, 3), lo=-10, hi=10), In((8, 3), lo=-10, hi=10)),
        lambda c, a, b: a.silu_alpha_limit(c, b, 1.702, 7.0),
        rtol=1e-5,
        atol=1e-5,
    )
    yield Case("arange", (), lambda c: c.arange(0.5, 10, 1.5, F))
    yield Case("diag", (In((5, 1, 2)),), lambda c, a: a.diag(c))
    for k in range(4):
        yield Case(f"tri-{k}", (In((4, 4, 2)),), lambda c, a, k=k: a.tri(c, k))
    yield Case(
        "solve_tri",
        (In((4, 4, 2), gen="lower"), In((3, 4, 2))),
        lambda c, a, b: a.solve_tri(c, b, True, True, False),
        rtol=1e-4,
        atol=1e-5,
    )


def _reduce_cases() -> Iterator[Case]:
    yield Case("softmax", (In((16, 3, 2), lo=-5, hi=5),), lambda c, a: a.softmax(c))
    yield Case("l2_norm", (In((16, 3)),), lambda c, a: a.l2_norm(c, 1e-6))
    yield Case("rms_norm", (In((16, 3)), In((16,))), lambda c, a, w: a.rms_norm(c, w, 1e-6))
    yield Case(
        "layer_norm",
        (In((16, 3)), In((16,)), In((16,))),
        lambda c, a, w, b: a.layer_norm(c, w, b, 1e-5),
        rtol=1e-4,
        atol=1e-5,
    )
    yield Case("sum_rows", (In((16, 3, 2)),), lambda c, a: a.sum_rows(c))
    yield Case("mean", (In((16, 3, 2)),), lambda c, a: a.mean(c))
    yield Case("variance", (In((16, 3)),), lambda c, a: a.variance(c))
    yield Case("stddev", (In((16, 3)),), lambda c, a: a.stddev(c))
    yield Case("cum_sum", (In((16, 3)),), lambda c, a: a.cum_sum(c))
    yield Case("cum_sum-view", (In((3, 16)),), lambda c, a: a.permute(c, 1, 0).cum_sum(c))
    yield Case("argsort", (In((16, 3), gen="distinct"),), lambda c, a: a.argsort(c))
    yield Case("argsort-i32", (In((16, 3), I32, "perm", 0, 0),), lambda c, a: a.argsort(c))
    yield Case("top_k", (In((16, 3), gen="distinct"),), lambda c, a: a.top_k(c, 4).contiguous(c))


def _matmul_cases() -> Iterator[Case]:
    yield Case(
        "mulmat-f32-batch",
        (In((32, 4, 2, 3)), In((32, 5, 4, 3))),
        lambda c, a, b: a.mulmat(c, b),
        rtol=1e-4,
        atol=1e-4,
    )
    yield Case(
        "mulmat_full_prec",
        (In((32, 4)), In((32, 5))),
        lambda c, a, b: a.mulmat_full_prec(c, b),
        rtol=1e-4,
        atol=1e-4,
    )
    yield Case(
        "mulmat-f16",
        (In((32, 4), H), In((32, 5))),
        lambda c, a, b: a.mulmat(c, b),
        rtol=1e-3,
        atol=1e-3,
    )
    yield Case(
        "mulmat-f16-f16",
        (In((32, 4), H), In((32, 5), H)),
        lambda c, a, b: a.mulmat(c, b),
        rtol=1e-3,
        atol=1e-3,
    )
    yield Case(
        "mulmat-transposed-left",
        (In((4, 32)), In((32, 5))),
        lambda c, a, b: a.permute(c, 1, 0).mulmat(c, b),
        rtol=1e-4,
        atol=1e-4,
    )
    for q in QUANTS:
        k = 256 if q.name.endswith("_K") else 64
        yield Case(
            f"mulmat-{q.name}",
            (In((k, 4), q), In((k, 3))),
            lambda c, a, b: a.mulmat(c, b),
            rtol=0.05,
            atol=0.2,
        )
        yield Case(
            f"rows-{q.name}",
            (In((k, 5), q), In((3,), I32, "int", 0, 5)),
            lambda c, a, i: a.rows(c, i),
            rtol=1e-5,
            atol=1e-5,
        )
    yield Case(
        "mulmat_id",
        (In((32, 6, 4)), In((32, 2, 5)), In((2, 5), I32, "int", 0, 4)),
        lambda c, w, x, i: w.mulmat_id(c, x, i),
        rtol=1e-4,
        atol=1e-4,
    )
    yield Case(
        "mulmat_id-bcast",
        (In((32, 6, 4)), In((32, 1, 5)), In((2, 5), I32, "int", 0, 4)),
        lambda c, w, x, i: w.mulmat_id(c, x, i),
        rtol=1e-4,
        atol=1e-4,
    )
    for q in (DType.Q8_0, DType.Q4_K, DType.MXFP4, DType.BF16):
        k = 256 if q.name.endswith("_K") else 64
        yield Case(
            f"mulmat_id-{q.name}",
            (In((k, 6, 4), q), In((k, 2, 5)), In((2, 5), I32, "int", 0, 4)),
            lambda c, w, x, i: w.mulmat_id(c, x, i),
            rtol=0.05,
            atol=0.2,
        )
    yield Case(
        "mulmat_id-topk",
        (In((32, 6, 4)), In((32, 2, 5)), In((4, 5), gen="distinct")),
        lambda c, w, x, r: w.mulmat_id(c, x, r.top_k(c, 2)),
        rtol=1e-4,
        atol=1e-4,
    )
    yield Case(
        "add_id",
        (In((8, 2, 5)), In((8, 4)), In((2, 5), I32, "int", 0, 4)),
        lambda c, a, b, i: a.add_id(c, b, i),
    )


def _layout_cases() -> Iterator[Case]:
    yield Case("reshape", (In((2, 3, 4)),), lambda c, a: a.reshape(c, 6, 4).scale(c, 1))
    yield Case("view", (In((8, 6)),), lambda c, a: a.view(c, 8, 3, 16, 4).contiguous(c))
    yield Case("view-3d", (In((8, 6)),), lambda c, a: a.view(c, 4, 2, 8, 3, 16, 2).contiguous(c))
    yield Case("permute-120", (In((2, 3, 4)),), lambda c, a: a.permute(c, 1, 2, 0).contiguous(c))
    yield Case("permute-201", (In((2, 3, 5)),), lambda c, a: a.permute(c, 2, 0, 1).contiguous(c))
    yield Case("slice-dim0-step", (In((9, 4)),), lambda c, a: a.slice(c, 0, 1, 8, 3))
    yield Case("slice-dim1", (In((4, 9)),), lambda c, a: a.slice(c, 1, 2, 8, 2).contiguous(c))
    yield Case("chunk", (In((4, 9)),), lambda c, a: [t.contiguous(c) for t in a.chunk(c, 1, 4)])
    yield Case("duplicate-f16", (In((8, 3), H),), lambda c, a: a.duplicate(c))
    yield Case("cont-q8_0", (In((32, 3), DType.Q8_0),), lambda c, a: a.contiguous(c), raw=True)
    for src, dst in (
        (F, H),
        (H, F),
        (F, I32),
        (I32, F),
        (F, DType.BF16),
        (DType.BF16, F),
        (H, I32),
        (DType.BF16, I32),
        (H, DType.BF16),
    ):
        yield Case(
            f"cast-{src.name}-{dst.name}",
            (In((8, 3), src, "int" if src == I32 else "uniform", -50, 50),),
            lambda c, a, d=dst: a.cast(c, d),
        )
    for q in (DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K, DType.MXFP4):
        k = 256 if q.name.endswith("_K") else 64
        yield Case(
            f"cast-F32-{q.name}-F32",
            (In((k, 2)),),
            lambda c, a, d=q: a.cast(c, d).cast(c, F),
            rtol=0.2,
            atol=0.2,
            roundtrip=True,
        )
        yield Case(f"cast-{q.name}-F32", (In((k, 2), q),), lambda c, a: a.cast(c, F))
    yield Case("copy-f32-f16", (In((8, 3)), In((8, 3), H)), lambda c, a, d: a.copy(c, d), **_LOOSE)
    yield Case(
        "copy-into-view",
        (In((4, 3)), In((8, 3))),
        lambda c, a, d: [a.copy(c, d.view(c, 0, 4, 32, 3)), d],
    )
    yield Case("pad", (In((3, 2, 2)),), lambda c, a: a.pad(c, 2, 1, 1, 0))
    yield Case("pad-crop", (In((5, 3)),), lambda c, a: a.pad(c, -2, 1, 0, 0))
    for dim in range(4):
        shape = [3, 2, 2, 2]
        yield Case(
            f"concat-{dim}",
            (In(tuple(shape)), In(tuple(shape))),
            lambda c, a, b, d=dim: a.concat(c, b, d),
        )
    yield Case(
        "concat-i32",
        (In((3, 2), I32, "int", 0, 9), In((3, 1), I32, "int", 0, 9)),
        lambda c, a, b: a.concat(c, b, 1),
    )
    yield Case(
        "stack", (In((3, 2)), In((3, 2)), In((3, 2))), lambda c, a, b, d: a.stack(c, 1, b, d)
    )
    yield Case("repeat", (In((3, 2)),), lambda c, a: a.repeat(c, 1, 3))
    yield Case("repeat_4d", (In((3, 2, 1, 1)),), lambda c, a: a.repeat_4d(c, 6, 4, 2, 2))
    yield Case(
        "repeat_4d-i32", (In((3, 2), I32, "int", 0, 9),), lambda c, a: a.repeat_4d(c, 6, 2, 1, 1)
    )
    for dt in (F, H, I32):
        yield Case(
            f"rows-{dt.name}",
            (
                In((8, 10, 2), dt, "int" if dt == I32 else "uniform", 0, 9),
                In((3, 2), I32, "int", 0, 10),
            ),
            lambda c, a, i: a.rows(c, i),
        )
    yield Case(
        "rows-view-ids",
        (In((8, 10)), In((4, 3), I32, "int", 0, 10)),
        lambda c, a, i: a.rows(c, i.view(c, 4, 3)),
    )
    for dt, tol in ((F, _EXACT), (H, _LOOSE)):
        yield Case(
            f"set_rows-{dt.name}",
            (In((8, 10), dt), In((8, 3)), In((3,), I32, "perm", 0, 10)),
            lambda c, d, s, i: [d.set_rows(c, s, i), d],
            **tol,
        )
    yield Case(
        "set_rows-q8_0",
        (In((32, 10), DType.Q8_0), In((32, 3)), In((3,), I32, "perm", 0, 10)),
        lambda c, d, s, i: d.set_rows(c, s, i).cast(c, F),
        rtol=0.05,
        atol=0.05,
    )
    yield Case(
        "set_inplace",
        (In((6, 4)), In((2, 2))),
        lambda c, d, s: [d.set_inplace(c, s, 24, 48, 96, 8), d],
    )
    yield Case(
        "set_inplace-i32",
        (In((6, 4), I32, "int", 0, 9), In((2, 2), I32, "int", 0, 9)),
        lambda c, d, s: d.set_inplace(c, s, 24, 48, 96, 8),
    )


def _nn_cases() -> Iterator[Case]:
    yield Case("avg_pool_2d", (In((6, 6, 2)),), lambda c, a: a.avg_pool_2d(c, 2, 2, 0))
    yield Case("avg_pool_2d-pad", (In((5, 5, 2)),), lambda c, a: a.avg_pool_2d(c, 3, 2, 1))
    yield Case(
        "im2col",
        (In((3, 3, 2, 4)), In((8, 7, 2, 1))),
        lambda c, k, x: k.im2col(c, x, 1, 2, 1, 0, 1, 1),
    )
    yield Case(
        "conv_2d",
        (In((3, 3, 2, 4)), In((8, 7, 2, 2))),
        lambda c, k, x: k.conv_2d(c, x, 1, 1, 1, 1, 1, 1),
        rtol=1e-4,
        atol=1e-5,
    )
    yield Case(
        "conv_2d-f16",
        (In((3, 3, 2, 4), H), In((8, 7, 2, 1))),
        lambda c, k, x: k.conv_2d(c, x, 2, 1, 0, 1, 1, 2),
        rtol=2e-3,
        atol=2e-3,
    )
    yield Case(
        "conv_3d",
        (In((2, 2, 2, 6)), In((2, 2, 2, 4))),
        lambda c, w, x: w.conv_3d(c, x, 2, 1, 1, 1, 0, 0, 0, 1, 1, 1),
        rtol=1e-4,
        atol=1e-5,
    )
    yield Case("ssm_conv", (In((6, 4, 2)), In((3, 4))), lambda c, x, k: x.ssm_conv(c, k))
    yield Case(
        "ssm_scan",
        (
            In((4, 2, 3, 2)),
            In((2, 3, 5, 2)),
            In((3, 5, 2)),
            In((1, 3)),
            In((4, 1, 5, 2)),
            In((4, 1, 5, 2)),
            In((2,), I32, "perm", 0, 2),
        ),
        lambda c, s, x, dt, a, b, cc, i: s.ssm_scan(c, x, dt, a, b, cc, i),
        rtol=1e-4,
        atol=1e-5,
    )
    yield Case(
        "ssm_scan-mamba1",
        (
            In((4, 2, 3, 3)),
            In((2, 3, 5, 2)),
            In((3, 5, 2)),
            In((4, 3)),
            In((4, 3, 5, 2)),
            In((4, 3, 5, 2)),
            In((2,), I32, "perm", 0, 3),
        ),
        lambda c, s, x, dt, a, b, cc, i: s.ssm_scan(c, x, dt, a, b, cc, i),
        rtol=1e-4,
        atol=1e-5,
    )
    for mode in (0, 1):
        yield Case(
            f"interpolate-{mode}-up",
            (In((4, 3, 2)),),
            lambda c, a, m=mode: a.interpolate(c, (7, 5, 2, 1), m),
        )
        yield Case(
            f"interpolate-{mode}-down",
            (In((14, 6, 2)),),
            lambda c, a, m=mode: a.interpolate(c, (2, 4, 2, 1), m),
        )


def _rope(mode: int, dim: int, secs: tuple[int, ...] = (), **kw: float) -> Case:
    n_pos = 5 * (4 if mode in (8, 24, 40) else 1)
    head = 2 * dim if mode == 24 else 8
    ins = [In((head, 2, 5)), In((n_pos,), I32, "int", 0, 300)]
    factors = kw.pop("factors", 0)
    if factors:
        ins.append(In((dim // 2,), gen="pos", lo=0.5, hi=2))

    def build(c, x, p, f=None):  # type: ignore[no-untyped-def]
        return x.rope(
            c,
            p,
            dim,
            10000.0,
            kw.get("scale", 1.0),
            rope_type=mode,
            factors=f,
            sections=secs,
            original_context_length=int(kw.get("n_ctx", 0)),
            extrapolation_factor=kw.get("ext", 0.0),
        )

    name = f"rope-{mode}-{dim}" + ("-yarn" if kw.get("ext") else "") + ("-ff" if factors else "")
    return Case(name, tuple(ins), build, rtol=1e-4, atol=1e-4)


def _rope_cases() -> Iterator[Case]:
    for mode in (0, 2):
        yield _rope(mode, 8)
        yield _rope(mode, 4)
        yield _rope(mode, 8, factors=1)
        yield _rope(mode, 8, ext=1.0, scale=0.25, n_ctx=64)
    yield _rope(8, 8, (2, 1, 1, 0))
    yield _rope(40, 8, (2, 1, 1, 0))
    yield _rope(24, 4, (1, 1, 0, 0))
    yield Case(
        "rope-mrope-2d-positions",
        (In((8, 2, 5)), In((5, 4), I32, "int", 0, 300), In((1, 4), gen="pos", lo=0.5, hi=2)),
        lambda c, x, p, f: x.rope(
            c, p, 8, 10000.0, 1.0, rope_type=8, sections=(2, 1, 1, 0), factors=f
        ),
        rtol=1e-4,
        atol=1e-4,
    )
    yield Case(
        "rope-f16",
        (In((8, 2, 5), H), In((5,), I32, "int", 0, 300)),
        lambda c, x, p: x.rope(c, p, 8, 10000.0, 1.0),
        **_LOOSE,
    )


def _sdpa_cases() -> Iterator[Case]:
    for flash in (False, True):
        tag = "flash" if flash else "plain"
        tol: dict[str, Any] = (
            {"rtol": 1e-4, "atol": 1e-4} if flash else {"rtol": 1e-5, "atol": 1e-5}
        )
        yield Case(
            f"sdpa-{tag}",
            (In((8, 4, 3)), In((8, 2, 6)), In((8, 2, 6))),
            lambda c, q, k, v: q.scaled_dot_product_attention(
                c, k, v, None, None, None, 0.35, False
            ),
            flash=flash,
            **tol,
        )
        yield Case(
            f"sdpa-{tag}-mask-sinks",
            (In((8, 4, 3)), In((8, 2, 6)), In((8, 2, 6)), In((6, 3), gen="mask"), In((4,))),
            lambda c, q, k, v, m, s: q.scaled_dot_product_attention(
                c, k, v, m, s, None, 0.35, False
            ),
            flash=flash,
            **tol,
        )
        yield Case(
            f"sdpa-{tag}-f16kv",
            (In((8, 4, 3)), In((8, 2, 6), H), In((8, 2, 6), H), In((6, 4), gen="mask")),
            lambda c, q, k, v, m: q.scaled_dot_product_attention(
                c, k, v, m, None, None, 0.35, False
            ),
            flash=flash,
            rtol=3e-3,
            atol=3e-3,
        )
        yield Case(
            f"sdpa-{tag}-vmla",
            (In((8, 4, 3)), In((8, 1, 6)), In((8, 1, 6)), In((8, 5, 2))),
            lambda c, q, k, v, w: q.scaled_dot_product_attention(
                c, k, v, None, None, w, 0.35, False
            ),
            flash=flash,
            **tol,
        )
        yield Case(
            f"sdpa-{tag}-batch",
            (In((8, 4, 3, 2)), In((8, 2, 6, 2)), In((8, 2, 6, 2)), In((6, 3, 1, 2), gen="mask")),
            lambda c, q, k, v, m: q.scaled_dot_product_attention(
                c, k, v, m, None, None, 0.35, False
            ),
            flash=flash,
            **tol,
        )


CASES: list[Case] = [
    *_unary_cases(),
    *_binary_cases(),
    *_misc_cases(),
    *_reduce_cases(),
    *_matmul_cases(),
    *_layout_cases(),
    *_nn_cases(),
    *_rope_cases(),
    *_sdpa_cases(),
]


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    """cpu_numpy and ggml (flash attention off and on), created once."""
    names = {e.name for e in manager().backends()}
    if "cpu_numpy" not in names:
        pytest.skip("cpu_numpy is not installed")
    p = BackendParams(num_threads=2)
    pf = BackendParams(num_threads=2, flash_attention=FlashAttentionType.ENABLED)
    bes = {
        "ref": new_backend(None, p, backend="cpu_numpy"),
        "ggml": new_backend(None, p, backend="ggml"),
        "ggml-flash": new_backend(None, pf, backend="ggml"),
    }
    yield bes
    for be in bes.values():
        be.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_cpu_numpy(case: Case, backends: dict[str, Backend]) -> None:
    """The ggml result equals cpu_numpy's within the case's tolerance."""
    data = make_inputs(case)
    if case.roundtrip:
        spec = case.inputs[0]
        ref = [np.frombuffer(data[0], "<f4").reshape(tuple(reversed(spec.ne)))]
    else:
        ref = run(backends["ref"], case, data)
    got = run(backends["ggml-flash" if case.flash else "ggml"], case, data)
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape
        if g.dtype.kind in "iuV" or case.raw:
            np.testing.assert_array_equal(g, r)
        else:
            np.testing.assert_allclose(g, r, rtol=case.rtol, atol=case.atol, equal_nan=True)
