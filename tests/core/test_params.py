"""Tests for mlplug.params: enums, CacheConfig and BackendParams."""

from __future__ import annotations

import pydantic
import pytest

from mlplug.dtypes import DType
from mlplug.layers import GPULayers, GPULayersList
from mlplug.params import (
    BackendCacheConfig,
    BackendParams,
    CacheConfig,
    FlashAttentionType,
    SamplingMode,
    flash_attention_type_string,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [(-1, "Auto"), (0, "Disabled"), (1, "Enabled"), (5, "unknown"), (7, "unknown")],
)
def test_flash_attention_string(value: int, text: str) -> None:
    """FlashAttentionType prints Auto/Disabled/Enabled, and unknown for any other int."""
    fa = FlashAttentionType(value)
    assert fa == value
    assert str(fa) == text
    assert fa.string() == text
    assert fa.log_value() == text
    assert f"{fa}" == text
    assert flash_attention_type_string(value) == text


def test_flash_attention_members() -> None:
    """The named members have the llama.cpp values; unknown values are not listed."""
    assert [int(m) for m in FlashAttentionType] == [-1, 0, 1]
    assert FlashAttentionType(7) is FlashAttentionType(7)
    assert f"{FlashAttentionType.AUTO:d}" == "-1"
    assert flash_attention_type_string(-2) == "unknown"


def test_flash_attention_rejects_non_int32() -> None:
    """Values outside int32 and non-integers are not flash-attention settings."""
    with pytest.raises(ValueError):
        FlashAttentionType(2**31)
    with pytest.raises(ValueError):
        FlashAttentionType("Auto")  # type: ignore[arg-type]


def test_sampling_mode() -> None:
    """SamplingMode has NEAREST=0 and BILINEAR=1."""
    assert (SamplingMode.NEAREST, SamplingMode.BILINEAR) == (0, 1)


def test_cache_config_defaults() -> None:
    """CacheConfig defaults to no padding, unpermuted V and an unset mask dtype."""
    cfg = CacheConfig()
    assert (cfg.cache_padding, cfg.permuted_v, cfg.mask_dtype) == (0, False, DType.OTHER)
    cfg = CacheConfig(cache_padding=256, mask_dtype=DType.F16)
    assert cfg.mask_dtype is DType.F16


def test_cache_config_validation() -> None:
    """A negative padding, an unknown field or an assignment is rejected."""
    with pytest.raises(pydantic.ValidationError, match="cache_padding"):
        CacheConfig(cache_padding=-1)
    with pytest.raises(pydantic.ValidationError, match="padding"):
        CacheConfig(padding=1)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        CacheConfig().permuted_v = True


def test_backend_cache_config_protocol() -> None:
    """Any object with cache_config() is a BackendCacheConfig."""

    class WithCache:
        def cache_config(self) -> CacheConfig:
            return CacheConfig(cache_padding=256, permuted_v=True)

    assert isinstance(WithCache(), BackendCacheConfig)
    assert not isinstance(object(), BackendCacheConfig)


def test_backend_params_defaults() -> None:
    """BackendParams defaults: dry run, default threads, no GPU layers, flash attention off."""
    p = BackendParams()
    assert p.alloc_memory is False
    assert p.num_threads == 0
    assert p.gpu_layers == [] and isinstance(p.gpu_layers, GPULayersList)
    assert p.flash_attention is FlashAttentionType.DISABLED


def test_backend_params_num_threads_negative() -> None:
    """A negative thread count is a ValidationError naming num_threads."""
    with pytest.raises(pydantic.ValidationError, match="num_threads"):
        BackendParams(num_threads=-1)


def test_backend_params_rejects_bad_values() -> None:
    """Unknown fields, bad layers and non-int flash attention are rejected."""
    with pytest.raises(pydantic.ValidationError, match="threads"):
        BackendParams(threads=2)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="gpu_layers"):
        BackendParams(gpu_layers=[{"id": "0", "Layers": [-1]}])  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match="flash_attention"):
        BackendParams(flash_attention="on")  # type: ignore[arg-type]


def test_backend_params_flash_attention_any_int() -> None:
    """flash_attention takes the named values and other ints, as the reference's int32 does."""
    auto = BackendParams(flash_attention=-1)  # type: ignore[arg-type]
    assert auto.flash_attention is FlashAttentionType.AUTO
    other = BackendParams(flash_attention=9)  # type: ignore[arg-type]
    assert str(other.flash_attention) == "unknown"


def test_backend_params_gpu_layers_keeps_entries() -> None:
    """gpu_layers becomes a GPULayersList holding the caller's GPULayers objects."""
    entry = GPULayers(id="0", library="CUDA", layers=[2, 0, 1])
    p = BackendParams(gpu_layers=GPULayersList([entry]))
    assert isinstance(p.gpu_layers, GPULayersList)
    assert p.gpu_layers[0] is entry
    assert str(p.gpu_layers) == "3[ID:0 Layers:3(0..2)]"
    assert entry.layers == [0, 1, 2]


def test_backend_params_json_round_trip() -> None:
    """BackendParams reads its own JSON back, GPU layers included."""
    p = BackendParams(
        alloc_memory=True,
        num_threads=4,
        gpu_layers=GPULayersList([GPULayers(id="1", library="ROCm", layers=[3, 4])]),
        flash_attention=FlashAttentionType.AUTO,
    )
    back = BackendParams.model_validate_json(p.model_dump_json())
    assert back == p
    assert back.gpu_layers[0].library == "ROCm"


def test_backend_params_frozen() -> None:
    """BackendParams cannot be changed after creation."""
    with pytest.raises(pydantic.ValidationError):
        BackendParams().num_threads = 3
