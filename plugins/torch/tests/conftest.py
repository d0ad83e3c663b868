"""torch plugin tests: the compiled one-column products (C++ built by inductor) are opt-in,
as every native build is (``MLPLUG_SLOW_TESTS=1``; see ``tests/conftest.py``)."""

from __future__ import annotations

import os

if os.environ.get("MLPLUG_SLOW_TESTS") != "1":
    os.environ.setdefault("MLPLUG_TORCH_FUSED", "0")
