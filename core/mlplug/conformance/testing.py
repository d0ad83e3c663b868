"""The conformance test for pytest: :func:`check_case` and the ready-made :func:`test_op`.

A third-party plugin runs the whole catalogue on its backend with a three-line test file::

    # tests/test_mlplug_conformance.py
    from mlplug.conformance.testing import test_op  # noqa: F401  (collected by pytest)

and ``pytest -p mlplug.conformance --mlplug-backend NAME``. Outcomes: a pass is a pass; a
failure fails with the error and both metrics; ``NotSupportedError`` is reported as
``xfail`` with reason ``unsupported: ...`` (visible, never a pass, never a silent skip); a case
listed in the plugin's ``xfails.txt`` is a strict xfail (``known failure: ...``), and fails as
``XPASS(strict)`` once it passes. When the plugin pins its unsupported set (``unsupported.txt``),
an unlisted unsupported case fails and a listed one that passes is an ``XPASS(strict)``; with
``strict=True`` (``--mlplug-strict``) every unsupported case fails. A failure's message ends with
the one command that reruns exactly that case.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .report import repro_command
from .runner import run_case
from .xfails import known_failures, pinned_unsupported

if TYPE_CHECKING:
    import pytest

    from ..backend import Backend
    from .case import Case

__all__ = ["check_case", "test_op"]

_KNOWN: weakref.WeakKeyDictionary[Backend, tuple[dict[str, str], dict[str, str] | None]] = (
    weakref.WeakKeyDictionary()
)


def _known(backend: Backend) -> tuple[dict[str, str], dict[str, str] | None]:
    try:
        return _KNOWN[backend]
    except KeyError:
        _KNOWN[backend] = found = (known_failures(backend), pinned_unsupported(backend))
        return found


def check_case(backend: Backend, case: Case, *, seed: int = 0, strict: bool = False) -> None:
    """Run ``case`` on ``backend`` and turn the outcome into a pytest outcome.

    :param strict: an unsupported case fails instead of being an xfail.
    :raises pytest.fail.Exception: on a failure or an xpass (strict: also when unsupported).
    :raises pytest.xfail.Exception: when unsupported or a declared known failure.
    """
    import pytest

    known, pinned = _known(backend)
    out = run_case(backend, case, seed, known, pinned)
    if out.status == "pass":
        return
    rerun = f"rerun: {repro_command(backend.name, case.id, seed)}"
    if out.status == "unsupported":
        if strict:
            pytest.fail(f"{case.id} on {backend.name}: unsupported (strict): {out.error}\n{rerun}")
        pytest.xfail(f"unsupported: {out.error}")
    if out.status == "xfail":
        pytest.xfail(out.error or "known failure")
    metrics = f"max_abs_err={out.max_abs_err}, nmse={out.nmse}"
    if out.status == "xpass":
        pytest.fail(
            f"[XPASS(strict)] {case.id} on {backend.name}: {out.error} ({metrics})\n{rerun}",
            pytrace=False,
        )
    pytest.fail(f"{case.id} on {backend.name}: {out.error} ({metrics})\n{rerun}", pytrace=False)


def test_op(backend: Backend, case: Case, request: pytest.FixtureRequest) -> None:
    """Check one catalogue case on one backend against its float64 reference.

    The seed and strictness come from the pytest options ``--mlplug-seed`` and
    ``--mlplug-strict`` (see :mod:`mlplug.conformance.pytest_plugin`).
    """
    from .pytest_plugin import run_options

    seed, strict = run_options(request)
    check_case(backend, case, seed=seed, strict=strict)
