"""Tokenization equals llama.cpp's own test pairs for every supported vocabulary.

The ``.inp``/``.out`` files beside llama.cpp's ``ggml-vocab-*.gguf`` files hold texts and the ids
llama.cpp's tokenizer test expects for them, tokenized without BOS/EOS and with special tokens not
parsed (user-defined tokens are still cut out).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from mlplug.errors import ModelFileError
from mlplug.tokenizer import GGUFTokenizer, Tokenizer, from_gguf

pytestmark = pytest.mark.network

Pairs = Callable[[str], list[tuple[str, list[int]]]]

#: Pairs in each vocabulary's files in llama-cpp-python 0.3.36.
PAIR_COUNTS = {
    "llama-spm": 47,
    "phi-3": 47,
    "gpt-2": 47,
    "llama-bpe": 47,
    "qwen2": 47,
    "qwen35": 51,
    "deepseek-coder": 47,
    "deepseek-llm": 47,
    "falcon": 47,
    "starcoder": 47,
    "refact": 47,
    "command-r": 47,
    "mpt": 47,
}

CASES = [(name, i) for name, count in PAIR_COUNTS.items() for i in range(count)]


@functools.cache
def _tokenizer(path: Path) -> GGUFTokenizer:
    return from_gguf(path)


@pytest.mark.parametrize("name", list(PAIR_COUNTS))
def test_pair_files_hold_the_expected_number_of_pairs(pairs_of: Pairs, name: str) -> None:
    assert len(pairs_of(name)) == PAIR_COUNTS[name]


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_tokenization_matches_llama_cpp(
    llama_cpp_vocabs: Path, pairs_of: Pairs, name: str, index: int
) -> None:
    tok = _tokenizer(llama_cpp_vocabs / f"ggml-vocab-{name}.gguf")
    text, expected = pairs_of(name)[index]
    assert tok.encode(text, add_special=False, parse_special=False) == expected, repr(text)


@pytest.mark.parametrize("name", list(PAIR_COUNTS))
def test_decoding_the_pairs_gives_the_text_back(
    llama_cpp_vocabs: Path, pairs_of: Pairs, name: str
) -> None:
    tok = _tokenizer(llama_cpp_vocabs / f"ggml-vocab-{name}.gguf")
    assert isinstance(tok, Tokenizer)
    for text, ids in pairs_of(name):
        assert tok.decode(ids) == text


@pytest.mark.parametrize("name", list(PAIR_COUNTS))
def test_streaming_the_pairs_gives_the_text_back(
    llama_cpp_vocabs: Path, pairs_of: Pairs, name: str
) -> None:
    tok = _tokenizer(llama_cpp_vocabs / f"ggml-vocab-{name}.gguf")
    for text, ids in pairs_of(name):
        stream = tok.stream_decoder()
        chunks = [stream.add(t) for t in ids] + [stream.flush()]
        assert "".join(chunks) == text


@pytest.mark.parametrize(
    ("name", "model"), [("bert-bge", "bert"), ("nomic-bert-moe", "t5"), ("gemma-4", "gemma4")]
)
def test_an_unsupported_tokenizer_model_is_named(
    llama_cpp_vocabs: Path, name: str, model: str
) -> None:
    with pytest.raises(ModelFileError, match=f"unsupported tokenizer model '{model}'") as info:
        from_gguf(llama_cpp_vocabs / f"ggml-vocab-{name}.gguf")
    assert info.value.key == "tokenizer.ggml.model"
