"""Every catalogue case on every installed backend (ids: ``test_op[<backend>-<case id>]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.conformance.pytest_plugin import run_options
from mlplug.conformance.testing import check_case

if TYPE_CHECKING:
    import pytest

    from mlplug import Backend
    from mlplug.conformance import Case


def test_op(backend: Backend, case: Case, request: pytest.FixtureRequest) -> None:
    """Check one case on one backend against its float64 reference and tolerance.

    ``--mlplug-seed N`` draws other inputs; ``--mlplug-strict`` fails unsupported cases.
    """
    seed, strict = run_options(request)
    check_case(backend, case, seed=seed, strict=strict)
