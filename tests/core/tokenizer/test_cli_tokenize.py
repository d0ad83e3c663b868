"""``mlplug tokenize MODEL.gguf TEXT``: ids from a vocabulary-only file, no backend needed."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from mlplug.cli import main

VocabFile = Callable[[Mapping[str, Any]], Path]


@pytest.fixture
def spm_file(vocab_file: VocabFile, spm_metadata: Callable[..., dict[str, Any]]) -> Path:
    return vocab_file(spm_metadata(add_bos_token=True))


def test_prints_the_ids_with_bos_and_special_tokens_parsed(
    spm_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tokenize", str(spm_file), "<start_of_turn>hello"]) == 0
    out = capsys.readouterr().out.split()
    assert out[:2] == ["1", "3"]
    assert len(out) == 3


def test_json_gives_ids_and_pieces(spm_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenize", str(spm_file), "hello world", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pieces"] == ["<s>", "\u2581hello", "\u2581world"]
    assert data["ids"][0] == 1
    assert len(data["ids"]) == 3


def test_no_special_and_no_parse_special(
    spm_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["tokenize", str(spm_file), "<s>hello", "--json", "--no-special", "--no-parse-special"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert 1 not in data["ids"]
    assert "".join(data["pieces"]).endswith("hello")


def test_a_file_without_a_usable_vocabulary_is_one_error_line(
    vocab_file: VocabFile, capsys: pytest.CaptureFixture[str]
) -> None:
    path = vocab_file({"model": "bert", "tokens": ["a"]})
    assert main(["tokenize", str(path), "a"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mlplug: error: ")
    assert "unsupported tokenizer model 'bert'" in err
    assert "tokenizer.ggml.model" in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenize", str(tmp_path / "nope.gguf"), "a"]) == 1
    assert "nope.gguf" in capsys.readouterr().err
