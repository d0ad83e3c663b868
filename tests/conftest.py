"""Test configuration: the conformance plugin parametrises ``backend`` and ``case``.

``pytest tests/conformance --backend cpu_numpy`` (``--backend`` is this repository's short form
of the plugin's ``--mlplug-backend``; repeatable) narrows the installed backends.
"""

from __future__ import annotations

import pytest
from model_files import gemma3_gguf  # noqa: F401  (the real Gemma 3 file, for every test)

pytest_plugins = ["mlplug.conformance"]


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
