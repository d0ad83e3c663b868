"""Fixtures for the model-file tests: small GGUF files written into tmp_path."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_TESTS = str(Path(__file__).resolve().parents[2])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)  # makes tests/model_files.py importable

from model_files import LlamaModel, write_llama_gguf  # noqa: E402


@pytest.fixture
def make_llama(tmp_path: Path) -> Callable[..., LlamaModel]:
    """Return a factory writing a llama-like GGUF file into tmp_path (see write_llama_gguf)."""
    counter = iter(range(1_000_000))

    def make(**kwargs: Any) -> LlamaModel:
        return write_llama_gguf(tmp_path / f"model{next(counter)}.gguf", **kwargs)

    return make


@pytest.fixture
def llama(make_llama: Callable[..., LlamaModel]) -> LlamaModel:
    """A two-layer llama-like model with tied output, all F32."""
    return make_llama()
