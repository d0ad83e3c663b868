"""The conformance test for pytest: :func:`check_case` and the ready-made :func:`test_op`.

A third-party plugin runs the whole catalogue on its backend with a three-line test file::

    # tests/test_mlplug_conformance.py
    from mlplug.conformance.testing import test_op  # noqa: F401  (collected by pytest)

and ``pytest -p mlplug.conformance --mlplug-backend NAME``. Outcomes: a pass is a pass; a
failure fails with the error and both metrics; ``NotSupportedError`` is reported as
``xfail`` with reason ``unsupported: ...`` (visible, never a pass, never a silent skip); a case
listed in the plugin's ``xfails.txt`` is a strict xfail (``known failure: ...``), and fails as
``XPASS(strict)`` once it passes.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .runner import run_case
from .xfails import known_failures

if TYPE_CHECKING:
    from ..backend import Backend
    from .case import Case

__all__ = ["check_case", "test_op"]

_KNOWN: weakref.WeakKeyDictionary[Backend, dict[str, str]] = weakref.WeakKeyDictionary()


def _known(backend: Backend) -> dict[str, str]:
    try:
        return _KNOWN[backend]
    except KeyError:
        _KNOWN[backend] = found = known_failures(backend)
        return found


def check_case(backend: Backend, case: Case, *, seed: int = 0) -> None:
    """Run ``case`` on ``backend`` and turn the outcome into a pytest outcome.

    :raises pytest.fail.Exception: on a failure or an xpass.
    :raises pytest.xfail.Exception: when unsupported or a declared known failure.
    """
    import pytest

    out = run_case(backend, case, seed, _known(backend))
    if out.status == "pass":
        return
    if out.status == "unsupported":
        pytest.xfail(f"unsupported: {out.error}")
    if out.status == "xfail":
        pytest.xfail(out.error or "known failure")
    metrics = f"max_abs_err={out.max_abs_err}, nmse={out.nmse}"
    if out.status == "xpass":
        pytest.fail(
            f"[XPASS(strict)] {case.id} on {backend.name}: {out.error} ({metrics})", pytrace=False
        )
    pytest.fail(f"{case.id} on {backend.name}: {out.error} ({metrics})", pytrace=False)


def test_op(backend: Backend, case: Case) -> None:
    """Check one catalogue case on one backend against its float64 reference."""
    check_case(backend, case)
