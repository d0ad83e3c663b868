"""ggml's flash-attention path: the catalogue's attention cases on a backend with it enabled.

Only ggml has a second attention kernel (``ggml_flash_attn_ext``) chosen by a backend
parameter, so the conformance run (default parameters) never reaches it; this runs the same
catalogue cases, with the same references and tolerances, through it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("mlplug_ggml")

from mlplug import Backend, BackendParams, FlashAttentionType, new_backend
from mlplug.conformance import Case, all_cases
from mlplug.conformance.testing import check_case

from mlplug_ggml.backend import GGMLBackend

ATTENTION = [c for c in all_cases() if c.op == "scaled_dot_product_attention"]


@pytest.fixture(scope="module")
def flash() -> Iterator[Backend]:
    """A ggml backend with flash attention enabled."""
    params = BackendParams(num_threads=2, flash_attention=FlashAttentionType.ENABLED)
    with new_backend(None, params, backend="ggml") as be:
        assert isinstance(be, GGMLBackend) and be.flash
        yield be


@pytest.mark.parametrize("case", ATTENTION, ids=[c.id for c in ATTENTION])
def test_flash_attention_case(flash: Backend, case: Case) -> None:
    """Each attention case passes against its float64 reference through flash attention."""
    check_case(flash, case)
