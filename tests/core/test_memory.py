"""Tests for mlplug.memory: DeviceMemory, BackendMemory, human_bytes2 and ErrNoMem's text."""

from __future__ import annotations

import logging

import pydantic
import pytest

from mlplug.device import DeviceID
from mlplug.errors import ErrNoMem
from mlplug.memory import BackendMemory, DeviceMemory, human_bytes2


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1073741824, "1.0 GiB"),
        (479199232, "457.0 MiB"),
        (5 * 2**40, "5120.0 GiB"),
    ],
)
def test_human_bytes2(n: int, text: str) -> None:
    """human_bytes2 uses GiB/MiB/KiB with one decimal and plain bytes below 1 KiB."""
    assert human_bytes2(n) == text


def test_device_memory_size() -> None:
    """size() adds weights, cache and graph."""
    assert DeviceMemory(weights=[1, 2], cache=[3], graph=4).size() == 10
    assert DeviceMemory().size() == 0


def test_device_memory_mutable_and_validated() -> None:
    """A backend can fill the record in; negative values are rejected naming the field."""
    m = DeviceMemory(name="CPU", weights=[0, 0])
    m.weights[1] += 5
    m.graph = 7
    assert m.size() == 12
    with pytest.raises(pydantic.ValidationError, match="graph"):
        m.graph = -1
    with pytest.raises(pydantic.ValidationError, match="weights"):
        DeviceMemory(weights=[-1])
    with pytest.raises(pydantic.ValidationError, match="layers"):
        DeviceMemory(layers=[1])  # type: ignore[call-arg]
    assert DeviceMemory.model_validate({"Weights": [1]}).weights == [1]
    assert DeviceMemory(id="0", library="CUDA").device_id == DeviceID(id="0", library="CUDA")


def test_device_memory_log_value() -> None:
    """log_value lists ID, Weights, Cache, Graph only when present."""
    assert DeviceMemory(id="GPU-abc", weights=[0, 0], cache=[0], graph=0).log_value() == {}
    assert DeviceMemory(id="GPU-abc", weights=[0, 100, 0], graph=4096).log_value() == {
        "ID": "GPU-abc",
        "Weights": [0, 100, 0],
        "Graph": 4096,
    }
    assert DeviceMemory(cache=[1]).log_value() == {"Cache": [1]}
    assert list(DeviceMemory(id="x", graph=1, cache=[2], weights=[3]).log_value()) == [
        "ID",
        "Weights",
        "Cache",
        "Graph",
    ]


def test_backend_memory_log_value() -> None:
    """log_value has InputWeights and one group per device name, empty groups left out."""
    bm = BackendMemory(
        input_weights=10,
        cpu=DeviceMemory(name="CPU", weights=[1]),
        gpus=[
            DeviceMemory(id="GPU-a", name="CUDA0", graph=5),
            DeviceMemory(id="GPU-b", name="CUDA1"),
            DeviceMemory(cache=[3]),
        ],
    )
    assert bm.log_value() == {
        "InputWeights": 10,
        "CPU": {"Weights": [1]},
        "CUDA0": {"ID": "GPU-a", "Graph": 5},
        "Cache": [3],
    }
    assert BackendMemory().log_value() == {}


def _example() -> BackendMemory:
    return BackendMemory(
        input_weights=1024,
        cpu=DeviceMemory(name="CPU", weights=[512, 0], cache=[0, 0], graph=2048),
        gpus=[
            DeviceMemory(
                id="GPU-a",
                library="CUDA",
                name="CUDA0",
                weights=[0, 1536],
                cache=[1024, 0],
                graph=2**30,
            ),
            DeviceMemory(id="GPU-b", library="CUDA", name="CUDA1", weights=[0, 0], cache=[0, 0]),
        ],
    )


def test_backend_memory_log_records() -> None:
    """log emits weights, cache and graph per GPU then CPU, skipping zeros, then the total."""
    assert _example().log_records() == [
        ("model weights", {"device": "CUDA0", "size": "1.5 KiB"}),
        ("model weights", {"device": "CPU", "size": "1.5 KiB"}),
        ("kv cache", {"device": "CUDA0", "size": "1.0 KiB"}),
        ("compute graph", {"device": "CUDA0", "size": "1.0 GiB"}),
        ("compute graph", {"device": "CPU", "size": "2.0 KiB"}),
        ("total memory", {"size": "1.0 GiB"}),
    ]
    assert BackendMemory().log_records() == []


def test_backend_memory_log(caplog: pytest.LogCaptureFixture) -> None:
    """log writes slog-style lines at the given level to the given logger."""
    logger = logging.getLogger("test.memory")
    with caplog.at_level(logging.INFO, logger="test.memory"):
        _example().log(logging.INFO, logger)
    assert [r.getMessage() for r in caplog.records] == [
        'model weights device=CUDA0 size="1.5 KiB"',
        'model weights device=CPU size="1.5 KiB"',
        'kv cache device=CUDA0 size="1.0 KiB"',
        'compute graph device=CUDA0 size="1.0 GiB"',
        'compute graph device=CPU size="2.0 KiB"',
        'total memory size="1.0 GiB"',
    ]
    assert {r.levelno for r in caplog.records} == {logging.INFO}


def test_backend_memory_log_default_logger(caplog: pytest.LogCaptureFixture) -> None:
    """Without a logger, log uses mlplug.memory; an empty device name is quoted."""
    bm = BackendMemory(cpu=DeviceMemory(graph=1))
    with caplog.at_level(logging.DEBUG, logger="mlplug.memory"):
        bm.log(logging.DEBUG)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("mlplug.memory", 'compute graph device="" size="1 B"'),
        ("mlplug.memory", 'total memory size="1 B"'),
    ]


def test_go_repr_and_err_no_mem() -> None:
    """ErrNoMem's message is Go's %+v of the BackendMemory, as ollama prints it."""
    bm = BackendMemory(input_weights=10, cpu=DeviceMemory(name="CPU", weights=[1, 2], cache=[0, 0]))
    expected = (
        "insufficient memory - required allocations: {InputWeights:10 CPU:{DeviceID:{ID: Library:}"
        " Name:CPU Weights:[1 2] Cache:[0 0] Graph:0} GPUs:[]}"
    )
    err = ErrNoMem(bm)
    assert str(err) == expected
    assert isinstance(err, MemoryError)
    assert err.backend_memory is bm


def test_go_repr_with_gpus() -> None:
    """GPUs print space-separated, empty lists as []."""
    bm = BackendMemory(
        gpus=[
            DeviceMemory(id="GPU-a", library="CUDA", name="CUDA0", weights=[5], graph=3),
            DeviceMemory(id="1", library="ROCm", name="ROCm0"),
        ]
    )
    assert bm.go_repr() == (
        "{InputWeights:0 CPU:{DeviceID:{ID: Library:} Name: Weights:[] Cache:[] Graph:0} "
        "GPUs:[{DeviceID:{ID:GPU-a Library:CUDA} Name:CUDA0 Weights:[5] Cache:[] Graph:3} "
        "{DeviceID:{ID:1 Library:ROCm} Name:ROCm0 Weights:[] Cache:[] Graph:0}]}"
    )


def test_json_forms() -> None:
    """model_dump is snake_case (inspect --json); go_json uses the Go keys."""
    bm = BackendMemory(
        input_weights=1,
        cpu=DeviceMemory(name="CPU", weights=[2], cache=[3], graph=4),
        gpus=[DeviceMemory(id="0", library="CUDA", name="CUDA0")],
    )
    assert bm.model_dump() == {
        "input_weights": 1,
        "cpu": {"id": "", "library": "", "name": "CPU", "weights": [2], "cache": [3], "graph": 4},
        "gpus": [
            {"id": "0", "library": "CUDA", "name": "CUDA0", "weights": [], "cache": [], "graph": 0}
        ],
    }
    assert bm.go_json() == {
        "InputWeights": 1,
        "CPU": {"id": "", "Name": "CPU", "Weights": [2], "Cache": [3], "Graph": 4},
        "GPUs": [
            {"id": "0", "backend": "CUDA", "Name": "CUDA0", "Weights": [], "Cache": [], "Graph": 0}
        ],
    }
    assert BackendMemory.model_validate(bm.model_dump()) == bm
    assert BackendMemory.model_validate(bm.go_json()) == bm
    back = BackendMemory.model_validate({"CPU": {"Weights": None}, "GPUs": None})
    assert back == BackendMemory()
