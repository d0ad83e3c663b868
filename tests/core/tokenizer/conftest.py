"""Fixtures of the tokenizer tests: small hand-made vocabularies, and llama.cpp's vocabulary files
with their tokenization pairs (from the llama-cpp-python sdist, fetched from PyPI once).

Vocabulary files are written by ``model_files.write_vocab_gguf``; the real Gemma 3 file is the
``gemma3_gguf`` fixture of ``tests/conftest.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from model_files import cache_dir, kv_value, write_vocab_gguf

from mlplug.modelfile.config import Config

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
SDIST_NAME = "llama_cpp_python-0.3.36.tar.gz"
VOCAB_DIR = "vendor/llama.cpp/models/"


def make_config(metadata: Mapping[str, Any]) -> Config:
    """A Config from plain values (``tokenizer.ggml.`` is put before keys without a dot)."""
    kvs = {}
    for key, value in metadata.items():
        full = key if "." in key else f"tokenizer.ggml.{key}"
        kvs[full] = kv_value(value)
    kvs.setdefault("general.architecture", kv_value("llama"))
    return Config(kvs)


def spm_vocab(**extra: Any) -> dict[str, Any]:
    """A tiny SentencePiece vocabulary: control tokens, 256 byte tokens, a few pieces."""
    tokens = ["<unk>", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>", "\n\n"]
    types = [2, 3, 3, 3, 3, 4]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    pieces = "\u2581 h e l o w r d \n he ll llo hello \u2581hello \u2581w or \u2581wor".split(" ")
    pieces += ["\u2581world", "ld", "é"]
    tokens += pieces
    types += [1] * len(pieces)
    scores = [0.0] * (len(tokens) - len(pieces)) + [-float(i) for i in range(len(pieces))]
    # longer pieces score higher so "▁hello" wins over "▁" + "hello"
    for name in ("\u2581hello", "\u2581world", "hello"):
        scores[tokens.index(name)] = 10.0
    vocab: dict[str, Any] = {
        "model": "llama",
        "tokens": tokens,
        "scores": scores,
        "token_type": types,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "unknown_token_id": 0,
    }
    vocab.update(extra)
    return vocab


@pytest.fixture
def config_of() -> Callable[[Mapping[str, Any]], Config]:
    """Make a Config from plain values."""
    return make_config


def _find_sdist(cache: Path) -> Path | None:
    given = os.environ.get("MLPLUG_LLAMA_CPP_SDIST")
    for place in ([Path(given)] if given else []) + [cache]:
        if place.is_file():
            return place
        if (place / SDIST_NAME).is_file():
            return place / SDIST_NAME
    return None


def _download(cache: Path) -> Path | None:
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += [LLAMA_CPP_PYTHON, "-d", str(cache), "--quiet"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    return _find_sdist(cache)


def _extract_vocabs(sdist: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member in tar:
            name = member.name.split("/", 1)[-1]
            if not member.isfile() or not name.startswith(VOCAB_DIR + "ggml-vocab-"):
                continue
            source = tar.extractfile(member)
            if source is not None:
                (tmp / Path(name).name).write_bytes(source.read())
    tmp.rename(dest)


@pytest.fixture(scope="session")
def llama_cpp_vocabs() -> Path:
    """The folder of llama.cpp's ``ggml-vocab-*.gguf`` files and their ``.inp``/``.out`` pairs.

    Taken from the llama-cpp-python 0.3.36 sdist: ``MLPLUG_LLAMA_CPP_SDIST`` (the tarball or its
    folder) if set, else downloaded from PyPI once into the test cache (``MLPLUG_TEST_CACHE``,
    default ``~/.cache/mlplug-tests``). Skips the test when neither works (offline).
    """
    cache = cache_dir() / "llama-cpp-python-0.3.36"
    vocabs = cache / "vocab"
    if not vocabs.is_dir():
        sdist = _find_sdist(cache) or _download(cache)
        if sdist is None:
            pytest.skip(f"{LLAMA_CPP_PYTHON} sdist not available (offline?)")
        _extract_vocabs(sdist, vocabs)
    return vocabs


def read_pairs(vocabs: Path, name: str) -> list[tuple[str, list[int]]]:
    """The (text, ids) pairs of one vocabulary (the ids are without BOS)."""
    stem = vocabs / f"ggml-vocab-{name}.gguf"
    texts = (
        stem.with_suffix(".gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    )
    lines = stem.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
    return [(text, [int(t) for t in lines[i].split()]) for i, text in enumerate(texts)]


@pytest.fixture(scope="session")
def pairs_of(llama_cpp_vocabs: Path) -> Callable[[str], list[tuple[str, list[int]]]]:
    """Return the (text, ids) pairs of a vocabulary by name (``qwen2``)."""
    return lambda name: read_pairs(llama_cpp_vocabs, name)


@pytest.fixture
def spm_metadata() -> Callable[..., dict[str, Any]]:
    """Make the metadata of a tiny SentencePiece vocabulary (keyword arguments override keys)."""
    return spm_vocab


@pytest.fixture
def vocab_file(tmp_path: Path) -> Callable[[Mapping[str, Any]], Path]:
    """Write a vocabulary-only GGUF file from plain metadata values."""
    return lambda metadata: write_vocab_gguf(tmp_path / "vocab.gguf", metadata)
