"""pluggy hook implementations of the ``ggml`` backend (entry point ``mlplug: ggml``).

Kept light on purpose: importing this module must not open the ggml libraries; hooks reach the
backend lazily, when they are called.
"""

from __future__ import annotations
