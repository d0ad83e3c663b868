"""Tensor placement and weight accounting (docs/models-and-memory.md, the placement rules)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from model_files import LlamaModel, RawGGUF, retype_tensor

from mlplug.dtypes import DType, from_ggml_type, nbytes_of
from mlplug.errors import ModelFileError
from mlplug.modelfile import (
    CPU,
    Config,
    GGUFFile,
    PlacementPlan,
    TensorInfo,
    assign_layer,
    group_key,
    group_layers,
    plan_placement,
)
from mlplug.modelfile.reader import tensor_type_size

Q = GGMLQuantizationType
V = GGUFValueType


@dataclass
class Dev:
    """A GPU reference (id, library)."""

    id: str
    library: str = "CUDA"


@dataclass
class GL:
    """A GPULayers-like entry."""

    id: str
    library: str = "CUDA"
    layers: list[int] = field(default_factory=list)


def info(name: str, ne: Sequence[int] = (5, 3), ggml_type: int = 0) -> TensorInfo:
    """A synthetic tensor info with a correct byte size."""
    sizes = tensor_type_size(ggml_type)
    assert sizes is not None
    n = 1
    for d in ne:
        n *= d
    dtype = DType.MXFP4 if ggml_type == 4 else from_ggml_type(ggml_type)
    return TensorInfo(name, tuple(ne), dtype, ggml_type, 0, 0, n // sizes[0] * sizes[1], n, 0)


def a32(n: int) -> int:
    """Round up to 32."""
    return n + (-n % 32)


def plan(names: Sequence[str | TensorInfo], blocks: int, **kw: object) -> PlacementPlan:
    """Plan synthetic F32 (5, 3) tensors (or given infos)."""
    infos = [n if isinstance(n, TensorInfo) else info(n) for n in names]
    return plan_placement(infos, blocks, path="m.gguf", **kw)  # type: ignore[arg-type]


def test_tiny_llama_tied_output(tmp_path: Path) -> None:
    """Tiny llama: 3 CPU weight entries, input = token_embd, weights[2] = norm + tied output."""
    raw = (
        RawGGUF().kv("general.architecture", V.STRING, "llama").kv("llama.block_count", V.UINT32, 2)
    )
    raw.tensor("token_embd.weight", (5, 3), 0, 0).tensor("blk.0.attn_q.weight", (5, 5), 0, 64)
    raw.tensor("blk.1.attn_q.weight", (5, 5), 0, 192).tensor("output_norm.weight", (5,), 0, 320)
    raw.data = bytes(352)
    with GGUFFile(raw.write(tmp_path / "tiny.gguf")) as f:
        cfg = Config(f.metadata)
        p = plan_placement(f.tensors, cfg.block_count(), path=f.path)
    assert p.get("output.weight") is not None
    assert len(p.cpu_weights) == 3
    assert p.input_weights == a32(60) == 64
    assert p.cpu_weights == [a32(100), a32(100), a32(20) + a32(60)]
    assert p.targets["token_embd.weight"] == ["token_embd.weight", "output.weight"]
    tied = p.get("output.weight")
    assert tied is not None and tied.layer == "output" and tied.source.name == "token_embd.weight"
    assert p.get("token_embd.weight").layer == "input"  # type: ignore[union-attr]
    assert p.output_device == CPU and p.used_gpus == [] and p.gpu_weights == []


def test_explicit_output_is_not_tied() -> None:
    """With an `output` group present, token_embd is not duplicated."""
    p = plan(["token_embd.weight", "output.weight", "output_norm.weight"], 1)
    assert p.targets["token_embd.weight"] == ["token_embd.weight"]
    assert p.get("output.weight").source.name == "output.weight"  # type: ignore[union-attr]
    assert p.cpu_weights == [0, 2 * 64]


def test_output_norm_alone_does_not_count_as_output_group() -> None:
    """`output_norm.weight` is group `output_norm`, so the embedding is still tied."""
    assert plan(["token_embd.weight", "output_norm.weight"], 0).get("output.weight") is not None


def test_gpu_assignment_and_output_layer() -> None:
    """Layers go to the first matching entry's GPU; the output layer is index block_count."""
    gpus = [Dev("0"), Dev("1")]
    layers = [GL("0", layers=[0]), GL("1", layers=[1, 2])]
    p = plan(
        ["token_embd.weight", "blk.0.w", "blk.1.w", "output_norm.weight"],
        2,
        gpus=gpus,
        gpu_layers=layers,
    )
    assert p.layer_devices == [0, 1, 1] and p.output_device == 1
    assert p.input_weights == 64 and p.cpu_weights == [0, 0, 0]
    assert p.gpu_weights == [[64, 0, 0], [0, 64, 128]]
    assert p.used_gpus == [0, 1]
    assert p.get("output.weight").device == 1  # type: ignore[union-attr]
    assert p.weights(1) is p.gpu_weights[1] and p.weights(CPU) is p.cpu_weights


def test_assign_layer_rules() -> None:
    """First entry listing the layer decides; an unknown or library-mismatched GPU means CPU."""
    gpus = [Dev("0", "CUDA"), Dev("0", "ROCm")]
    assert assign_layer(0, gpus, [GL("0", "ROCm", [0]), GL("0", "CUDA", [0])]) == 1
    assert assign_layer(0, gpus, [GL("0", "Vulkan", [0]), GL("0", "CUDA", [0])]) == CPU
    assert assign_layer(0, gpus, [GL("9", "CUDA", [0])]) == CPU
    assert assign_layer(3, gpus, [GL("0", "CUDA", [0, 1])]) == CPU
    assert assign_layer(0, [], []) == CPU


def test_output_offloaded_only_when_listed() -> None:
    """Without block_count in a GPU's list, the output layer stays on the CPU."""
    p = plan(["blk.0.w", "output.weight"], 1, gpus=[Dev("0")], gpu_layers=[GL("0", layers=[0])])
    assert p.gpu_weights == [[64, 0]] and p.cpu_weights == [0, 64]


def test_rope_freqs_per_layer_copies() -> None:
    """rope_freqs becomes blk.{i}.rope_freqs.weight on layer i's device; the original is absent."""
    gpus = [Dev("0")]
    p = plan(
        ["rope_freqs.weight", "blk.0.w", "blk.1.w"], 2, gpus=gpus, gpu_layers=[GL("0", layers=[1])]
    )
    assert p.get("rope_freqs.weight") is None
    assert p.targets["rope_freqs.weight"] == ["blk.0.rope_freqs.weight", "blk.1.rope_freqs.weight"]
    assert p.get("blk.0.rope_freqs.weight").device == CPU  # type: ignore[union-attr]
    assert p.get("blk.1.rope_freqs.weight").device == 0  # type: ignore[union-attr]
    assert p.cpu_weights == [128, 0, 0] and p.gpu_weights == [[0, 128, 0]]


@pytest.mark.parametrize("name", ["rope_factors_long.weight", "rope_factors_short.weight"])
def test_rope_factors_copied(name: str) -> None:
    """The other rope factor tensors are copied per layer too."""
    p = plan([name, "blk.0.w", "blk.1.w", "blk.2.w"], 3)
    assert [t.name for t in p.tensors][:3] == [f"blk.{i}.{name}" for i in range(3)]
    assert [t.layer for t in p.tensors] == [0, 1, 2, 0, 1, 2]


def test_vision_and_projector_tensors_go_to_output() -> None:
    """v., mm. and s. tensors sit on the output device; v.position_embd stays an input."""
    p = plan(
        ["v.blk.0.attn_q.weight", "mm.0.weight", "s.x.weight", "v.position_embd.weight"],
        1,
        gpus=[Dev("0")],
        gpu_layers=[GL("0", layers=[1])],
    )
    for name in ("v.blk.0.attn_q.weight", "mm.0.weight", "s.x.weight"):
        t = p.get(name)
        assert t is not None and t.layer == "output" and t.device == 0
    pos = p.get("v.position_embd.weight")
    assert pos is not None and pos.layer == "input" and pos.device == CPU
    assert p.gpu_weights == [[0, 3 * 64]] and p.input_weights == 64


@pytest.mark.parametrize(
    "name",
    [
        "cls.weight",
        "altup_proj.weight",
        "altup_unembd_proj.weight",
        "per_layer_token_embd.weight",
        "per_layer_model_proj.weight",
        "per_layer_proj_norm.weight",
        "x.output.weight",
    ],
)
def test_output_parts(name: str) -> None:
    """Any whole part naming an output tensor puts it on the output layer."""
    assert plan([name], 1).get(name).layer == "output"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "name", ["position_embd.weight", "token_types.weight", "token_norm_embd.w"]
)
def test_input_parts(name: str) -> None:
    """Input parts stay on the CPU, counted in input_weights."""
    p = plan([name], 1)
    assert p.get(name).layer == "input" and p.input_weights == 64  # type: ignore[union-attr]


def test_whole_part_matching() -> None:
    """blk.0.attn_output.weight is a layer tensor (part attn_output is not `output`)."""
    p = plan(["blk.0.attn_output.weight", "enc.3.x", "foo.weight", "blk.1.w"], 4)
    assert p.get("blk.0.attn_output.weight").layer == 0  # type: ignore[union-attr]
    assert p.get("enc.3.x").layer == 3  # type: ignore[union-attr]
    assert p.get("foo.weight").layer == "input"  # type: ignore[union-attr]
    assert p.cpu_weights == [64, 64, 0, 64, 0] and p.input_weights == 64


@pytest.mark.parametrize("name", ["blk.2.attn_q.weight", "blk.99999999999999999999999.w", "x7"])
def test_out_of_range_layer(name: str) -> None:
    """A layer index >= block_count raises ModelFileError naming the tensor."""
    with pytest.raises(ModelFileError, match=f'tensor "{name}" has layer index') as e:
        plan(["blk.0.w", name], 2)
    assert e.value.path == "m.gguf" and e.value.offset is not None


def test_mxfp4_type_4_and_bf16_exps_bias(make_llama: Callable[..., LlamaModel]) -> None:
    """Type 4 is created as MXFP4 (re-interleaved on load); BF16 *_exps.bias as F32."""
    m = make_llama(
        block_count=1,
        type_mix=(Q.MXFP4,),
        extra_tensors=[("blk.0.ffn_gate_exps.bias", (64, 2), Q.BF16), ("blk.0.b", (64,), Q.BF16)],
    )
    retype_tensor(m.path, "blk.0.attn_q.weight", 4)
    with GGUFFile(m.path) as f:
        p = plan_placement(f.tensors, Config(f.metadata).block_count(), path=f.path)
    q = p.get("blk.0.attn_q.weight")
    assert q is not None and q.dtype is DType.MXFP4 and q.conversion == "mxfp4_reorder"
    bias = p.get("blk.0.ffn_gate_exps.bias")
    assert bias is not None and bias.dtype is DType.F32 and bias.conversion == "bf16_to_f32"
    assert bias.nbytes == 128 * 4 and bias.source.nbytes == 128 * 2
    other = p.get("blk.0.b")
    assert other is not None and other.dtype is DType.BF16 and other.conversion is None
    k = p.get("blk.0.attn_k.weight")
    assert k is not None and k.dtype is DType.MXFP4 and k.conversion is None  # type 39


def test_unsupported_type_rejected() -> None:
    """A tensor whose type mlplug has no DType for (IQ4_XS) cannot be placed."""
    with pytest.raises(ModelFileError, match="type 23"):
        plan([info("blk.0.w", (256,), 23)], 1)


def test_gpu_alignment() -> None:
    """Sizes on a GPU round up to its own alignment."""
    p = plan(
        ["blk.0.w", "blk.1.w"],
        2,
        gpus=[Dev("0")],
        gpu_layers=[GL("0", layers=[1])],
        gpu_alignment={0: 256},
        alignment=16,
    )
    assert p.cpu_weights == [64, 0, 0] and p.gpu_weights == [[0, 256, 0]]
    assert p.get("blk.1.w").size == 256 and p.get("blk.1.w").nbytes == 60  # type: ignore[union-attr]


def test_same_name_on_same_device_is_reused() -> None:
    """Asking again for an existing name on a device reuses it: no extra memory."""
    p = plan([info("blk.0.w"), info("blk.0.w")], 1)
    assert len(p.tensors) == 1 and p.cpu_weights == [64, 0]
    assert p.targets["blk.0.w"] == ["blk.0.w", "blk.0.w"]


def test_plan_of_generated_model(make_llama: Callable[..., LlamaModel]) -> None:
    """On a generated file, the sums equal the aligned sizes of all planned tensors."""
    m = make_llama(block_count=3, rope_freqs=True, type_mix=(Q.Q8_0, Q.F16, Q.Q4_1))
    with GGUFFile(m.path) as f:
        p = plan_placement(
            f.tensors,
            Config(f.metadata).block_count(),
            path=f.path,
            gpus=[Dev("a")],
            gpu_layers=[GL("a", layers=[2, 3])],
        )
    total = p.input_weights + sum(p.cpu_weights) + sum(map(sum, p.gpu_weights))
    assert total == sum(t.size for t in p.tensors)
    for t in p.tensors:
        assert t.nbytes == nbytes_of(t.dtype, t.ne) and t.size == a32(t.nbytes)
    assert p.get("output.weight").device == 0  # type: ignore[union-attr]
    assert [p.get(f"blk.{i}.rope_freqs.weight").device for i in range(3)] == [CPU, CPU, 0]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("blk.0.attn_q.weight", ("blk.0", "attn_q.weight")),
        ("mm.1.bias", ("mm.1", "bias")),
        ("v.blk.3.ffn.weight", ("v.blk.3", "ffn.weight")),
        ("output_norm.weight", ("output_norm", "weight")),
        ("output.weight", ("output", "weight")),
        ("blk.0", ("blk", "0")),
        ("token_embd", ("token_embd", "")),
    ],
)
def test_group_key(name: str, key: tuple[str, str]) -> None:
    """blk/mm followed by two parts joins the number into the group (docs/models-and-memory.md)."""
    assert group_key(name) == key


def test_group_layers() -> None:
    """group_layers maps group -> rest of name -> tensor."""
    infos = [info("blk.0.a.weight"), info("blk.0.b.weight"), info("output.weight")]
    groups = group_layers(infos)
    assert list(groups) == ["blk.0", "output"]
    assert groups["blk.0"]["b.weight"] is infos[1]
