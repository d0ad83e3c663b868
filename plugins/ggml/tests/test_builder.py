"""The ggml plugin's Builder: what its kernels may ask of a node."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("mlplug_ggml")

from mlplug.errors import GraphError

from mlplug_ggml.ops._registry import Builder


def _node(n_src: int) -> Any:
    sources = [SimpleNamespace() for _ in range(n_src)]
    return SimpleNamespace(op="cum_sum", src=sources)


def test_src_returns_the_built_source() -> None:
    b = Builder(lib=None, ctx=0, flash=False)  # type: ignore[arg-type]
    node = _node(2)
    b.ptrs[id(node.src[0])] = 100
    b.ptrs[id(node.src[1])] = 200
    assert (b.src(node), b.src(node, 1)) == (100, 200)


@pytest.mark.parametrize("i", [-1, -2, 2, 5])
def test_src_rejects_an_index_the_node_lacks(i: int) -> None:
    b = Builder(lib=None, ctx=0, flash=False)  # type: ignore[arg-type]
    node = _node(2)
    for s in node.src:
        b.ptrs[id(s)] = 1
    with pytest.raises(GraphError, match=f"source {i}; the node has 2"):
        b.src(node, i)
