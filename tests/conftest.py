"""Test configuration: the conformance plugin parametrises ``backend`` and ``case``.

``pytest tests/conformance --backend cpu_numpy`` (``--backend`` is this repository's short form
of the plugin's ``--mlplug-backend``; repeatable) narrows the installed backends.
"""

from __future__ import annotations

import os

import pytest
from model_files import gemma3_gguf  # noqa: F401  (the real Gemma 3 file, for every test)

pytest_plugins = ["mlplug.conformance"]

# torch's compiled one-column products build C++ through inductor: opt-in here, as every native
# build is (MLPLUG_SLOW_TESTS=1; the conformance runs of .ci/run use the default, compiled).
if os.environ.get("MLPLUG_SLOW_TESTS") != "1":
    os.environ.setdefault("MLPLUG_TORCH_FUSED", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--backend NAME``, an alias of ``--mlplug-backend NAME``."""
    parser.addoption(
        "--backend",
        action="append",
        dest="mlplug_backend",
        default=None,
        metavar="NAME",
        help="alias of --mlplug-backend (repeatable)",
    )
