"""Device enumeration and device selection of the torch backend."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("mlplug_torch")

import torch

from mlplug import BackendLoadError
from mlplug.device import physical_device_key
from mlplug.sysinfo import cpu_description
from mlplug_torch import device as device_mod
from mlplug_torch.device import devices, select_device


def test_cpu_is_listed_first_as_the_shared_host_device() -> None:
    """The CPU record uses mlplug.sysinfo, so all plugins' CPUs are one physical device."""
    cpu = devices()[0]
    assert (cpu.id, cpu.library, cpu.name) == ("0", "cpu", "CPU")
    assert cpu.description == cpu_description()
    assert cpu.total_memory > 0 and 0 < cpu.free_memory <= cpu.total_memory
    assert physical_device_key(cpu) == "cpu:host"


def test_cuda_devices_are_described(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each CUDA GPU gets name, memory, compute capability, driver and PCI id."""
    props = SimpleNamespace(
        name="NVIDIA H100",
        major=9,
        minor=0,
        uuid="1234-abcd",
        pci_bus_id=0x41,
        pci_device_id=0,
        pci_domain_id=0,
        is_integrated=False,
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (60 << 30, 80 << 30))
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(device_mod, "_driver_version", lambda hip: (12, 8))
    gpu = devices()[1]
    assert (gpu.id, gpu.library, gpu.name, gpu.description) == (
        "GPU-1234-abcd",
        "CUDA",
        "CUDA0",
        "NVIDIA H100",
    )
    assert (gpu.total_memory, gpu.free_memory) == (80 << 30, 60 << 30)
    assert (gpu.compute_major, gpu.compute_minor, gpu.driver_major, gpu.driver_minor) == (
        9,
        0,
        12,
        8,
    )
    assert gpu.pci_id == "0000:41:00.0" and not gpu.integrated


def test_rocm_devices_report_the_gfx_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ROCm the library is ROCm and the compute capability is the gfx target."""
    props = SimpleNamespace(
        name="AMD Instinct MI250X",
        major=9,
        minor=0,
        gcnArchName="gfx90a:sramecc+",
        pci_bus_id=0x8,
        pci_device_id=0,
        pci_domain_id=0,
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (1, 2))
    monkeypatch.setattr(torch.version, "hip", "6.2.41133-dd7f95766")
    gpu = devices()[1]
    assert (gpu.library, gpu.name, gpu.compute()) == ("ROCm", "ROCm0", "gfx90a")
    assert (gpu.driver_major, gpu.driver_minor) == (6, 2)


def test_a_broken_gpu_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU that cannot be queried does not break the enumeration."""

    def boom(i: int) -> object:
        msg = "no device"
        raise RuntimeError(msg)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", boom)
    assert [d.library for d in devices()] == ["cpu"]


def test_select_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The argument, else MLPLUG_TORCH_DEVICE, else CUDA if available, else the CPU."""
    monkeypatch.delenv("MLPLUG_TORCH_DEVICE", raising=False)
    expect = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expect
    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("MLPLUG_TORCH_DEVICE", "cpu")
    assert select_device() == torch.device("cpu")
    with pytest.raises(BackendLoadError, match="invalid device"):
        select_device("nonsense")
    with pytest.raises(BackendLoadError):
        select_device("xla")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_a_load_error() -> None:
    """Asking for a GPU torch does not see fails cleanly."""
    with pytest.raises(BackendLoadError, match="no CUDA"):
        select_device("cuda:0")


def test_plugin_import_does_not_import_torch() -> None:
    """``import mlplug_torch.plugin`` (what discovery does) leaves torch unimported."""
    code = "import mlplug, mlplug_torch.plugin, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_with_priority_50() -> None:
    """The entry point registers ``torch`` between cpu_numpy (10) and ggml (100)."""
    from mlplug_torch.plugin import mlplug_register_backends

    seen: dict[str, int] = {}

    def register(name: str, factory: object, *, priority: int = 0, devices: object = None) -> None:
        seen[name] = priority

    mlplug_register_backends(register)
    assert seen == {"torch": 50}
