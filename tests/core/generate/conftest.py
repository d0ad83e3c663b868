"""Makes the fake tokenizer, model and backend of ``generate_fakes.py`` importable."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def _tokenizer_conftest() -> object:
    """The tokenizer tests' conftest, whose ``gemma3_gguf`` fixture finds or downloads Gemma 3."""
    import importlib.util

    path = Path(__file__).parents[1] / "tokenizer" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_tokenizer_conftest_for_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gemma3_gguf = _tokenizer_conftest().gemma3_gguf  # type: ignore[attr-defined]
