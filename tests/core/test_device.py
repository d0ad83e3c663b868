"""Tests for mlplug.device: DeviceInfo methods, JSON keys and the device-list helpers."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from mlplug.device import (
    DeviceComparison,
    DeviceID,
    DeviceInfo,
    SystemInfo,
    by_free_memory_key,
    by_library,
    by_performance,
    flash_attention_supported,
    get_visible_devices_env,
    library_paths,
    physical_device_key,
    sort_by_free_memory,
)
from mlplug.paths import LIB_PATH_ENV

UNIQUE = DeviceComparison.UNIQUE_DEVICE
SAME = DeviceComparison.SAME_BACKEND_DEVICE
DUPLICATE = DeviceComparison.DUPLICATE_DEVICE


def dev(library: str = "CUDA", id: str = "0", **kw: Any) -> DeviceInfo:
    """Build a DeviceInfo for a test."""
    return DeviceInfo(library=library, id=id, **kw)


def test_device_comparison_values() -> None:
    """DeviceComparison values are 0, 1, 2."""
    assert (UNIQUE, SAME, DUPLICATE) == (0, 1, 2)


def test_device_id_equality_and_hash() -> None:
    """DeviceIDs compare field-wise and can be dict keys."""
    assert DeviceID(id="0", library="CUDA") == DeviceID(id="0", library="CUDA")
    assert DeviceID(id="0", library="CUDA") != DeviceID(id="0", library="cuda")
    assert len({DeviceID(id="0"), DeviceID(id="0"), DeviceID(id="1")}) == 2
    assert dev().device_id == DeviceID(id="0", library="CUDA")


def test_device_info_defaults_and_frozen() -> None:
    """DeviceInfo defaults are zero values; the record is frozen."""
    d = DeviceInfo()
    assert (d.id, d.library, d.name, d.total_memory, d.library_path) == ("", "", "", 0, [])
    with pytest.raises(pydantic.ValidationError):
        d.name = "x"


def test_device_info_validation() -> None:
    """Negative memory and unknown fields are ValidationErrors naming the field."""
    with pytest.raises(pydantic.ValidationError, match="total_memory"):
        DeviceInfo(total_memory=-1)
    with pytest.raises(pydantic.ValidationError, match="free_memory"):
        DeviceInfo(free_memory=-5)
    with pytest.raises(pydantic.ValidationError, match="vram"):
        DeviceInfo(vram=1)  # type: ignore[call-arg]


def test_device_info_json_keys() -> None:
    """to_json_dict uses the Go keys and drops empty omitempty fields."""
    d = DeviceInfo(
        id="0",
        library="CUDA",
        name="CUDA0",
        description="NVIDIA GeForce RTX 4090",
        filter_id="2",
        integrated=True,
        pci_id="0000:01:00.0",
        total_memory=100,
        free_memory=50,
        compute_major=8,
        compute_minor=9,
        driver_major=12,
        driver_minor=4,
        library_path=["/lib/ollama", "/lib/ollama/cuda_v12"],
    )
    assert d.to_json_dict() == {
        "id": "0",
        "backend": "CUDA",
        "name": "CUDA0",
        "description": "NVIDIA GeForce RTX 4090",
        "filter_id": "2",
        "integration": True,
        "pci_id": "0000:01:00.0",
        "total_memory": 100,
        "free_memory": 50,
        "ComputeMajor": 8,
        "ComputeMinor": 9,
        "driver_major": 12,
        "driver_minor": 4,
        "LibraryPath": ["/lib/ollama", "/lib/ollama/cuda_v12"],
    }
    assert DeviceInfo.model_validate(d.to_json_dict()) == d
    assert DeviceInfo().to_json_dict() == {
        "id": "",
        "name": "",
        "description": "",
        "total_memory": 0,
        "ComputeMajor": 0,
        "ComputeMinor": 0,
        "LibraryPath": [],
    }


def test_device_info_json_decoding() -> None:
    """Exact Go keys and field names validate; null lists become empty."""
    d = DeviceInfo.model_validate({"backend": "ROCm", "integration": True, "LibraryPath": None})
    assert (d.library, d.integrated, d.library_path) == ("ROCm", True, [])
    assert DeviceInfo.model_validate_json('{"ComputeMajor": 9, "id": "1"}').compute_major == 9
    assert DeviceInfo(compute_major=7).compute_major == 7


def test_device_info_go_decoding() -> None:
    """from_json_dict matches keys case-insensitively, ignores unknown keys and nulls."""
    d = DeviceInfo.from_json_dict(
        {"ID": "3", "Backend": "CUDA", "computemajor": 8, "Name": None, "new_field": 1}
    )
    assert (d.id, d.library, d.compute_major, d.name) == ("3", "CUDA", 8, "")
    with pytest.raises(pydantic.ValidationError, match="total_memory"):
        DeviceInfo.from_json_dict({"total_memory": -1})


def test_system_info() -> None:
    """SystemInfo uses the key threads and omits zero fields."""
    s = SystemInfo(thread_count=8, total_memory=10)
    assert s.to_json_dict() == {"threads": 8, "total_memory": 10}
    assert SystemInfo().to_json_dict() == {}
    assert SystemInfo.model_validate({"threads": 2}).thread_count == 2
    with pytest.raises(pydantic.ValidationError, match="free_swap"):
        SystemInfo(free_swap=-1)


@pytest.mark.parametrize(
    ("library", "major", "minor", "text"),
    [
        ("ROCm", 9, 10, "gfx90a"),
        ("rocm", 0x11, 0, "gfx1100"),
        ("ROCm", 0x10, 0x30, "gfx1030"),
        ("ROCm", -1, -1, "gfx-1-1"),
        ("CUDA", 8, 9, "8.9"),
        ("CUDA", -1, -1, "-1.-1"),
    ],
)
def test_compute(library: str, major: int, minor: int, text: str) -> None:
    """compute() gives gfx hex for ROCm (any case) and major.minor otherwise."""
    assert dev(library, compute_major=major, compute_minor=minor).compute() == text


def test_driver() -> None:
    """driver() is major.minor."""
    assert dev(driver_major=12, driver_minor=4).driver() == "12.4"
    assert dev().driver() == "0.0"


@pytest.mark.parametrize(
    ("library", "size"),
    [("Metal", 536870912), ("CUDA", 479199232), ("cpu", 479199232), ("metal", 479199232)],
)
def test_minimum_memory(library: str, size: int) -> None:
    """Metal reserves 512 MiB, every other library 457 MiB."""
    assert dev(library).minimum_memory() == size


@pytest.mark.parametrize(
    ("library", "description", "needs"),
    [
        ("CUDA", "NVIDIA GeForce RTX 3080", True),
        ("ROCm", "AMD Radeon RX 7900 XTX", True),
        ("Metal", "Apple M1 Pro", False),
        ("cpu", "CPU", False),
        ("CUDA", "NVIDIA A100 80GB PCIe MIG 7g.80gb", True),
        ("CUDA", "NVIDIA A100-SXM4-40GB MIG 3g.20gb", True),
        ("CUDA", "NVIDIA H100 PCIe MIG 1g.10gb", True),
        ("CUDA", "NVIDIA A100 80GB PCIe", True),
    ],
)
def test_needs_init_validation(library: str, description: str, needs: bool) -> None:
    """CUDA and ROCm devices need init validation at v0.17.5, MIG devices included."""
    assert dev(library, description=description).needs_init_validation() is needs


def test_add_init_validation() -> None:
    """add_init_validation sets GGML_CUDA_INIT=1 whatever the library; None is a TypeError."""
    env: dict[str, str] = {}
    dev("Vulkan").add_init_validation(env)
    assert env == {"GGML_CUDA_INIT": "1"}
    with pytest.raises(TypeError):
        dev().add_init_validation(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("library", "preferred"), [("CUDA", True), ("ROCm", True), ("Vulkan", False)]
)
def test_preferred_library(library: str, preferred: bool) -> None:
    """preferred_library is true for CUDA and ROCm, whatever the other device is."""
    assert dev(library).preferred_library(dev("Vulkan")) is preferred
    assert dev(library).preferred_library(dev("CUDA")) is preferred


P = "0000:01:00.0"


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (
            dev("CUDA", "0", pci_id=P, description="NVIDIA GeForce RTX 4060 Ti"),
            dev("Vulkan", "2", description="NVIDIA GeForce RTX 4060 Ti"),
            UNIQUE,
        ),
        (
            dev("ROCm", "0", pci_id="0000:03:00.0", description="AMD Radeon RX 6400"),
            dev("Vulkan", "0", description="AMD Radeon RX 6400 (RADV NAVI24)"),
            UNIQUE,
        ),
        (
            dev("CUDA", "0", pci_id=P),
            dev("Vulkan", "0", description="Intel(R) UHD Graphics 770"),
            UNIQUE,
        ),
        (dev("CUDA", "0", pci_id=P), dev("CUDA", "1", pci_id=P), SAME),
        (dev("CUDA", "0", pci_id=P), dev("Vulkan", "1", pci_id=P), DUPLICATE),
        (dev("CUDA", "0"), dev("CUDA", "0"), SAME),
        (dev("CUDA", "0"), dev("Vulkan", "0"), UNIQUE),
    ],
)
def test_compare(a: DeviceInfo, b: DeviceInfo, expected: DeviceComparison) -> None:
    """compare follows v0.17.5 (PCI ids only, no description matching), in both directions."""
    assert a.compare(b) is expected
    assert b.compare(a) is expected


def test_is_better() -> None:
    """is_better compares the suffix after the first '_' of the last library path as strings."""

    def lp(*paths: str) -> DeviceInfo:
        return dev(library_path=list(paths))

    v12, v13 = lp("/l", "/lib/ollama/cuda_v12"), lp("/l", "/lib/ollama/cuda_v13")
    assert v12.is_better(v13) is True
    assert v13.is_better(v12) is False
    assert v12.is_better(v12) is False
    assert v12.is_better(lp("/lib/ollama/rocm_v6")) is False
    assert v12.is_better(lp("/lib/ollama/cuda_v9")) is True
    assert lp("/lib/ollama/cuda").is_better(lp("/lib/ollama/cuda_v9")) is False
    assert lp("/home/my_user/cuda_v12").is_better(lp("/home/my_user/cuda_v13")) is True


def test_is_better_empty_library_path() -> None:
    """is_better with an empty library_path raises IndexError."""
    with pytest.raises(IndexError):
        dev().is_better(dev(library_path=["/x_1"]))
    with pytest.raises(IndexError):
        dev(library_path=["/x_1"]).is_better(dev())


def test_by_free_memory() -> None:
    """Integrated devices sort first, then less free memory; reversed gives scheduling order."""
    big = dev(id="big", free_memory=100)
    small = dev(id="small", free_memory=10)
    igpu = dev(id="igpu", integrated=True, free_memory=1000)
    assert by_free_memory_key(igpu) < by_free_memory_key(small) < by_free_memory_key(big)
    assert [d.id for d in sort_by_free_memory([big, igpu, small])] == ["igpu", "small", "big"]
    assert [d.id for d in sort_by_free_memory([big, igpu, small], reverse=True)] == [
        "big",
        "small",
        "igpu",
    ]


def test_by_performance() -> None:
    """by_performance groups by integrated, in order of first appearance."""
    d, i, d2 = dev(id="d"), dev(id="i", integrated=True), dev(id="d2")
    assert by_performance([d, i, d2]) == [[d, d2], [i]]
    assert by_performance([i, d]) == [[i], [d]]
    assert by_performance([]) == []


def test_by_library() -> None:
    """by_library groups by exact library string."""
    a, b, c, v = dev("CUDA", "a"), dev("ROCm", "b"), dev("CUDA", "c"), dev("Vulkan", "v")
    assert by_library([a, b, c]) == [[a, c], [b]]
    assert by_library([a, b, c, v]) == [[a, c], [b], [v]]
    assert by_library([dev("cuda"), dev("CUDA")]) == [[dev("cuda")], [dev("CUDA")]]
    assert by_library([]) == []


def test_library_paths() -> None:
    """library_paths starts with the base and appends unseen entries in order."""
    devs = [dev(library_path=["L", "X"]), dev(library_path=["L", "Y", "X"])]
    assert library_paths(devs, base=["L"]) == ["L", "X", "Y"]
    assert library_paths([], base=["L"]) == ["L"]


def test_library_paths_default_base(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a base, library_paths starts with MLPLUG_LIB_PATH's entries."""
    monkeypatch.setenv(LIB_PATH_ENV, "L")
    assert library_paths([dev(library_path=["L", "X"])]) == ["L", "X"]
    monkeypatch.delenv(LIB_PATH_ENV)
    assert library_paths([]) == []


def cuda(driver: int, major: int, minor: int) -> DeviceInfo:
    """Build a CUDA device with a driver major version and a compute capability."""
    return dev(driver_major=driver, compute_major=major, compute_minor=minor)


@pytest.mark.parametrize(
    ("devices", "supported"),
    [
        ([cuda(12, 5, 0)], True),
        ([cuda(12, 6, 0)], True),
        ([cuda(12, 6, 1)], True),
        ([cuda(12, 6, 2)], True),
        ([cuda(12, 7, 2)], False),
        ([cuda(12, 7, 0)], True),
        ([cuda(12, 7, 5)], True),
        ([cuda(0, 8, 9)], False),
        ([cuda(12, -1, -1)], True),
        ([cuda(12, 8, 9), cuda(12, 5, 0)], True),
        ([cuda(12, 8, 9), cuda(12, 7, 2)], False),
        ([dev("Metal")], True),
        ([], True),
        ([dev("ROCm")], True),
        ([dev("Vulkan")], True),
        ([dev("cpu")], True),
        ([dev("Other", name="Metal")], True),
        ([dev("CPU")], False),
        ([dev("OpenCL")], False),
        ([dev("cpu"), dev("OpenCL")], False),
    ],
)
def test_flash_attention_supported(devices: list[DeviceInfo], supported: bool) -> None:
    """v0.17.5 tests the CUDA driver major (>= 7) and rejects compute 7.2 and unknown libraries."""
    assert flash_attention_supported(devices) is supported


@pytest.mark.parametrize(
    ("devices", "must_filter", "os_name", "expected"),
    [
        ([dev("CUDA", "3")], True, "linux", {"CUDA_VISIBLE_DEVICES": "3"}),
        ([dev("CUDA", "3"), dev("CUDA", "4")], True, "linux", {"CUDA_VISIBLE_DEVICES": "3,4"}),
        (
            [dev("CUDA", "0", filter_id="0"), dev("CUDA", "1", filter_id="2")],
            True,
            "linux",
            {"CUDA_VISIBLE_DEVICES": "0,2"},
        ),
        ([dev("CUDA", "0", filter_id="0"), dev("CUDA", "1", filter_id="2")], False, "linux", {}),
        ([dev("Vulkan", "0", filter_id="1")], True, "linux", {}),
        (
            [dev("ROCm", "0"), dev("ROCm", "1", filter_id="3")],
            True,
            "linux",
            {"ROCR_VISIBLE_DEVICES": "0,3"},
        ),
        (
            [dev("ROCm", "0"), dev("ROCm", "1", filter_id="3")],
            True,
            "windows",
            {"HIP_VISIBLE_DEVICES": "0,3"},
        ),
        (
            [dev("ROCm", "0"), dev("ROCm", "1", filter_id="3")],
            False,
            "darwin",
            {"HIP_VISIBLE_DEVICES": "0,3"},
        ),
        ([], True, "linux", None),
        ([dev("Metal", "0")], True, "darwin", {}),
        (
            [dev("CUDA", "1"), dev("ROCm", "0"), dev("CUDA", "1")],
            True,
            "linux",
            {"CUDA_VISIBLE_DEVICES": "1,1", "ROCR_VISIBLE_DEVICES": "0"},
        ),
    ],
)
def test_get_visible_devices_env(
    devices: list[DeviceInfo], must_filter: bool, os_name: str, expected: dict[str, str] | None
) -> None:
    """Visible-device variables follow v0.17.5: no Vulkan variable, CUDA only when filtering."""
    assert get_visible_devices_env(devices, must_filter, os_name) == expected


def test_get_visible_devices_env_none_and_default_os() -> None:
    """None is treated like an empty list; the OS defaults to the running platform."""
    assert get_visible_devices_env(None, True) is None
    env = get_visible_devices_env([dev("ROCm", "0")], True)
    assert env is not None and list(env.values()) == ["0"]


def test_physical_device_key() -> None:
    """One physical device seen by several plugins gets one key."""
    assert physical_device_key(dev("cpu", "0")) == physical_device_key(dev("CPU", "")) == "cpu:host"
    assert physical_device_key(dev("", "", name="CPU")) == "cpu:host"
    a = dev("CUDA", "0", pci_id="0000:01:00.0", description="X")
    b = dev("torch", "cuda:0", pci_id="00000000:01:00.0", description="Y")
    assert physical_device_key(a) == physical_device_key(b) == "pci:0000:01:00.0"
    assert physical_device_key(dev(pci_id="0000:0A:00.0")) == "pci:0000:0a:00.0"
    assert physical_device_key(dev(pci_id="weird")) == "pci:weird"
    c = dev("Vulkan", "0", description="GPU", total_memory=8)
    d = dev("torch", "7", description="GPU", total_memory=8)
    assert physical_device_key(c) == physical_device_key(d) == "desc:GPU:8"
    assert physical_device_key(dev("Metal", "1")) == "dev:Metal:1"
    assert (
        physical_device_key(dev("Vulkan", "0", description="GPU", total_memory=9)) != "desc:GPU:8"
    )
