"""The ggml backend itself: registration, devices, graph caching, storage and index safety."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlplug_ggml")

from mlplug import (
    BackendParams,
    DType,
    FlashAttentionType,
    GraphError,
    NotSupportedError,
    OutOfRangeError,
    new_backend,
)
from mlplug.registry import manager

from mlplug_ggml import _lib
from mlplug_ggml.backend import GGMLBackend
from mlplug_ggml.context import MAX_CACHED_GRAPHS, GGMLContext

ROOT = Path(__file__).resolve().parents[3]
F32 = DType.F32


@pytest.fixture(scope="module")
def be() -> Iterator[GGMLBackend]:
    """A ggml backend with two threads."""
    with new_backend(None, BackendParams(num_threads=2), backend="ggml") as b:
        assert isinstance(b, GGMLBackend)
        yield b


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop(_lib.ENV_LIB, None)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- registration and devices -----------------------------------------------------------------
def test_registered_with_priority_100() -> None:
    """The plugin registers ``ggml`` at priority 100 with a device enumerator."""
    entry = manager().get("ggml")
    assert entry.priority == 100
    assert entry.devices is not None
    devs = entry.devices()
    cpu = [d for d in devs if d.library == "cpu"]
    assert cpu and cpu[0].name == "CPU" and cpu[0].total_memory > 0


def test_backend_devices_and_threads(be: GGMLBackend) -> None:
    """The backend lists the build's devices; CPU threads follow ``num_threads``."""
    assert be.name == "ggml"
    assert any(d.library == "cpu" for d in be.devices())
    if be.is_cpu:
        assert be.threads == 2
        assert be.hook_gpu_devices() == []
    with new_backend(None, BackendParams(), backend="ggml") as b0:
        assert b0.threads in (0, os.cpu_count())  # type: ignore[attr-defined]


def test_cache_config_follows_flash_attention(be: GGMLBackend) -> None:
    """Flash attention: F16 mask and V as is; otherwise V permuted, mask dtype unset."""
    cfg = be.cache_config()
    assert (cfg.cache_padding, cfg.permuted_v, cfg.mask_dtype) == (256, True, DType.OTHER)
    params = BackendParams(flash_attention=FlashAttentionType.ENABLED)
    with new_backend(None, params, backend="ggml") as fb:
        cfg = fb.cache_config()
        assert (cfg.cache_padding, cfg.permuted_v, cfg.mask_dtype) == (256, False, DType.F16)


def test_missing_library_is_reported_not_fatal() -> None:
    """With ``MLPLUG_GGML_LIB`` pointing nowhere the ggml factory raises BackendLoadError,
    its device enumeration fails cleanly, and cpu_numpy still works."""
    proc = _run_python(
        """
        import numpy as np
        import mlplug as ml
        from mlplug.errors import BackendLoadError
        from mlplug.registry import manager
        m = manager()
        rec = {p.name: p for p in m.plugins()}["ggml"]
        try:
            ml.new_backend(None, backend="ggml")
        except BackendLoadError as exc:
            print("factory:", type(exc).__name__)
        try:
            m.devices("ggml")
        except BackendLoadError:
            print("devices: BackendLoadError")
        names = [e.name for e in m.backends()]
        if "cpu_numpy" in names:
            with ml.new_backend(None, backend="cpu_numpy") as be, be.new_context() as ctx:
                t = ctx.from_floats([1.0, 2.0]).scale(ctx, 2.0)
                ctx.compute(t)
                print("cpu_numpy:", t.floats().tolist())
        try:
            be = ml.new_backend(None)
            print("default:", be.name, rec.status)
        except BackendLoadError:  # ggml was the only backend
            print("default: none", rec.status)
        """,
        MLPLUG_GGML_LIB="/nonexistent",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "factory: BackendLoadError" in out
    assert "devices: BackendLoadError" in out
    assert "default: ggml" not in out
    if "cpu_numpy:" in out:
        assert "cpu_numpy: [2.0, 4.0]" in out


# -- graphs and the cache ---------------------------------------------------------------------
def test_repeat_compute_hits_the_cache(be: GGMLBackend) -> None:
    """Computing the same graph again reuses its ggml graph; new leaf data is picked up."""
    with be.new_context() as ctx:
        assert isinstance(ctx, GGMLContext)
        a = ctx.from_floats(np.arange(8, dtype=np.float32))
        b = ctx.from_floats(np.ones(8, dtype=np.float32))
        y = a.add(ctx, b).scale(ctx, 2.0)
        ctx.compute(y)
        entry = ctx._memo[4]  # type: ignore[index]
        assert y.floats().tolist() == [2.0 * (i + 1) for i in range(8)]  # type: ignore[union-attr]
        a.from_floats(np.full(8, 3.0, np.float32))
        ctx.compute(y)
        assert ctx._memo[4] is entry  # type: ignore[index]
        assert len(ctx._gg.entries) == 1
        assert y.floats().tolist() == [8.0] * 8  # type: ignore[union-attr]


def test_structural_key_matches_across_graph_lists(be: GGMLBackend) -> None:
    """A view context building the same structure on the same leaves hits the cached graph."""
    with be.new_context() as ctx:
        a = ctx.from_floats(np.arange(4, dtype=np.float32))
        y1 = a.sqr(ctx)
        ctx.compute(y1)
        child = ctx.input()
        y2 = a.sqr(child)
        child.compute(y2)
        assert len(ctx._gg.entries) == 1  # type: ignore[attr-defined]
        assert y2.floats().tolist() == [0.0, 1.0, 4.0, 9.0]  # type: ignore[union-attr]


def test_outputs_with_consumers_stay_readable(be: GGMLBackend) -> None:
    """A requested tensor that other nodes consume keeps its value (a graph output)."""
    with be.new_context() as ctx:
        a = ctx.from_floats(np.arange(1, 9, dtype=np.float32))
        x = a.scale(ctx, 2.0)
        y = x.sqr(ctx).sum_rows(ctx)
        v = x.view(ctx, 8, 4)  # a view of an op result, requested too
        ctx.compute(x, y, v)
        assert x.floats().tolist() == [2.0 * i for i in range(1, 9)]  # type: ignore[union-attr]
        assert y.floats().tolist() == [4.0 * sum(i * i for i in range(1, 9))]  # type: ignore[union-attr]
        assert v.floats().tolist() == [6.0, 8.0, 10.0, 12.0]  # type: ignore[union-attr]


def test_evicted_graph_outputs_keep_their_values(be: GGMLBackend) -> None:
    """Results stay readable after their graph is dropped from the cache (bytes copied out)."""
    with be.new_context() as ctx:
        a = ctx.from_floats(np.arange(4, dtype=np.float32))
        results = []
        for i in range(MAX_CACHED_GRAPHS + 3):
            y = a.scale(ctx, float(i))
            ctx.compute(y)
            results.append((i, y))
        assert len(ctx._gg.entries) <= MAX_CACHED_GRAPHS  # type: ignore[attr-defined]
        for i, y in results:
            assert y.floats().tolist() == [float(i) * k for k in range(4)]  # type: ignore[union-attr]


def test_closed_context_results_are_not_readable(be: GGMLBackend) -> None:
    """After close, bytes of results raise instead of reading freed memory."""
    ctx = be.new_context()
    y = ctx.from_floats([1.0, 2.0]).scale(ctx, 3.0)
    ctx.compute(y)
    ctx.close()
    with pytest.raises(GraphError):
        y.bytes()
    ctx.close()  # idempotent


# -- writes into leaves -----------------------------------------------------------------------
def test_set_rows_and_copy_persist_in_the_cache_tensor(be: GGMLBackend) -> None:
    """Writes into a zeros() cache land in its storage; a later graph reads them."""
    with be.new_context() as ctx:
        cache = ctx.zeros(F32, 4, 6)
        rows = ctx.from_floats(np.arange(8, dtype=np.float32) + 1, 4, 2)
        idx = ctx.from_ints([4, 1], 2)
        w = cache.set_rows(ctx, rows, idx)
        ctx.compute(w)
        # copy into another window of the cache
        src = ctx.from_floats(np.full(4, 9.0, np.float32), 4, 1)
        cp = src.copy(ctx, cache.view(ctx, 0, 4))
        ctx.compute(cp)
        with be.new_context() as ctx2:  # another context reads the first one's leaf
            total = cache.sum_rows(ctx2)
            ctx2.compute(total)
            assert total.floats().tolist() == [36.0, 26.0, 0.0, 0.0, 10.0, 0.0]  # type: ignore[union-attr]
        ctx.compute(cache)
        data = cache.to_numpy()
        assert data is not None
        assert data[1].tolist() == [5.0, 6.0, 7.0, 8.0]
        assert data[4].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_in_place_unary_and_fill_write_their_leaf(be: GGMLBackend) -> None:
    """In-place ops on a constructor tensor overwrite its storage, as ggml's *_inplace do."""
    with be.new_context() as ctx:
        ones = ctx.zeros(F32, 3).fill(ctx, 1.0)
        ctx.compute(ones)
        x = ctx.from_floats([-1.0, 0.0, 2.0])
        r = x.relu(ctx)
        ctx.compute(r)
        ctx.compute(x)
        assert x.floats().tolist() == [0.0, 0.0, 2.0]  # type: ignore[union-attr]
        assert ones.floats().tolist() == [1.0, 1.0, 1.0]  # type: ignore[union-attr]


def test_stale_foreign_leaf_is_refused(be: GGMLBackend) -> None:
    """A cached graph over another context's leaf is not reused once that context closes."""
    other = be.new_context()
    w = other.from_floats([1.0, 2.0])
    with be.new_context() as ctx:
        y = w.scale(ctx, 2.0)
        ctx.compute(y)
        other.close()
        with pytest.raises(GraphError):
            ctx.compute(y)


# -- index safety (ids out of range on a fresh graph: the catalogue's *-err-*-id cases) ------------
def test_cached_graph_checks_new_leaf_ids(be: GGMLBackend) -> None:
    """A cached graph computed again checks the new index data before running (ggml would
    abort on an out-of-range row)."""
    with be.new_context() as ctx:
        table = ctx.from_floats(np.zeros((5, 4), np.float32))
        ids = ctx.from_ints([0, 4])
        y = table.rows(ctx, ids)
        ctx.compute(y)
        ids.from_ints([-1, 0])
        with pytest.raises(OutOfRangeError):
            ctx.compute(y)


def test_computed_ids_are_checked_between_graph_parts(be: GGMLBackend) -> None:
    """Indices computed in the graph (a cast) are read back before their consumer runs."""
    with be.new_context() as ctx:
        table = ctx.from_floats(np.arange(20, dtype=np.float32).reshape(5, 4))
        f = ctx.from_floats([1.0, 3.0])
        y = table.rows(ctx, f.scale(ctx, 1.0).cast(ctx, DType.I32))
        ctx.compute(y)
        assert y.floats().tolist() == [4.0, 5.0, 6.0, 7.0, 12.0, 13.0, 14.0, 15.0]  # type: ignore[union-attr]
        f.from_floats([1.0, 7.0])
        with pytest.raises(OutOfRangeError):
            ctx.compute(y)


def test_top_k_ids_need_no_check(be: GGMLBackend) -> None:
    """Indices made by argsort are bounded by its row length: no host read, no split."""
    with be.new_context() as ctx:
        experts = ctx.from_floats(np.ones((4, 3, 32), np.float32))
        x = ctx.from_floats(np.ones((2, 1, 32), np.float32))
        router = ctx.from_floats(np.array([[0.1, 0.9, 0.5, 0.3], [4, 3, 2, 1]], np.float32))
        y = experts.mulmat_id(ctx, x, router.top_k(ctx, 2))
        ctx.compute(y)
        entry = ctx._memo[4]  # type: ignore[attr-defined]
        assert entry.segments is None and not entry.host_checks
        assert y.floats().tolist() == [32.0] * 12  # type: ignore[union-attr]


def test_large_i32_sort_keys_are_refused(be: GGMLBackend) -> None:
    """I32 argsort goes through F32 keys; keys beyond 2**24 are declared unsupported."""
    with be.new_context() as ctx:
        keys = ctx.from_ints([3, 1, 2])
        s = keys.argsort(ctx)
        ctx.compute(s)
        assert s.to_numpy().tolist() == [1, 2, 0]  # type: ignore[union-attr]
        keys.from_ints([1 << 25, 1, 2])
        with pytest.raises(NotSupportedError):
            ctx.compute(s)


# -- support declarations, measurement, lifetime ------------------------------------------------
def test_missing_ggml_function_makes_the_op_unsupported() -> None:
    """An op whose ggml function the build lacks raises NotSupportedError when built."""
    with new_backend(None, BackendParams(num_threads=1), backend="ggml") as b:
        b._missing["sin"] = ["ggml_sin"]  # type: ignore[attr-defined]
        with b.new_context() as ctx:
            with pytest.raises(NotSupportedError, match="ggml_sin"):
                ctx.from_floats([1.0]).sin(ctx)


def test_zero_element_operands_are_unsupported(be: GGMLBackend) -> None:
    """ggml's allocator cannot place zero-element tensors: declared, not aborted."""
    with be.new_context() as ctx:
        with pytest.raises(NotSupportedError, match="zero-element"):
            ctx.from_floats([]).cast(ctx, DType.F16)


def test_compute_after_backend_close_raises() -> None:
    """A context outliving its backend refuses to compute (its ggml stream is gone)."""
    b = new_backend(None, BackendParams(num_threads=1), backend="ggml")
    ctx = b.new_context()
    y = ctx.from_floats([1.0]).scale(ctx, 2.0)
    b.close()
    with pytest.raises(GraphError):
        ctx.compute(y)
    ctx.close()


def test_measure_graph_without_running(be: GGMLBackend) -> None:
    """The compute buffer of a graph is measured by ggml's allocator, nothing computed."""
    with be.new_context() as ctx:
        a = ctx.zeros(F32, 256, 64)
        y = a.mulmat(ctx, a).softmax(ctx)
        ctx.forward(y)
        sizes = be.hook_measure_graph(ctx, ctx.graph)
        assert sizes is not None
        assert sizes[be.device_index] >= 64 * 64 * 4
        assert not y.readable


def test_thousand_contexts_do_not_grow_the_process(be: GGMLBackend) -> None:
    """1,000 create/compute/close cycles keep RSS flat (leaves, graphs, buffers all freed)."""

    def rss() -> int:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    data = np.arange(64 * 64, dtype=np.float32)

    def cycle() -> None:
        with be.new_context() as ctx:
            a = ctx.from_floats(data, 64, 64)
            y = a.mulmat(ctx, a).add(ctx, ctx.zeros(F32, 64, 64)).softmax(ctx)
            ctx.compute(y)
            y.floats()

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc")
    for _ in range(100):
        cycle()
    gc.collect()
    before = rss()
    for _ in range(1000):
        cycle()
    gc.collect()
    assert rss() - before < 4 * 1024 * 1024


def test_read_array_copies_results_and_views_as_read_bytes(be: GGMLBackend) -> None:
    """ggml's ``read_array`` (straight from the ggml buffer for a contiguous tensor) gives the
    bytes ``read_bytes`` gives, for a leaf, a result and a strided view, and every read is a new
    writable array."""
    from mlplug import Context

    with be.new_context() as ctx:
        x = ctx.from_floats(np.arange(12, dtype=np.float32), 4, 3)
        y = x.scale(ctx, 2.0)
        t = y.permute(ctx, 1, 0, 2, 3)  # a strided view of the result
        ctx.compute(x, y, t)
        for tensor in (x, y, t):
            got = ctx.read_array(tensor)
            assert got.tobytes() == ctx.read_bytes(tensor)
            assert got.tobytes() == Context.read_array(ctx, tensor).tobytes()
        a, b = y.floats(), y.floats()
        assert a is not None and b is not None and a.flags.writeable
        a[0] = -1.0
        assert b[0] == 0.0 and y.floats()[1] == 2.0
