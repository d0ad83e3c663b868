"""The torch backend against the same computation written directly in torch, in one run.

Measures (median of ``--repeat`` runs, after a warm-up):

* ``matmul``: an F32 ``[K, M]`` weight times ``[K, N]`` activations (default 2048^3);
* ``attention``: scaled dot-product attention, ``H`` heads of ``d`` over ``L`` tokens with an
  additive causal mask (default 32 x 1024 x 128), in ggml's ``[d, H, L]`` layout;
* ``per-node``: the cost of one small op in mlplug, building and computing a chain of
  ``--nodes`` adds on a ``[64]`` tensor, against the same chain in plain torch.

Plain torch reads and writes the same memory layouts as mlplug (``(L, H, d)`` tensors, a
contiguous result), so both sides do the same work. Timings include the graph build for
mlplug; the plain side is the eager torch a user would write.

Run ``python benchmarks/torch_vs_plain.py [--device cuda] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import mlplug as ml


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _compare(
    mine: Callable[[], object], plain: Callable[[], object], repeat: int, device: torch.device
) -> tuple[float, float]:
    """Return the median seconds of ``mine`` and ``plain``, run alternately after a warm-up."""
    times: tuple[list[float], list[float]] = ([], [])
    for fn in (mine, plain):
        fn()
    _sync(device)
    for _ in range(repeat):
        for fn, out in ((mine, times[0]), (plain, times[1])):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def bench_matmul(be: ml.Backend, n: int, repeat: int) -> dict[str, Any]:
    """``n x n`` weight times ``n x n`` activations, F32."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, n), dtype=np.float32)
    x = rng.standard_normal((n, n), dtype=np.float32)
    dev = be.device  # type: ignore[attr-defined]
    ctx = be.new_context()
    wt, xt = ctx.input().from_floats(w), ctx.input().from_floats(x)

    def mine() -> None:
        with be.new_context() as c:
            y = wt.mulmat(c, xt)
            c.compute(y)

    tw, tx = torch.from_numpy(w).to(dev), torch.from_numpy(x).to(dev)

    def plain() -> None:
        torch.matmul(tx, tw.t())

    t_mine, t_plain = _compare(mine, plain, repeat, dev)
    ctx.close()
    flops = 2.0 * n**3
    return {
        "name": f"matmul f32 {n}^3",
        "mlplug_s": t_mine,
        "plain_s": t_plain,
        "ratio": t_plain / t_mine,
        "mlplug_gflops": flops / t_mine / 1e9,
    }


def bench_attention(be: ml.Backend, h: int, length: int, d: int, repeat: int) -> dict[str, Any]:
    """Causal attention in ggml's ``[d, H, L]`` layout (torch ``(L, H, d)``), F32."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((length, h, d), dtype=np.float32) for _ in range(3))
    mask = np.triu(np.full((length, length), -np.inf, np.float32), 1)
    dev = be.device  # type: ignore[attr-defined]
    scale = 1.0 / d**0.5
    ctx = be.new_context()
    qt, kt, vt = (ctx.input().from_floats(a) for a in (q, k, v))
    mt = ctx.input().from_floats(mask)

    def mine() -> None:
        with be.new_context() as c:
            y = qt.scaled_dot_product_attention(c, kt, vt, mt, None, None, scale, False)
            c.compute(y)

    tq, tk, tv = (torch.from_numpy(a).to(dev) for a in (q, k, v))
    tm = torch.from_numpy(mask).to(dev)

    def plain() -> None:
        q4, k4, v4 = (x.unsqueeze(0).transpose(1, 2) for x in (tq, tk, tv))  # (1, H, L, d)
        o = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=tm, scale=scale)
        o.transpose(1, 2).contiguous()

    t_mine, t_plain = _compare(mine, plain, repeat, dev)
    ctx.close()
    flops = 4.0 * h * length * length * d
    return {
        "name": f"attention f32 H={h} L={length} d={d} causal",
        "mlplug_s": t_mine,
        "plain_s": t_plain,
        "ratio": t_plain / t_mine,
        "mlplug_gflops": flops / t_mine / 1e9,
    }


def bench_per_node(be: ml.Backend, nodes: int, repeat: int) -> dict[str, Any]:
    """Build + compute ``nodes`` chained small adds; report microseconds per node."""
    dev = be.device  # type: ignore[attr-defined]
    ctx = be.new_context()
    a = ctx.input().from_floats(np.ones(64, np.float32))
    b = ctx.input().from_floats(np.ones(64, np.float32))

    def mine() -> None:
        with be.new_context() as c:
            y = a
            for _ in range(nodes):
                y = y.add(c, b)
            c.compute(y)

    ta, tb = torch.ones(64, device=dev), torch.ones(64, device=dev)

    def plain() -> None:
        y = ta
        for _ in range(nodes):
            y = torch.add(y, tb)

    t_mine, t_plain = _compare(mine, plain, repeat, dev)
    ctx.close()
    return {
        "name": f"per-node overhead ({nodes} small adds)",
        "mlplug_s": t_mine,
        "plain_s": t_plain,
        "ratio": t_plain / t_mine,
        "mlplug_us_per_node": t_mine / nodes * 1e6,
        "plain_us_per_node": t_plain / nodes * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print a table (or JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--device", default=None, help="torch device (default: the backend's)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    p.add_argument("--size", type=int, default=2048, help="matmul M = N = K")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)

    from mlplug_torch import TorchBackend

    params = ml.BackendParams(num_threads=args.threads)
    with TorchBackend(None, params, device=args.device) as be:
        results = [
            bench_matmul(be, args.size, args.repeat),
            bench_attention(be, args.heads, args.tokens, args.head_dim, args.repeat),
            bench_per_node(be, args.nodes, args.repeat),
        ]
        info = {
            "device": str(be.device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "results": results,
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"torch {info['torch']} on {info['device']} ({info['threads']} threads), "
        f"median of {args.repeat}"
    )
    print(f"{'benchmark':<46} {'mlplug':>11} {'plain torch':>12} {'plain/mlplug':>13}")
    for r in results:
        print(
            f"{r['name']:<46} {r['mlplug_s'] * 1e3:>9.2f}ms {r['plain_s'] * 1e3:>10.2f}ms "
            f"{r['ratio']:>12.3f}x"
        )
    node = results[2]
    print(
        f"per-node: mlplug {node['mlplug_us_per_node']:.1f} us/node (build + compute), "
        f"plain torch {node['plain_us_per_node']:.1f} us/op"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
