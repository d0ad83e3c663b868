"""The memory estimate is tested, not trusted: a dry run's BackendMemory vs what a real load holds.

For every installed backend and several model sizes, types and layer placements: weights and KV
cache from the dry run must be within 1% of the bytes the backend holds after a real load, and
the graph estimate from ``reserve`` within 10% of what computing that graph takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from model_files import LlamaModel
from model_helpers import (
    BACKENDS,
    FakeGPU,
    FakeGPUBackend,
    build_cache,
    build_forward,
    gpu_layers,
    needs_cpu_numpy,
    open_backend,
)

import mlplug as ml
from mlplug.dtypes import DType
from mlplug.graph import estimate_graph, node_devices

Q = GGMLQuantizationType
MakeLlama = Callable[..., LlamaModel]
BackendMaker = Callable[..., ml.Backend]

N_TOKENS = 5
CTX_LEN = 64

MODELS: dict[str, dict[str, Any]] = {
    "f32-2layers": {"block_count": 2},
    "q8-f16-3layers": {"block_count": 3, "n_embd": 128, "type_mix": (Q.Q8_0, Q.F16)},
    "kquants-4layers": {
        "block_count": 4,
        "n_embd": 256,
        "n_ff": 512,
        "type_mix": (Q.Q4_K, Q.Q6_K, Q.Q5_0),
    },
    "mxfp4-rope": {"block_count": 2, "type_mix": (Q.MXFP4, Q.Q4_1), "rope_freqs": True},
    "f16-untied-wide": {
        "block_count": 2,
        "n_embd": 512,
        "n_vocab": 1000,
        "tied_output": False,
        "type_mix": (Q.F16, Q.BF16),
    },
}


def within(got: int, expected: int, rel: float) -> bool:
    """Whether ``got`` is within ``rel`` of ``expected``."""
    return abs(got - expected) <= rel * expected


def device_weights(mem: ml.BackendMemory, device: int) -> int:
    """Weight bytes the record puts on ``device`` (inputs count to the CPU)."""
    if device == -1:
        return mem.input_weights + sum(mem.cpu.weights)
    return sum(mem.gpus[device].weights)


def device_entry(mem: ml.BackendMemory, device: int) -> ml.DeviceMemory:
    """The record's entry of ``device``."""
    return mem.cpu if device == -1 else mem.gpus[device]


def compare(make: BackendMaker, model: LlamaModel, **params: Any) -> dict[str, Any]:
    """Dry-run the model, then load it for real; assert the estimate matches what is held."""
    n_vocab = model.ne["token_embd.weight"][1]
    n_embd_kv = model.n_embd // 2
    with make(alloc_memory=False, **params) as dry:
        cache = build_cache(dry, n_embd_kv, CTX_LEN, DType.F16)
        fwd = build_forward(dry, cache, N_TOKENS, n_vocab)
        fwd.ctx.reserve()
        estimate = dry.backend_memory()
        assert dry.hook_held_bytes() == {-1: 0}
        fwd.close()
        cache.close()
    n_gpus = len(estimate.gpus)
    devices = [-1, *range(n_gpus)]
    with make(alloc_memory=True, **params) as real:
        real.load()
        weights = real.hook_held_bytes()
        cache = build_cache(real, n_embd_kv, CTX_LEN, DType.F16)
        with_cache = real.hook_held_bytes()
        fwd = build_forward(real, cache, N_TOKENS, n_vocab)
        fwd.ctx.reserve()
        assert real.backend_memory() == estimate  # a real backend records the same
        before = real.hook_held_bytes()
        fwd.ctx.compute(fwd.out)
        after = real.hook_held_bytes()
        logits = fwd.out.floats()
        assert logits is not None and logits.shape == (n_vocab * N_TOKENS,)
        assert np.all(np.isfinite(logits))
        graph_visible = type(real).hook_held_bytes is not ml.Backend.hook_held_bytes or any(
            t.data is not None for t in fwd.ctx.graph if t.op != "leaf" and t.view_src is None
        )
        fwd.close()
        cache.close()
    report: dict[str, Any] = {}
    for d in devices:
        entry = device_entry(estimate, d)
        est_w, got_w = device_weights(estimate, d), weights.get(d, 0)
        est_c, got_c = sum(entry.cache), with_cache.get(d, 0) - weights.get(d, 0)
        est_g, got_g = entry.graph, after.get(d, 0) - before.get(d, 0)
        report[entry.name] = (est_w, got_w, est_c, got_c, est_g, got_g)
        assert within(got_w, est_w, 0.01), (entry.name, "weights", est_w, got_w)
        assert within(got_c, est_c, 0.01), (entry.name, "cache", est_c, got_c)
        if not graph_visible:
            pytest.xfail(
                "graph memory is invisible to the default hook_held_bytes (op results own no "
                "`data`): the backend must override Backend.hook_held_bytes "
                "(and hook_measure_graph)"
            )
        assert within(got_g, est_g, 0.10), (entry.name, "graph", est_g, got_g)
    assert sum(device_weights(estimate, d) for d in devices) > 0
    assert sum(sum(device_entry(estimate, d).cache) for d in devices) == (
        model.block_count * n_embd_kv * CTX_LEN * 2
    )
    assert sum(device_entry(estimate, d).graph for d in devices) > 0
    return report


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", list(MODELS))
def test_estimate_matches_held(make_llama: MakeLlama, backend_name: str, case: str) -> None:
    """Dry-run weights/cache within 1% and graph within 10% of a real load, per device."""
    model = make_llama(**MODELS[case])

    def make(**params: Any) -> ml.Backend:
        return open_backend(model.path, backend_name, **params)

    compare(make, model)
    # layers assigned to a GPU this backend does not have fall back to the CPU
    compare(make, model, gpu_layers=gpu_layers({"99": list(range(model.block_count + 1))}))


PLACEMENTS: dict[str, dict[str, list[int]]] = {
    "layer0-gpu0": {"0": [0]},
    "all-gpu0": {"0": [0, 1, 2, 3]},
    "split-output-gpu1": {"0": [0, 1], "1": [2, 3]},
    "interleaved": {"1": [0, 2], "0": [1]},
}


@needs_cpu_numpy
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_estimate_matches_held_on_fake_gpus(make_llama: MakeLlama, placement: str) -> None:
    """The same comparison per fake GPU: weights, cache and graph land where the plan says."""
    model = make_llama(block_count=3, n_embd=128, type_mix=(Q.Q8_0, Q.F16))
    layers = gpu_layers(PLACEMENTS[placement])

    def make(**params: Any) -> ml.Backend:
        return FakeGPUBackend(
            model.path,
            ml.BackendParams(gpu_layers=layers, **params),
            gpus=[FakeGPU("0"), FakeGPU("1")],
        )

    report = compare(make, model)
    for gpu, assigned in PLACEMENTS[placement].items():
        est_w, _, est_c, _, _, _ = report[f"CUDA{gpu}"]
        assert est_w > 0
        assert (est_c > 0) == any(i < model.block_count for i in assigned)


# -- the graph estimate itself ------------------------------------------------------------------
def _sizes(t: ml.Tensor, device: int) -> int:
    return t.nbytes


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_liveness_walk(backend_name: str) -> None:
    """A chain frees each result after its reader; views keep their root; outputs stay."""
    with ml.new_backend(None, backend=backend_name) as be, be.new_context() as ctx:
        a = ctx.input().empty(DType.F32, 1000)  # 4000 bytes, a leaf: not scratch
        b = a.scale(ctx, 2.0)
        c = b.scale(ctx, 3.0)
        d = c.scale(ctx, 4.0)
        ctx.forward(d)
        graph = ctx.graph
        assert estimate_graph(graph, _sizes, True) == {-1: 8000}  # two live at a time
        assert estimate_graph(graph, _sizes, False) == {-1: 12000}

    with ml.new_backend(None, backend=backend_name) as be, be.new_context() as ctx:
        a = ctx.input().empty(DType.F32, 1000)
        b = a.scale(ctx, 2.0)  # read again at the very end, through a view
        c = b.scale(ctx, 3.0)
        d = c.scale(ctx, 4.0)
        e = d.add(ctx, b.reshape(ctx, 1000, 1))
        ctx.forward(e)
        assert estimate_graph(ctx.graph, _sizes, True) == {-1: 12000}

    with ml.new_backend(None, backend=backend_name) as be, be.new_context() as ctx:
        a = ctx.input().empty(DType.F32, 1000)
        out1 = a.scale(ctx, 2.0)  # an output nobody reads: kept to the end
        b = a.scale(ctx, 3.0)
        c = b.scale(ctx, 4.0)
        ctx.forward(out1, c)
        assert estimate_graph(ctx.graph, _sizes, True) == {-1: 12000}


@needs_cpu_numpy
def test_node_devices_follow_weights(make_llama: MakeLlama) -> None:
    """Ops on a GPU weight run on that GPU, and their consumers follow; inputs stay on the CPU."""
    model = make_llama(block_count=2)
    params = ml.BackendParams(gpu_layers=gpu_layers({"0": [1]}))
    with FakeGPUBackend(model.path, params) as be, be.new_context() as ctx:
        x = ctx.input().empty(DType.F32, model.n_embd, 3)
        w0, w1 = be.get("blk.0.attn_q.weight"), be.get("blk.1.attn_q.weight")
        assert w0 is not None and w1 is not None
        h0 = w0.mulmat(ctx, x)
        h1 = w1.mulmat(ctx, h0)
        y = h1.scale(ctx, 2.0)
        ctx.forward(y)
        devices = node_devices(ctx.graph)
        assert [devices[id(t)] for t in (x, w0, w1, h0, h1, y)] == [-1, -1, 0, -1, 0, 0]
        ctx.reserve()
        mem = be.backend_memory()
        assert mem.cpu.graph == h0.nbytes
        assert mem.gpus[0].graph == h1.nbytes + y.nbytes
        ctx.reserve()  # the last call wins (not added)
        assert be.backend_memory().gpus[0].graph == h1.nbytes + y.nbytes


@needs_cpu_numpy
def test_reserve_err_no_mem(make_llama: MakeLlama) -> None:
    """With alloc_memory=True a graph larger than the GPU's free memory raises ErrNoMem."""
    model = make_llama(block_count=2)
    params = ml.BackendParams(alloc_memory=True, gpu_layers=gpu_layers({"0": [0, 1, 2]}))
    with FakeGPUBackend(model.path, params) as probe:
        weights = sum(probe.backend_memory().gpus[0].weights)
    gpu = FakeGPU("0", total=weights + 4096)
    with FakeGPUBackend(model.path, params, gpus=[gpu]) as be, be.new_context() as ctx:
        x = ctx.input().empty(DType.F32, model.n_embd, 64)
        w = be.get("blk.0.ffn_up.weight")
        assert w is not None
        ctx.forward(w.mulmat(ctx, x))  # 2*n_embd x 64 floats = 32 KiB on GPU 0
        with pytest.raises(ml.ErrNoMem) as err:
            ctx.reserve()
        assert err.value.backend_memory.gpus[0].graph == 2 * model.n_embd * 64 * 4


@needs_cpu_numpy
def test_backend_devices_skip_unused_gpus_when_allocated(make_llama: MakeLlama) -> None:
    """backend_devices lists every GPU on a dry run, only the GPUs given weights when loaded."""
    model = make_llama(block_count=2, n_embd=64, type_mix=(Q.F32,))
    layers = gpu_layers({"1": [0, 1, 2]})
    gpus = [FakeGPU("0"), FakeGPU("1")]
    dry = ml.BackendParams(gpu_layers=layers, alloc_memory=False)
    with FakeGPUBackend(model.path, dry, gpus=gpus) as be:
        assert [d.id for d in be.backend_devices()] == ["0", "1"]
    real = ml.BackendParams(gpu_layers=layers, alloc_memory=True)
    with FakeGPUBackend(model.path, real, gpus=gpus) as be:
        assert [d.id for d in be.backend_devices()] == ["1"]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", ["q8-f16-3layers", "kquants-4layers", "f16-untied-wide"])
def test_estimate_matches_held_with_weight_copies(
    make_llama: MakeLlama, backend_name: str, case: str
) -> None:
    """With ``dequantize="f32"`` the weight copies are in the estimate and in what is held."""
    model = make_llama(**MODELS[case])

    def make(**params: Any) -> ml.Backend:
        return open_backend(model.path, backend_name, **params)

    with make(alloc_memory=False) as probe:
        if not probe.dequantized_copies:
            pytest.skip(f"{backend_name} keeps no dequantised weight copies")
    plain = compare(make, model)
    copied = compare(make, model, dequantize="f32")
    cpu = next(iter(plain))
    assert copied[cpu][0] > plain[cpu][0]  # the copies are estimated ...
    with make(alloc_memory=True, dequantize="f32") as real:
        real.load()
        assert len(real.weight_copies) > 0  # ... and made
        assert real.hook_held_bytes()[-1] == copied[cpu][1]
        real.close()
        assert len(real.weight_copies) == 0  # and freed with the backend


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_weight_copies_give_the_same_logits(make_llama: MakeLlama, backend_name: str) -> None:
    """A forward pass with the float32 copies gives the logits of the tiled quantised products."""
    model = make_llama(**MODELS["kquants-4layers"])
    n_vocab = model.ne["token_embd.weight"][1]
    logits = []
    for mode in ("off", "f32"):
        with open_backend(model.path, backend_name, alloc_memory=True, dequantize=mode) as be:
            if not be.dequantized_copies:
                pytest.skip(f"{backend_name} keeps no dequantised weight copies")
            be.load()
            cache = build_cache(be, model.n_embd // 2, CTX_LEN, DType.F16)
            fwd = build_forward(be, cache, N_TOKENS, n_vocab)
            fwd.ctx.compute(fwd.out)
            logits.append(fwd.out.floats())
            fwd.close()
            cache.close()
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-5, atol=1e-5)
