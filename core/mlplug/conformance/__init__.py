"""mlplug's conformance suite: op cases with float64 references, a runner, a pytest plugin.

The catalogue (:func:`all_cases`) holds several cases for every public Tensor method and
Context constructor: shapes with broadcasting, non-contiguous operands and every accepted dtype,
plus worked examples with known results, (:mod:`.cases_layouts`) cases re-run with their
inputs given as permuted views, gapped rows, dim-2 strided slices or views into one fused
buffer, (:mod:`.cases_fused`) fused ops against their decomposition on the same backend and
(:mod:`.cases_sizes`) cases at real sizes. Cases belong to a tier: ``default`` (fast) or
``full`` (``all_cases("full")``, ``mlplug conformance --tier full``). Each case draws its inputs
from a seed, builds its graph with the public API only, and is compared with an independent
float64 reference (:mod:`mlplug.conformance.reference`) using ggml's NMSE and the max absolute
error at the op's tolerance (:mod:`mlplug.conformance._common` holds the tolerance families).

Three ways to run it:

* ``mlplug.conformance.run(["cpu_numpy"], "mulmat*")`` returns a :class:`ConformanceReport`
  (``.table()``, ``.to_json()``, ``.to_markdown()``, ``.failed()``); the CLI's
  ``mlplug conformance`` prints it.
* pytest in this repository: ``pytest tests/conformance --backend cpu_numpy``.
* pytest in a plugin's own repository: ``pytest -p mlplug.conformance --mlplug-backend NAME``
  with a test module containing ``from mlplug.conformance.testing import test_op``.

Importing this package does not import pytest: the plugin's hooks (``pytest_addoption``,
``pytest_generate_tests``, ``pytest_runtest_makereport``, ``pytest_terminal_summary``) and its
``backend`` fixture are loaded from :mod:`.pytest_plugin` when pytest asks for them.
"""

from __future__ import annotations

import sys
from typing import Any

from .case import Arg, Case, Inputs, Tolerance
from .cases import all_cases, by_id
from .completeness import ops_without_cases, primitives_without_cases
from .report import BackendSummary, CaseResult, ConformanceReport, Disagreement
from .runner import recompute_case, run, run_case, select

__all__ = [
    "Arg",
    "BackendSummary",
    "Case",
    "CaseResult",
    "ConformanceReport",
    "Disagreement",
    "Inputs",
    "Tolerance",
    "all_cases",
    "by_id",
    "ops_without_cases",
    "primitives_without_cases",
    "recompute_case",
    "run",
    "run_case",
    "select",
]

#: What pytest finds on this module when it is loaded with ``-p mlplug.conformance``.
_PYTEST_PLUGIN_NAMES = (
    "backend_fixture",
    "pytest_addoption",
    "pytest_generate_tests",
    "pytest_runtest_makereport",
    "pytest_terminal_summary",
)


def __getattr__(name: str) -> Any:
    if name in _PYTEST_PLUGIN_NAMES:
        from . import pytest_plugin

        return getattr(pytest_plugin, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *_PYTEST_PLUGIN_NAMES})


# pluggy >= 1.7 reads hooks statically (a module __getattr__ is not seen): when pytest is
# already imported (``-p mlplug.conformance``, ``pytest_plugins``), bind the hooks for real.
if "pytest" in sys.modules:
    from .pytest_plugin import (
        backend_fixture as backend_fixture,
    )
    from .pytest_plugin import (
        pytest_addoption as pytest_addoption,
    )
    from .pytest_plugin import (
        pytest_generate_tests as pytest_generate_tests,
    )
    from .pytest_plugin import (
        pytest_runtest_makereport as pytest_runtest_makereport,
    )
    from .pytest_plugin import (
        pytest_terminal_summary as pytest_terminal_summary,
    )
