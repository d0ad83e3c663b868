"""The op contract: one op table, typed parameter records read by name, one name per op."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import numpy as np
import pytest

import mlplug as ml
from mlplug.conformance import all_cases
from mlplug.conformance.completeness import params_mismatches
from mlplug.errors import GraphError
from mlplug.kernels import register
from mlplug.ops import (
    OPS,
    PRIMITIVES,
    TENSOR_METHODS,
    UNARY_METHODS,
    UNARY_PRIMITIVES,
    VIEW_OPS,
    WRITE_OPS,
)
from mlplug.plugin_api import (
    NO_PARAMS,
    MulmatParams,
    NoParams,
    NormParams,
    OpParams,
    RopeParams,
    ScaleParams,
)

if TYPE_CHECKING:
    from mlplug.conformance.case import Case

pytest.importorskip("mlplug_cpu_numpy")


@pytest.fixture
def ctx() -> Iterator[ml.Context]:
    with ml.new_backend(None, backend="cpu_numpy") as be, be.new_context() as c:
        yield c


def test_every_node_carries_its_primitives_record() -> None:
    """Building every conformance case gives nodes whose params are the table's record type."""
    with ml.new_backend(None, backend="cpu_numpy") as be:
        assert params_mismatches(be) == []


def test_a_wrong_record_is_reported() -> None:
    """The check names a node whose record is not its primitive's."""

    class Broken:
        id = "broken-f32"
        op = "broken"
        args = ()

        @staticmethod
        def build(ctx: ml.Context, inputs: object) -> ml.Tensor:
            y = ctx.input().from_floats(np.ones(4, dtype=np.float32)).scale(ctx, 2.0)
            y.params = NormParams(1.0)
            return y

    with ml.new_backend(None, backend="cpu_numpy") as be:
        got = params_mismatches(be, [cast("Case", Broken())])
    assert got == ["broken-f32: scale carries NormParams, not ScaleParams"]


def test_kernels_read_records_by_name(ctx: ml.Context) -> None:
    """A node's record is typed and named: ``RopeParams.of(node).n_dims``."""
    x = ctx.from_floats(np.zeros(8 * 2 * 3, dtype=np.float32), 8, 2, 3)
    pos = ctx.from_ints([0, 1, 2])
    y = x.rope(ctx, pos, 8, 10000.0, 1.0)
    p = RopeParams.of(y)
    assert (p.n_dims, p.mode, p.base, p.sections) == (8, 0, 10000.0, (0, 0, 0, 0))
    assert MulmatParams.of(x.mulmat(ctx, x)).precision == "default"
    assert MulmatParams.of(x.mulmat_full_prec(ctx, x)).precision == "f32"
    with pytest.raises(GraphError, match="rope: node carries RopeParams, not NormParams"):
        NormParams.of(y)


def test_rope_records_are_shared_per_setting_and_defaults_filled(ctx: ml.Context) -> None:
    """Equal rope settings share one record (memoised: a model builds two ropes per layer);
    an unhashable number (a 0-d array) gives an equal record; zeros take their defaults."""
    x = ctx.from_floats(np.zeros(8 * 2 * 3, dtype=np.float32), 8, 2, 3)
    pos = ctx.from_ints([0, 1, 2])
    a = RopeParams.of(x.rope(ctx, pos, 8, 10000.0, 1.0))
    b = RopeParams.of(x.rope(ctx, pos, 8, 10000, 1.0))
    c = RopeParams.of(x.rope(ctx, pos, 8, np.array(10000.0), np.float32(1.0)))
    assert a is b and a == c and isinstance(c.base, float)
    assert (a.n_ctx_orig, a.attn_factor, a.beta_fast, a.beta_slow) == (131072, 1.0, 32.0, 1.0)
    assert RopeParams.of(x.rope(ctx, pos, 8, 500000.0, 1.0)).base == 500000.0


def test_records_are_frozen_hashable_and_compare_by_type_and_value() -> None:
    """Graph caches key on records: equal settings are equal, other ops' records are not."""
    a, b = NormParams(1e-5), NormParams(1e-5)
    assert a == b and hash(a) == hash(b) and a != NormParams(1e-6)
    other: OpParams = ScaleParams(1e-5)
    assert a != other
    assert NoParams() == NO_PARAMS
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(a, "eps", 1.0)  # noqa: B010  (the assignment a frozen record refuses)


def test_ops_without_parameters_share_the_empty_record(ctx: ml.Context) -> None:
    """``add`` carries NO_PARAMS; every table entry's record type is an OpParams."""
    t = ctx.from_floats([1.0, 2.0])
    assert t.add(ctx, t).params is NO_PARAMS
    assert all(issubclass(s.params, OpParams) for s in PRIMITIVES.values())


def test_lists_are_derived_from_one_table() -> None:
    """Every list is a view of OPS: names unique, methods exist, unary ops are methods/prims."""
    names = [o.name for o in OPS]
    assert len(names) == len(set(names))
    assert all(hasattr(ml.Tensor, n) for n in TENSOR_METHODS)
    assert set(UNARY_METHODS) <= set(TENSOR_METHODS)
    assert set(UNARY_PRIMITIVES) <= set(PRIMITIVES)
    assert VIEW_OPS == {"reshape", "view", "permute"}
    assert WRITE_OPS == {"copy", "set_rows", "set_inplace"}


def test_a_primitive_and_its_method_share_one_name(ctx: ml.Context) -> None:
    """The node a public op builds is named like the method (ggml's spellings are gone)."""
    a = ctx.from_floats(np.ones(6, dtype=np.float32), 3, 2)
    ids = ctx.from_ints([1, 0])
    built = {
        "mulmat": a.mulmat(ctx, a).op,
        "softmax": a.softmax(ctx).op,
        "rows": a.rows(ctx, ids).op,
        "cum_sum": a.cum_sum(ctx).op,
        "contiguous": a.permute(ctx, 1, 0, 2, 3).contiguous(ctx).op,
        "copy": a.copy(ctx, ctx.zeros(ml.DType.F32, 3, 2)).op,
    }
    assert built == {k: k for k in built}
    for old in ("mul_mat", "soft_max", "get_rows", "cumsum", "cont", "cpy", "sdpa", "set"):
        with pytest.raises(KeyError, match="not a primitive"):
            register({}, [old], lambda *_: None)


def test_case_ids_name_public_ops() -> None:
    """Conformance case ids start with a public op name (unchanged by the primitive renames)."""
    assert all(c.id.startswith(c.op) for c in all_cases())
