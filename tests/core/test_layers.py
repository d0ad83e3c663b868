"""Tests for mlplug.layers: GPULayers, GPULayersList and the --gpu-layers parser."""

from __future__ import annotations

import sys

import pydantic
import pytest

from mlplug.device import DeviceID
from mlplug.layers import MAX_PARSED_LAYER, GPULayers, GPULayersList, parse_gpu_layers


def test_first_layer() -> None:
    """first_layer is the minimum without sorting, sys.maxsize when empty."""
    g = GPULayers(id="0", layers=[2, 0, 1])
    assert g.first_layer() == 0
    assert g.layers == [2, 0, 1]
    assert GPULayers().first_layer() == sys.maxsize


@pytest.mark.parametrize(
    ("gid", "layers", "text", "after"),
    [
        ("0", [2, 0, 1], "ID:0 Layers:3(0..2)", [0, 1, 2]),
        ("GPU-1", [7, 5], "ID:GPU-1 Layers:2[5 7]", [5, 7]),
        ("x", [4], "ID:x Layers:1(4..4)", [4]),
        ("x", [1, 1], "ID:x Layers:2[1 1]", [1, 1]),
        ("x", [], "", []),
    ],
)
def test_gpu_layers_str(gid: str, layers: list[int], text: str, after: list[int]) -> None:
    """str() prints id and count with a range or a list, and sorts the layers in place."""
    g = GPULayers(id=gid, library="CUDA", layers=layers)
    assert str(g) == text
    assert g.layers == after


def test_gpu_layers_json_keys() -> None:
    """GPULayers uses the Go JSON keys id, backend (omitempty) and Layers; null is []."""
    g = GPULayers(id="0", library="CUDA", layers=[1])
    assert g.to_json_dict() == {"id": "0", "backend": "CUDA", "Layers": [1]}
    assert GPULayers(id="0").to_json_dict() == {"id": "0", "Layers": []}
    back = GPULayers.model_validate({"id": "0", "backend": "CUDA", "Layers": None})
    assert back == GPULayers(id="0", library="CUDA")
    assert GPULayers.from_json_dict({"ID": "1", "layers": [3]}).layers == [3]


def test_gpu_layers_validation() -> None:
    """Negative layers, non-integers and unknown fields are ValidationErrors naming the field."""
    with pytest.raises(pydantic.ValidationError, match="layers"):
        GPULayers(layers=[-1])
    with pytest.raises(pydantic.ValidationError, match="layers"):
        GPULayers(layers=["a"])  # type: ignore[list-item]
    with pytest.raises(pydantic.ValidationError, match="gpu"):
        GPULayers(gpu="0")  # type: ignore[call-arg]


def test_gpu_layers_device_id() -> None:
    """device_id is the embedded DeviceID."""
    assert GPULayers(id="0", library="CUDA", layers=[1]).device_id == DeviceID(
        id="0", library="CUDA"
    )


def test_list_str_and_sum() -> None:
    """The list prints its sum then its entries, as ollama's GPULayersList prints."""
    lst = GPULayersList([GPULayers(id="0", layers=[0, 1, 2]), GPULayers(id="1", layers=[7, 5])])
    assert str(lst) == "5[ID:0 Layers:3(0..2) ID:1 Layers:2[5 7]]"
    assert lst.sum() == 5
    assert lst[1].layers == [5, 7]


@pytest.mark.parametrize(
    ("entries", "text"),
    [
        ([], "[]"),
        ([GPULayers()], "[]"),
        ([GPULayers(), GPULayers()], "[ ]"),
        ([GPULayers(id="0", layers=[0, 1, 2]), GPULayers(id="1")], "3[ID:0 Layers:3(0..2) ]"),
    ],
)
def test_list_str_empty_entries(entries: list[GPULayers], text: str) -> None:
    """Empty entries print as empty strings, still separated by a space."""
    assert str(GPULayersList(entries)) == text


def test_list_sum_counts_repeats() -> None:
    """sum counts every entry, repeats included."""
    assert GPULayersList([GPULayers(layers=[1, 1]), GPULayers(layers=[2])]).sum() == 3


def test_list_sorting() -> None:
    """Sorting by less puts smaller first layers first and empty entries last."""
    lst = GPULayersList(
        [GPULayers(id="a", layers=[5, 6]), GPULayers(id="b"), GPULayers(id="c", layers=[0, 1])]
    )
    assert lst.less(2, 0) and not lst.less(0, 2)
    assert lst.less(0, 1) and not lst.less(1, 0)
    assert [g.id for g in lst.sorted_by_first_layer()] == ["c", "a", "b"]
    assert isinstance(lst.sorted_by_first_layer(), GPULayersList)
    lst.swap(0, 2)
    assert [g.id for g in lst] == ["c", "b", "a"]
    assert len(lst) == 3


def test_list_rejects_other_items() -> None:
    """A GPULayersList holds only GPULayers."""
    with pytest.raises(TypeError, match="GPULayers"):
        GPULayersList([1])  # type: ignore[list-item]


def test_hash_equal_lists() -> None:
    """Equal lists hash equal, within and across calls."""

    def make() -> GPULayersList:
        return GPULayersList(
            [
                GPULayers(id="0", library="CUDA", layers=[0, 1]),
                GPULayers(id="1", library="CUDA", layers=[2]),
            ]
        )

    assert make().hash() == make().hash()
    assert 0 <= make().hash() < 2**64


def test_hash_ignores_empty_entries() -> None:
    """Adding or removing an entry without layers keeps the hash."""
    base = GPULayersList([GPULayers(id="0", library="CUDA", layers=[0, 1])])
    more = GPULayersList([GPULayers(id="9"), *base, GPULayers(id="x", library="ROCm")])
    assert base.hash() == more.hash()
    assert GPULayersList().hash() == GPULayersList([GPULayers()]).hash()


def test_hash_order_and_identity_matter() -> None:
    """GPU order, layer order, id and library all change the hash."""
    a = GPULayers(id="0", library="CUDA", layers=[0])
    b = GPULayers(id="1", library="CUDA", layers=[1])
    assert GPULayersList([a, b]).hash() != GPULayersList([b, a]).hash()
    one = GPULayersList([GPULayers(id="0", library="CUDA", layers=[1, 0])])
    before = one.hash()
    str(one)  # sorts the layers in place
    assert one.hash() != before
    assert one.hash() == GPULayersList([GPULayers(id="0", library="CUDA", layers=[0, 1])]).hash()
    base = GPULayersList([a]).hash()
    assert GPULayersList([GPULayers(id="2", library="CUDA", layers=[0])]).hash() != base
    assert GPULayersList([GPULayers(id="0", library="ROCm", layers=[0])]).hash() != base


def test_hash_id_library_concatenation_collides() -> None:
    """id and library are concatenated without a separator, so ("ab","c") == ("a","bc")."""
    x = GPULayersList([GPULayers(id="ab", library="c", layers=[1])])
    y = GPULayersList([GPULayers(id="a", library="bc", layers=[1])])
    assert x.hash() == y.hash()


def test_list_pydantic_json() -> None:
    """GPULayersList validates from JSON lists and serialises as one."""
    adapter = pydantic.TypeAdapter(GPULayersList)
    lst = adapter.validate_python([{"id": "0", "backend": "CUDA", "Layers": [1, 2]}])
    assert isinstance(lst, GPULayersList)
    assert lst[0].library == "CUDA"
    assert adapter.dump_python(lst, by_alias=True) == [
        {"id": "0", "backend": "CUDA", "Layers": [1, 2]}
    ]


def test_parse_gpu_layers() -> None:
    """LIB:ID=RANGES entries separated by ';' parse into GPULayers in order."""
    lst = parse_gpu_layers("CUDA:0=0-11,32; CUDA:1 = 12-14 ;")
    assert [(g.library, g.id, g.layers) for g in lst] == [
        ("CUDA", "0", [*range(12), 32]),
        ("CUDA", "1", [12, 13, 14]),
    ]
    assert isinstance(lst, GPULayersList)
    assert parse_gpu_layers("") == [] and parse_gpu_layers(" ; ") == []
    assert parse_gpu_layers(":0=3")[0].library == ""
    assert parse_gpu_layers("Vulkan:GPU-ab:cd=5")[0].id == "GPU-ab:cd"


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("0-11", "not LIB:ID=RANGES"),
        ("CUDA=0-3", "not LIB:ID=RANGES"),
        ("CUDA: =1", "no device id"),
        ("CUDA:0=", "not a layer index"),
        ("CUDA:0=a", "not a layer index"),
        ("CUDA:0=-1", "not a layer index"),
        ("CUDA:0=1-2-3", "not a layer index"),
        ("CUDA:0=5-2", "empty"),
        ("CUDA:0=0-3;CUDA:1=3", "layer 3 is assigned twice"),
        ("CUDA:0=0;CUDA:0=1", "given twice"),
        (f"CUDA:0=0-{MAX_PARSED_LAYER}", "not below"),
    ],
)
def test_parse_gpu_layers_errors(spec: str, why: str) -> None:
    """Malformed specs raise ValueError saying what is wrong and the expected format."""
    with pytest.raises(ValueError, match=why) as info:
        parse_gpu_layers(spec)
    assert "LIB:ID=RANGES" in str(info.value)
