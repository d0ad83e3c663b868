"""new_backend(path): placement, memory record, get/config, dry runs and ErrNoMem.

The rules tested are those of docs/models-and-memory.md.
"""

from __future__ import annotations

import builtins
import mmap
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from model_files import LlamaModel, RawGGUF
from model_helpers import (
    BACKENDS,
    FakeGPU,
    FakeGPUBackend,
    Tracker,
    build_cache,
    gpu_layers,
    needs_cpu_numpy,
    open_backend,
)

import mlplug as ml
from mlplug.dtypes import DType, nbytes_of
from mlplug.errors import ErrNoMem, GraphError, ModelFileError

Q = GGMLQuantizationType
MakeLlama = Callable[..., LlamaModel]


def a32(n: int) -> int:
    """Round up to 32."""
    return n + (-n % 32)


def file_size(model: LlamaModel, name: str) -> int:
    """Aligned byte size of a file tensor as written."""
    from mlplug.dtypes import from_ggml_type

    return a32(nbytes_of(from_ggml_type(int(model.types[name])), model.ne[name]))


def layer_bytes(model: LlamaModel, layer: int) -> int:
    """Aligned bytes of every ``blk.{layer}.`` tensor of the file."""
    return sum(file_size(model, n) for n in model.names if n.startswith(f"blk.{layer}."))


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """Each installed backend."""
    return str(request.param)


# -- a model without tensors and a tiny tied-output llama ------------------------------------------
def test_zero_tensor_file_loads(tmp_path: Path, backend_name: str) -> None:
    """A file with only general.architecture loads; input() makes tensors; get is None."""
    path = (
        RawGGUF()
        .kv("general.architecture", GGUFValueType.STRING, "test")
        .write(tmp_path / "empty.gguf")
    )
    calls: list[float] = []
    with open_backend(path, backend_name, alloc_memory=True) as be:
        be.load(calls.append)
        assert calls == [1.0]
        assert be.get("x") is None
        assert be.config().architecture() == "test"
        assert be.block_count == 0
        mem = be.backend_memory()
        assert mem.input_weights == 0 and mem.cpu.weights == [0] and mem.cpu.cache == [0]
        with be.new_context() as ctx:
            t = ctx.input().from_floats([1.0, 2.0, 3.0])
            ctx.compute(t)
            np.testing.assert_array_equal(t.floats(), [1.0, 2.0, 3.0])
        with pytest.raises(GraphError, match="exceeds maximum"):
            be.new_context_size(be.new_context().max_graph_nodes() + 1)


def test_dry_run_load_raises(llama: LlamaModel, backend_name: str) -> None:
    """A dry-run backend refuses to load, with the reference's message."""
    with open_backend(llama.path, backend_name, alloc_memory=False) as be:
        with pytest.raises(GraphError, match="cannot load model without memory allocation"):
            be.load()
        assert be.get("token_embd.weight") is not None  # sizes exist, the backend stays usable


def test_max_graph_nodes(make_llama: MakeLlama, backend_name: str) -> None:
    """max_graph_nodes = max(1024, 32 * tensors in the file); one more node is refused."""
    small = make_llama()
    big = make_llama(block_count=8)
    for model, n_tensors in ((small, len(small.names)), (big, len(big.names))):
        with open_backend(model.path, backend_name) as be:
            expected = max(1024, 32 * n_tensors)
            assert be.new_context().max_graph_nodes() == expected
            assert be.new_context_size(expected).max_graph_nodes() == expected
            with pytest.raises(GraphError, match=f"exceeds maximum \\({expected}\\)"):
                be.new_context_size(expected + 1)


def test_tied_llama_memory_record(llama: LlamaModel, backend_name: str) -> None:
    """Tied output: output.weight exists; lists have block_count+1 entries; placement-rule sizes."""
    with open_backend(llama.path, backend_name) as be:
        assert be.get("output.weight") is not None
        assert be.get("output.weight") is not be.get("token_embd.weight")
        mem = be.backend_memory()
        assert mem.cpu.name == "CPU"
        assert len(mem.cpu.weights) == 3 and len(mem.cpu.cache) == 3
        assert mem.gpus == []
        assert mem.input_weights == file_size(llama, "token_embd.weight")
        assert mem.cpu.weights[0] == layer_bytes(llama, 0)
        assert mem.cpu.weights[1] == layer_bytes(llama, 1)
        assert mem.cpu.weights[2] == file_size(llama, "output_norm.weight") + file_size(
            llama, "token_embd.weight"
        )
        assert mem.cpu.cache == [0, 0, 0] and mem.cpu.graph == 0


def test_untied_output(make_llama: MakeLlama, backend_name: str) -> None:
    """A file with output.weight gets no tied copy: output.weight is the file's own tensor."""
    model = make_llama(tied_output=False, type_mix=(Q.F16,))
    with open_backend(model.path, backend_name) as be:
        out = be.get("output.weight")
        assert out is not None and out.dtype == DType.F16
        mem = be.backend_memory()
        assert mem.cpu.weights[2] == file_size(model, "output_norm.weight") + file_size(
            model, "output.weight"
        )


def test_get_names_and_config(make_llama: MakeLlama, backend_name: str) -> None:
    """get() uses created names: per-layer rope copies exist, the file's rope_freqs does not."""
    model = make_llama(block_count=3, rope_freqs=True)
    with open_backend(model.path, backend_name) as be:
        assert be.get("rope_freqs.weight") is None
        copies = [be.get(f"blk.{i}.rope_freqs.weight") for i in range(3)]
        assert all(c is not None for c in copies)
        assert len({id(c) for c in copies}) == 3
        assert be.get("blk.3.rope_freqs.weight") is None
        for name in model.names:
            if name != "rope_freqs.weight":
                t = be.get(name)
                assert t is not None, name
                assert t.name == name
                assert t.shape == model.ne[name]
        cfg = be.config()
        assert cfg.architecture() == "llama"
        assert cfg.block_count() == 3
        assert cfg.uint("embedding_length") == model.n_embd
        rope = be.backend_memory().cpu.weights
        assert rope[0] == layer_bytes(model, 0) + file_size(model, "rope_freqs.weight")


def test_backend_memory_is_a_copy(llama: LlamaModel, backend_name: str) -> None:
    """Mutating the returned record does not change the backend's."""
    with open_backend(llama.path, backend_name) as be:
        mem = be.backend_memory()
        mem.cpu.weights[0] += 1000
        mem.input_weights = 1
        assert be.backend_memory().cpu.weights[0] == mem.cpu.weights[0] - 1000
        assert be.backend_memory().input_weights != 1


def test_missing_gpu_falls_back_to_cpu(llama: LlamaModel, backend_name: str) -> None:
    """gpu_layers naming a device the backend does not have put those layers on the CPU."""
    params = {"gpu_layers": gpu_layers({"7": [0, 1, 2]})}
    with (
        open_backend(llama.path, backend_name, **params) as be,
        open_backend(llama.path, backend_name) as plain,
    ):
        assert be.backend_memory() == plain.backend_memory()
        assert be._layer_device(0) == -1 and be._layer_device(2) == -1


# -- bad files ----------------------------------------------------------------------------------
def test_directory_missing_truncated(tmp_path: Path, llama: LlamaModel, backend_name: str) -> None:
    """A directory, a missing file and a truncated file raise ModelFileError naming the path."""
    with pytest.raises(ModelFileError, match="is a directory") as err:
        open_backend(tmp_path, backend_name)
    assert err.value.path == str(tmp_path)
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelFileError, match="cannot open") as err:
        open_backend(missing, backend_name, alloc_memory=True)
    assert err.value.path == str(missing)
    data = llama.path.read_bytes()
    for cut in (10, len(data) // 3, len(data) - 1):
        short = tmp_path / f"short{cut}.gguf"
        short.write_bytes(data[:cut])
        with pytest.raises(ModelFileError) as err:
            open_backend(short, backend_name, alloc_memory=True)
        assert err.value.path == str(short)
        assert err.value.offset is not None


def test_layer_index_out_of_range(make_llama: MakeLlama, backend_name: str) -> None:
    """A tensor whose layer number is >= block_count is refused at creation."""
    model = make_llama(extra_tensors=[("blk.5.attn_q.weight", (64, 64), Q.F32)])
    with pytest.raises(ModelFileError, match="layer index 5"):
        open_backend(model.path, backend_name)


# -- dry run: sizes only ---------------------------------------------------------------------------
def test_dry_run_allocates_nothing(make_llama: MakeLlama, backend_name: str) -> None:
    """A dry run of a 40 MiB model allocates well under 1 MiB and holds no storage."""
    model = make_llama(n_embd=1024, n_ff=4096, block_count=2, n_vocab=256)
    weights = sum(file_size(model, n) for n in model.names)
    assert weights > 40 * 2**20
    tracemalloc.start()
    try:
        with open_backend(model.path, backend_name, alloc_memory=False) as be:
            cache = build_cache(be, 512, 4096, DType.F16)  # 4 MiB per layer, measured only
            _, peak = tracemalloc.get_traced_memory()
            assert be.hook_held_bytes() == {-1: 0}
            t = be.get("blk.0.ffn_up.weight")
            assert t is not None and t.data is None
            mem = be.backend_memory()
            assert mem.cpu.cache[:2] == [512 * 4096 * 2] * 2
            cache.close()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak


def test_cache_accounting(llama: LlamaModel, backend_name: str) -> None:
    """Tensors of layer(i) contexts add to cache[i]; input() and out-of-range layers do not."""
    with open_backend(llama.path, backend_name, alloc_memory=True) as be:
        ctx = be.new_context()
        k0 = ctx.layer(0).zeros(DType.F16, 100, 3)
        ctx.layer(1).empty(DType.F32, 7)
        ctx.layer(1).empty(DType.F32, 0)  # zero elements: nothing
        ctx.layer(2).empty(DType.F32, 1000)  # not a repeating layer: layer() returns ctx itself
        ctx.input().empty(DType.F32, 1000)
        assert ctx.layer(2) is ctx
        mem = be.backend_memory()
        assert mem.cpu.cache == [a32(600), a32(28), 0]
        assert k0.ctx.layer_index == 0
        ctx.close()
        assert be.backend_memory().cpu.cache == [a32(600), a32(28), 0]  # a record, not a gauge


def test_close_frees_everything(llama: LlamaModel, backend_name: str) -> None:
    """After close no storage is held and get() finds nothing."""
    be = open_backend(llama.path, backend_name, alloc_memory=True)
    be.load()
    assert be.hook_held_bytes()[-1] > 0
    be.close()
    be.close()
    assert be.hook_held_bytes() == {-1: 0}
    assert be.get("token_embd.weight") is None


# -- fake GPUs: placement, per-GPU accounting, ErrNoMem -------------------------------------------
@needs_cpu_numpy
def test_fake_gpu_placement(llama: LlamaModel) -> None:
    """Layers go to the GPU listing them first; output layer 2 too; inputs stay on the CPU."""
    gpus = [FakeGPU("0"), FakeGPU("1"), FakeGPU("2")]
    params = ml.BackendParams(alloc_memory=True, gpu_layers=gpu_layers({"0": [0], "1": [1, 2]}))
    with FakeGPUBackend(llama.path, params, gpus=gpus) as be:
        mem = be.backend_memory()
        assert [g.name for g in mem.gpus] == ["CUDA0", "CUDA1", "CUDA2"]
        assert [g.library for g in mem.gpus] == ["CUDA"] * 3
        assert mem.gpus[0].weights == [layer_bytes(llama, 0), 0, 0]
        out = file_size(llama, "output_norm.weight") + file_size(llama, "token_embd.weight")
        assert mem.gpus[1].weights == [0, layer_bytes(llama, 1), out]
        assert mem.gpus[2].weights == [0, 0, 0]
        assert mem.cpu.weights == [0, 0, 0]
        assert mem.input_weights == file_size(llama, "token_embd.weight")
        be.load()
        held = be.hook_held_bytes()
        assert held == {
            -1: mem.input_weights,
            0: sum(mem.gpus[0].weights),
            1: sum(mem.gpus[1].weights),
        }
        w = be.get("blk.1.attn_q.weight")
        assert w is not None and w.ctx.device_index == 1
        ctx = be.new_context()
        ctx.layer(0).empty(DType.F32, 64)
        ctx.layer(1).empty(DType.F32, 32)
        mem = be.backend_memory()
        assert mem.gpus[0].cache == [256, 0, 0] and mem.gpus[1].cache == [0, 128, 0]
        assert be.hook_held_bytes()[1] == held[1] + 128
        ctx.close()
        assert be.hook_held_bytes() == held


@needs_cpu_numpy
def test_err_no_mem_when_gpu_too_small(llama: LlamaModel) -> None:
    """A GPU reporting too little free memory: ErrNoMem with the whole record, nothing held."""
    layers = gpu_layers({"0": [0, 1]})
    with FakeGPUBackend(llama.path, ml.BackendParams(gpu_layers=layers)) as dry:
        planned = dry.backend_memory()
    need = sum(planned.gpus[0].weights)
    tracker = Tracker()
    params = ml.BackendParams(alloc_memory=True, gpu_layers=layers)
    with pytest.raises(ErrNoMem) as err:
        FakeGPUBackend(llama.path, params, gpus=[FakeGPU("0", free=need - 1)], tracker=tracker)
    assert err.value.backend_memory == planned
    assert isinstance(err.value, MemoryError)
    assert "insufficient memory - required allocations: " in str(err.value)
    assert all(v == 0 for v in tracker.live.values())
    # exactly enough fits
    with FakeGPUBackend(llama.path, params, gpus=[FakeGPU("0", free=need)]) as be:
        assert be.backend_memory() == planned
    # a dry run does not check
    with FakeGPUBackend(
        llama.path, ml.BackendParams(gpu_layers=layers), gpus=[FakeGPU("0", free=0)]
    ):
        pass


@needs_cpu_numpy
def test_err_no_mem_when_allocation_fails(llama: LlamaModel) -> None:
    """A MemoryError from the allocator midway: ErrNoMem, and what was allocated is freed."""
    tracker = Tracker()
    params = ml.BackendParams(alloc_memory=True, gpu_layers=gpu_layers({"0": [0, 1]}))
    with pytest.raises(ErrNoMem) as err:
        FakeGPUBackend(llama.path, params, gpus=[FakeGPU("0", limit=20_000)], tracker=tracker)
    assert sum(err.value.backend_memory.gpus[0].weights) > 20_000
    assert isinstance(err.value.__cause__, MemoryError)
    assert tracker.live and all(v == 0 for v in tracker.live.values())


@needs_cpu_numpy
def test_err_no_mem_for_cache(llama: LlamaModel) -> None:
    """A cache tensor that does not fit raises ErrNoMem whose record includes the request."""
    params = ml.BackendParams(alloc_memory=True, gpu_layers=gpu_layers({"0": [1]}))
    need = 0
    with FakeGPUBackend(llama.path, params) as probe:
        need = sum(probe.backend_memory().gpus[0].weights)
    with FakeGPUBackend(llama.path, params, gpus=[FakeGPU("0", limit=need + 4096)]) as be:
        ctx = be.new_context().layer(1)
        ctx.zeros(DType.F32, 1024)  # 4096 bytes: fits exactly
        with pytest.raises(ErrNoMem) as err:
            ctx.zeros(DType.F32, 100, 10)
        assert err.value.backend_memory.gpus[0].cache == [0, 4096 + 4000, 0]
        assert be.hook_held_bytes()[0] == need + 4096
        ctx.close()


@needs_cpu_numpy
def test_open_error_closes_backend(tmp_path: Path) -> None:
    """If opening the model fails, the backend's _close still runs."""
    closed: list[bool] = []

    class Probe(FakeGPUBackend):  # type: ignore[misc,valid-type]
        def hook_close(self) -> None:
            closed.append(True)

    with pytest.raises(ModelFileError):
        Probe(tmp_path / "missing.gguf", ml.BackendParams())
    assert closed == [True]


def test_file_opened_read_only(
    llama: LlamaModel, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening and loading open the file for reading only, and map it read-only.

    Permission bits alone prove nothing when the tests run as root, so every ``open``,
    ``os.open`` and ``mmap.mmap`` of the file is recorded and its mode checked.
    """
    target = os.path.realpath(llama.path)
    modes: list[str] = []
    flags: list[int] = []
    maps: list[tuple[int, int | None]] = []
    real_open, real_os_open, real_mmap = builtins.open, os.open, mmap.mmap

    def is_target(file: object) -> bool:
        if isinstance(file, int):
            try:
                file = os.readlink(f"/proc/self/fd/{file}")
            except OSError:
                return False
        if not isinstance(file, (str, bytes, os.PathLike)):
            return False
        return os.path.realpath(os.fsdecode(file)) == target

    def logged_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if is_target(file):
            modes.append(mode)
        return real_open(file, mode, *args, **kwargs)

    def logged_os_open(path: Any, flag: int, *args: Any, **kwargs: Any) -> int:
        if is_target(path):
            flags.append(flag)
        return real_os_open(path, flag, *args, **kwargs)

    def logged_mmap(fileno: int, length: int, *args: Any, **kwargs: Any) -> mmap.mmap:
        if is_target(fileno):
            maps.append((kwargs.get("access", mmap.ACCESS_DEFAULT), kwargs.get("prot")))
        return real_mmap(fileno, length, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", logged_open)
    monkeypatch.setattr(os, "open", logged_os_open)
    monkeypatch.setattr(mmap, "mmap", logged_mmap)
    os.chmod(llama.path, 0o444)  # and, for a user who is not root, no write permission
    try:
        with open_backend(llama.path, backend_name, alloc_memory=True) as be:
            be.load()
    finally:
        os.chmod(llama.path, 0o644)
    assert modes or flags, "the model file was never opened"
    for mode in modes:
        assert "r" in mode and not set(mode) & set("wax+"), f"opened with mode {mode!r}"
    write = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    for flag in flags:
        assert flag & os.O_ACCMODE == os.O_RDONLY and not flag & write, f"os.open flags {flag:#o}"
    assert maps, "the model file was not memory-mapped"
    for access, prot in maps:
        assert access == mmap.ACCESS_READ or prot == mmap.PROT_READ, (access, prot)
