"""Run the op cases with non-contiguous inputs on ggml and cpu_numpy, each case isolated.

ggml aborts the process on a layout its kernel does not accept, so this runner executes the
cases in a child process and restarts after the case that killed it, reporting it as a crash.
Each input of a case is, in turn, given as a permuted view (``perm``), a view with a gap after
every row (``gap``) or a view taking every other dim-2 slice (``dim2``); the values are the
same, so both backends must agree.

``python ggml_layouts.py`` runs everything and prints ``ok``/``diff``/``crash`` per variant.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
from mlplug import DType, Tensor
from mlplug.dtypes import TRAITS

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from ggml_opcases import Case, make_inputs  # noqa: E402

KINDS = ("perm", "gap", "dim2")


def _variant(ctx: Any, dtype: DType, raw: bytes, ne: tuple[int, ...], kind: str) -> Tensor:
    ne4 = (*ne, 1, 1, 1, 1)[:4]
    es = TRAITS[dtype].type_size
    np_dt = TRAITS[dtype].numpy if dtype != DType.F16 else np.dtype("<f2")
    arr = np.frombuffer(raw, np_dt).reshape(ne4[::-1])
    n0, n1, n2, n3 = ne4
    if kind == "perm":
        t = np.ascontiguousarray(arr.swapaxes(2, 3))
        leaf = ctx.from_bytes(dtype, t.tobytes(), n1, n0, n2, n3)
        return leaf.permute(ctx, 1, 0, 2, 3)  # type: ignore[no-any-return]
    if kind == "gap":
        padded = np.zeros((n3, n2, n1, n0 + 2), np_dt)
        padded[..., :n0] = arr
        leaf = ctx.from_bytes(dtype, padded.tobytes(), n0 + 2, n1, n2, n3)
        nb1 = (n0 + 2) * es
        return leaf.view(ctx, 0, n0, nb1, n1, nb1 * n1, n2, nb1 * n1 * n2, n3)  # type: ignore[no-any-return]
    doubled = np.zeros((n3, 2 * n2, n1, n0), np_dt)
    doubled[:, ::2] = arr
    leaf = ctx.from_bytes(dtype, doubled.tobytes(), n0, n1, 2 * n2, n3)
    nb1 = n0 * es
    return leaf.view(ctx, 0, n0, nb1, n1, 2 * nb1 * n1, n2, 2 * nb1 * n1 * n2, n3)  # type: ignore[no-any-return]


def variants(cases: list[Case]) -> Iterator[tuple[Case, int, str]]:
    """Every (case, input index, layout kind) worth running."""
    for case in cases:
        for i, spec in enumerate(case.inputs):
            if spec.dtype.is_quantized or spec.dtype == DType.BF16:
                continue
            ne = (*spec.ne, 1, 1, 1)[:4]
            for kind in KINDS:
                if kind in ("perm", "gap") and ne[1] == 1:
                    continue
                yield case, i, kind


def run_variant(be: Any, case: Case, i: int, kind: str, data: list[bytes]) -> list[np.ndarray]:
    """Compute ``case`` with input ``i`` laid out as ``kind``."""
    with be.new_context() as ctx:
        ts = []
        for j, (spec, raw) in enumerate(zip(case.inputs, data, strict=True)):
            if j == i:
                ts.append(_variant(ctx, spec.dtype, raw, spec.ne, kind))
            else:
                ts.append(ctx.from_bytes(spec.dtype, raw, *spec.ne))
        out = case.build(ctx, *ts)
        outs = [out] if isinstance(out, Tensor) else list(out)
        ctx.compute(*outs)
        res = []
        for o in outs:
            if o.dtype.is_quantized or o.dtype == DType.BF16:
                res.append(np.frombuffer(o.bytes() or b"", np.uint8).copy())
            else:
                res.append(np.asarray(o.to_numpy()))
        return res


def _child(start: int) -> int:
    from mlplug import BackendParams, FlashAttentionType, new_backend
    from test_vs_numpy import CASES

    p = BackendParams(num_threads=2)
    ref = new_backend(None, p, backend="cpu_numpy")
    ggml = new_backend(None, p, backend="ggml")
    flash = new_backend(
        None,
        BackendParams(num_threads=2, flash_attention=FlashAttentionType.ENABLED),
        backend="ggml",
    )
    items = list(variants(CASES))
    for n in range(start, len(items)):
        case, i, kind = items[n]
        label = f"{case.id}[{i}:{kind}]"
        print(f"start {n} {label}", flush=True)
        data = make_inputs(case)
        try:
            want = run_variant(ref, case, i, kind, data)
            got = run_variant(flash if case.flash else ggml, case, i, kind, data)
            for g, r in zip(got, want, strict=True):
                if g.dtype.kind in "iuV" or case.raw:
                    np.testing.assert_array_equal(g, r)
                else:
                    np.testing.assert_allclose(g, r, rtol=case.rtol, atol=case.atol, equal_nan=True)
            print(f"ok {n} {label}", flush=True)
        except Exception as exc:  # report and go on
            first = str(exc).strip().splitlines()
            print(
                f"diff {n} {label}: {type(exc).__name__}: {first[0] if first else ''}", flush=True
            )
    print("done", flush=True)
    return 0


def main() -> int:
    """Run every variant, restarting the child after a crash; print a summary."""
    start, crashes = 0, []
    while True:
        # no gdb backtrace on abort: its fork can hang a multi-threaded child
        env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(start)],
            env=env,
            capture_output=True,
            text=True,
            cwd=HERE,
            check=False,
        )
        lines = proc.stdout.splitlines()
        for line in lines:
            if line.startswith("diff"):
                print(line)
        if lines and lines[-1] == "done":
            break
        last = [ln for ln in lines if ln.startswith("start")][-1].split()
        msg = [ln for ln in proc.stderr.splitlines() if "GGML" in ln or "error" in ln][:1]
        crashes.append(f"crash {last[1]} {last[2]}: {msg[0] if msg else proc.returncode}")
        print(crashes[-1])
        start = int(last[1]) + 1
    print(f"{len(crashes)} crashes")
    return 1 if crashes else 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        raise SystemExit(_child(int(sys.argv[2])))
    raise SystemExit(main())
