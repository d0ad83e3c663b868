"""What a backend should implement next: its missing ops, ranked by what needs them.

A conformance run lists the cases a backend failed or could not run. This module turns them into
a to-do list: each unsupported case is charged to what was missing (the primitive op named by
its ``NotSupportedError``, or the dtype it could not hold), each failed case to its op, and each
item is scored

    score = cases x (1 + model families that use it)

where *cases* counts the item's failed and unsupported cases and the model families are the
static table :data:`MODEL_FAMILIES`: for a few families of architectures, the primitive ops
their forward pass builds (weights, attention, norms, activations, KV-cache writes). It is an
estimate kept by hand, not measured: an op no listed family uses still ranks by its cases.
A missing dtype counts every family (every model file stores its weights in some dtype).

Items are grouped in op families (:data:`OP_FAMILIES`: the chapters of the op documentation);
dtypes form the family ``dtypes``, and ops in no family the family ``other``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..ops import PRIMITIVES

if TYPE_CHECKING:
    from .report import CaseResult

__all__ = [
    "MODEL_FAMILIES",
    "OP_FAMILIES",
    "NextStep",
    "by_family",
    "family_of",
    "missing_item",
    "model_count",
    "next_steps",
]

#: Primitive ops by family (the chapters of the op documentation).
OP_FAMILIES: Final[Mapping[str, tuple[str, ...]]] = {
    "elementwise": (
        "add", "sub", "mul", "div", "scale", "clamp", "fill", "sin", "cos", "tanh", "sqr",
        "sqrt", "exp", "neg", "softplus", "sigmoid", "gelu", "gelu_erf", "gelu_quick", "silu",
        "relu", "glu", "swiglu_oai",
    ),
    "reduce": ("softmax", "l2_norm", "rms_norm", "norm", "sum_rows", "mean", "cum_sum", "argsort"),
    "linalg": ("mulmat", "mulmat_id", "add_id", "solve_tri", "tri", "diag"),
    "layout": (
        "reshape", "view", "permute", "contiguous", "copy", "cast", "pad", "concat", "repeat",
        "rows", "set_rows", "set_inplace", "arange",
    ),
    "nn": (
        "pool_2d", "im2col", "conv_3d", "ssm_conv", "ssm_scan", "interpolate", "rope",
        "scaled_dot_product_attention",
    ),
}  # fmt: skip

#: What every decoder-only transformer builds: embeddings (``rows``), norms, projections,
#: rotary positions, attention, a gated MLP and the KV-cache writes.
_DECODER: Final = frozenset({
    "rows", "rms_norm", "mulmat", "rope", "reshape", "view", "permute", "contiguous",
    "scaled_dot_product_attention", "softmax", "scale", "mul", "add", "glu", "silu",
    "set_rows", "copy", "cast",
})  # fmt: skip

#: Model families and the primitive ops their forward pass builds (an estimate, see above).
MODEL_FAMILIES: Final[Mapping[str, frozenset[str]]] = {
    # llama, mistral, qwen2/qwen3, granite, phi3: the plain decoder
    "llama": _DECODER,
    # gemma 2/3: GELU-gated MLP, tanh logit soft-capping
    "gemma": (_DECODER - {"silu"}) | {"gelu", "tanh"},
    # mixtral, qwen3-moe, deepseek: routed experts
    "moe": _DECODER | {"mulmat_id", "argsort", "sum_rows", "div", "sigmoid"},
    # gpt-oss: experts with biases, its own clamped SwiGLU, attention sinks
    "gpt-oss": (_DECODER - {"glu", "silu"}) | {"mulmat_id", "add_id", "swiglu_oai", "argsort"},
    # bert, nomic-bert: embedding models with layer norms and mean pooling
    "bert": frozenset({
        "rows", "norm", "mulmat", "add", "gelu", "gelu_erf", "softmax", "scale", "reshape",
        "view", "permute", "contiguous", "scaled_dot_product_attention", "mean", "l2_norm",
        "rope",
    }),
    # clip / siglip / qwen-vl image encoders: patches, positions, pooling
    "vision": frozenset({
        "im2col", "mulmat", "add", "norm", "rms_norm", "gelu", "gelu_quick", "softmax",
        "scaled_dot_product_attention", "rope", "concat", "pad", "interpolate", "pool_2d",
        "permute", "reshape", "view", "contiguous", "repeat", "rows", "scale",
    }),
    # mamba, granite-hybrid, qwen3-next: state-space and linear-attention layers
    "ssm": frozenset({
        "rows", "rms_norm", "mulmat", "ssm_conv", "ssm_scan", "silu", "exp", "softplus",
        "mul", "add", "sigmoid", "concat", "pad", "cum_sum", "tri", "solve_tri", "l2_norm",
        "neg", "diag", "view", "reshape", "permute", "contiguous", "sum_rows", "set_rows",
        "copy",
    }),
}  # fmt: skip

_FAMILY_OF: Final[Mapping[str, str]] = {
    op: family for family, ops in OP_FAMILIES.items() for op in ops
}
_UNSUPPORTED = re.compile(r"^(?P<backend>.*?): (?P<op>.+?) is not supported: (?P<reason>.*)$")


@dataclass(frozen=True)
class NextStep:
    """One thing a backend lacks: an op (or a dtype), its family and what needs it."""

    #: Op family (``elementwise``, ``linalg``, ..., ``dtypes`` or ``other``).
    family: str
    #: A primitive op name, a public op name (a failed case), or ``dtype NAME``.
    item: str
    #: Model families that use it (:data:`MODEL_FAMILIES`).
    models: int
    #: Failed and unsupported cases charged to it.
    cases: int

    @property
    def score(self) -> int:
        """``cases x (1 + models)``: the rank of this item in the to-do list."""
        return self.cases * (1 + self.models)


def family_of(item: str) -> str:
    """Return the op family of ``item`` (``dtypes`` for ``dtype NAME``, else ``other``)."""
    if item.startswith("dtype "):
        return "dtypes"
    return _FAMILY_OF.get(item, "other")


def model_count(item: str) -> int:
    """Return how many model families of :data:`MODEL_FAMILIES` use ``item``."""
    if item.startswith("dtype "):
        return len(MODEL_FAMILIES)
    return sum(1 for ops in MODEL_FAMILIES.values() if item in ops)


def missing_item(result: CaseResult) -> str | None:
    """Return what ``result`` charges: the missing primitive or dtype, the failed op, or None.

    A pass or a declared known failure charges nothing. An unsupported case names the primitive
    its ``NotSupportedError`` reports (``"tiny: softmax is not supported: ..."``), or the dtype
    when the reason is ``dtype NAME``; any other case charges its public op.
    """
    if result.status not in ("fail", "xpass", "unsupported"):
        return None
    if result.status == "unsupported" and result.error:
        m = _UNSUPPORTED.match(result.error.strip())
        if m is not None:
            reason = m["reason"]
            if reason.startswith("dtype "):
                return reason.split()[0] + " " + reason.split()[1].strip(",;:")
            if m["op"] in PRIMITIVES:
                return m["op"]
    return result.op


def next_steps(results: Iterable[CaseResult], backend: str) -> list[NextStep]:
    """Return what ``backend`` lacks in ``results``, highest score first (then by name)."""
    counts: Counter[str] = Counter()
    for r in results:
        if r.backend != backend:
            continue
        item = missing_item(r)
        if item is not None:
            counts[item] += 1
    steps = [NextStep(family_of(i), i, model_count(i), n) for i, n in counts.items()]
    return sorted(steps, key=lambda s: (-s.score, s.item))


def by_family(steps: Sequence[NextStep]) -> dict[str, list[NextStep]]:
    """Group ``steps`` (already ranked) by family, families ordered by their best score."""
    groups: dict[str, list[NextStep]] = {}
    for s in steps:
        groups.setdefault(s.family, []).append(s)
    return groups
