"""Every catalogue case on every installed backend (ids: ``test_op[<backend>-<case id>]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplug.conformance.testing import check_case

if TYPE_CHECKING:
    from mlplug import Backend
    from mlplug.conformance import Case


def test_op(backend: Backend, case: Case) -> None:
    """Check one case on one backend against its float64 reference and tolerance."""
    check_case(backend, case)
