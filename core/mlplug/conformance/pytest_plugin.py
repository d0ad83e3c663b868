"""The pytest plugin of the conformance suite (``-p mlplug.conformance``).

It parametrises a session-scoped ``backend`` fixture over the installed backends (narrowed by
``--mlplug-backend NAME``, repeatable) and ``case`` over the catalogue (narrowed by
``--mlplug-op PATTERN``, see :func:`mlplug.conformance.runner.select`, and by tier with
``--mlplug-tier default|full|all`` or ``$MLPLUG_CONFORMANCE_TIER``); test ids read
``test_op[<backend>-<case id>]``, so ``-k "torch and mulmat"`` works. ``--mlplug-seed N`` (or
the environment variable ``MLPLUG_CONFORMANCE_SEED``) draws every case's inputs from another
seed; ``--mlplug-strict`` fails unsupported cases. A selection matching no case is a usage
error. At the end it prints passed / failed / unsupported / known-failure counts per backend,
and the unsupported cases per op. The test function itself is
:func:`mlplug.conformance.testing.test_op` (import it into a test module).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .cases import all_cases
from .runner import select

if TYPE_CHECKING:
    from ..backend import Backend

__all__ = [
    "SEED_ENV",
    "backend_fixture",
    "pytest_addoption",
    "pytest_generate_tests",
    "pytest_runtest_makereport",
    "pytest_terminal_summary",
    "run_options",
    "tier",
]

#: Environment variable giving the input seed when ``--mlplug-seed`` is not passed (CI runs seed 1).
SEED_ENV = "MLPLUG_CONFORMANCE_SEED"

_TALLY = pytest.StashKey[dict[str, Counter[str]]]()
_UNSUPPORTED_OPS = pytest.StashKey[dict[str, Counter[str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--mlplug-backend NAME`` (repeatable), ``--mlplug-op PATTERN`` and
    ``--mlplug-tier TIER``."""
    group = parser.getgroup("mlplug", "mlplug conformance suite")
    group.addoption(
        "--mlplug-backend",
        action="append",
        dest="mlplug_backend",
        default=None,
        metavar="NAME",
        help="run the conformance cases on this backend only "
        "(repeatable; default: every installed backend)",
    )
    group.addoption(
        "--mlplug-op",
        dest="mlplug_op",
        default=None,
        metavar="PATTERN",
        help="run only the cases whose op or id matches (glob, or an op name)",
    )
    group.addoption(
        "--mlplug-seed",
        dest="mlplug_seed",
        type=int,
        default=None,
        metavar="N",
        help=f"seed of the cases' inputs (default: ${SEED_ENV}, else 0)",
    )
    group.addoption(
        "--mlplug-strict",
        dest="mlplug_strict",
        action="store_true",
        default=False,
        help="fail unsupported cases instead of reporting them as xfails",
    )
    group.addoption(
        "--mlplug-tier",
        dest="mlplug_tier",
        default=None,
        choices=("default", "full", "all"),
        help="which tier of the catalogue: default (fast), full (real sizes) or all "
        f"(default: ${TIER_ENV}, else default)",
    )


def run_options(request: pytest.FixtureRequest) -> tuple[int, bool]:
    """Return the ``(seed, strict)`` a conformance test runs with (pytest options, env)."""
    config = request.config
    seed = config.getoption("mlplug_seed", default=None)
    if seed is None:
        text = os.environ.get(SEED_ENV, "").strip()
        try:
            seed = int(text) if text else 0
        except ValueError:
            msg = f"{SEED_ENV} must be an integer, got {text!r}"
            raise pytest.UsageError(msg) from None
    return int(seed), bool(config.getoption("mlplug_strict", default=False))


#: Environment variable naming the tier when ``--mlplug-tier`` is not given.
TIER_ENV = "MLPLUG_CONFORMANCE_TIER"


def tier(config: pytest.Config) -> str:
    """Return the tier to run: ``--mlplug-tier``, else ``$MLPLUG_CONFORMANCE_TIER``, else
    ``default``."""
    return str(
        config.getoption("mlplug_tier", default=None) or os.environ.get(TIER_ENV) or "default"
    )


def backend_names(config: pytest.Config) -> list[str]:
    """Return the backends to test: the ``--mlplug-backend`` names, else all installed."""
    names = config.getoption("mlplug_backend", default=None)
    if names:
        return list(dict.fromkeys(names))
    from ..registry import manager

    return [b.name for b in manager().backends()]


def _parametrized(metafunc: pytest.Metafunc) -> set[str]:
    names: set[str] = set()
    for mark in metafunc.definition.iter_markers("parametrize"):
        arg = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        names.update(a.strip() for a in (arg.split(",") if isinstance(arg, str) else arg))
    return names


def _backend_is_ours(metafunc: pytest.Metafunc) -> bool:
    defs = getattr(metafunc, "_arg2fixturedefs", {}).get("backend")
    return not defs or defs[-1].func is _backend


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``backend`` (session-scoped, by name) and, with it, ``case`` (the catalogue).

    Tests that parametrise these names themselves, or bring their own ``backend`` fixture, are
    left alone.
    """
    taken = _parametrized(metafunc)
    ours = "backend" not in taken and _backend_is_ours(metafunc)
    if "backend" in metafunc.fixturenames and ours:
        names = backend_names(metafunc.config)
        metafunc.parametrize("backend", names, indirect=True, ids=names, scope="session")
        if "case" in metafunc.fixturenames and "case" not in taken:
            pattern = metafunc.config.getoption("mlplug_op", default=None)
            cases = select(all_cases(tier(metafunc.config)), pattern)
            if not cases:
                msg = f"no conformance case matches --mlplug-op {pattern!r}"
                raise pytest.UsageError(msg)
            metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def _backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    from ..registry import new_backend

    name = getattr(request, "param", None)
    if name is None:
        msg = "the backend fixture needs a backend name (parametrised by mlplug.conformance)"
        raise pytest.UsageError(msg)
    be = new_backend(None, backend=name)
    try:
        yield be
    finally:
        be.close()


#: The session-scoped ``backend`` fixture: one backend instance per name, closed at the end.
backend_fixture = pytest.fixture(scope="session", name="backend")(_backend)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    """Count each backend's outcomes for the terminal summary."""
    outcome = yield
    report = outcome.get_result()
    params = getattr(getattr(item, "callspec", None), "params", {})
    backend, case = params.get("backend"), params.get("case")
    if not isinstance(backend, str) or case is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        status = "pass" if report.passed else "fail"
        if report.skipped:
            reason = str(getattr(report, "wasxfail", ""))
            status = (
                "unsupported"
                if reason.startswith("unsupported")
                else ("xfail" if hasattr(report, "wasxfail") else "skipped")
            )
        stash = item.config.stash
        if _TALLY not in stash:
            tally: dict[str, Counter[str]] = defaultdict(Counter)
            ops: dict[str, Counter[str]] = defaultdict(Counter)
            stash[_TALLY], stash[_UNSUPPORTED_OPS] = tally, ops
        stash[_TALLY][backend][status] += 1
        if status == "unsupported":
            stash[_UNSUPPORTED_OPS][backend][getattr(case, "op", str(case))] += 1


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print passed / failed / unsupported / known failures per backend."""
    tally = config.stash.get(_TALLY, None)
    if not tally:
        return
    unsupported = config.stash.get(_UNSUPPORTED_OPS, {})
    terminalreporter.section("mlplug conformance")
    for backend in sorted(tally):
        c = tally[backend]
        line = (
            f"{backend}: {c['pass']} passed, {c['fail']} failed, {c['unsupported']} "
            f"unsupported, {c['xfail']} known failures"
        )
        ops = sorted(unsupported.get(backend, Counter()).items())
        if ops:
            line += "; unsupported cases by op: " + ", ".join(f"{op} {n}" for op, n in ops)
        terminalreporter.write_line(line)
