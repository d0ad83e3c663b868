"""Gemma 3's tokenizer on the real model file (SentencePiece without a space prefix, BOS 2,
user-defined whitespace tokens, chat control tokens). The expected ids are llama.cpp's
(``Llama.tokenize(text, add_bos=True, special=True)`` of llama-cpp-python 0.3.36)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from mlplug.tokenizer import GGUFTokenizer, from_gguf

pytestmark = pytest.mark.network

CHAT = "<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n"

#: (text, ids with BOS, special tokens parsed) as llama.cpp tokenizes them.
EXPECTED = [
    ("Hello world", [2, 9259, 1902]),
    ("\n\n", [2, 108]),
    ("a\n\nb", [2, 236746, 108, 236763]),
    ("  two spaces", [2, 138, 13498, 9952]),
    (CHAT, [2, 105, 2364, 107, 11355, 563, 506, 7217, 3730, 236881, 106, 107, 105, 4368, 107]),
]


@functools.cache
def _tokenizer(path: Path) -> GGUFTokenizer:
    return from_gguf(path)


@pytest.mark.parametrize(("text", "ids"), EXPECTED, ids=[repr(t)[:20] for t, _ in EXPECTED])
def test_gemma3_tokenizes_as_llama_cpp(gemma3_gguf: Path, text: str, ids: list[int]) -> None:
    tok = _tokenizer(gemma3_gguf)
    assert tok.encode(text) == ids
    # control tokens (BOS, the chat markers) stand for no text
    for marker in ("<start_of_turn>", "<end_of_turn>"):
        text = text.replace(marker, "")
    assert tok.decode(ids) == text


def test_gemma3_vocabulary_facts(gemma3_gguf: Path) -> None:
    tok = _tokenizer(gemma3_gguf)
    assert tok.vocab_size == 262144
    assert (tok.bos_id, tok.add_bos) == (2, True)
    assert not tok.vocab.add_space_prefix
    assert tok.is_end_of_generation(1)  # <eos>
    assert tok.is_end_of_generation(106)  # <end_of_turn>
    assert not tok.is_end_of_generation(105)
    assert tok.encode("<end_of_turn>", add_special=False, parse_special=False) != [106]


def test_gemma3_streams_an_emoji_made_of_byte_tokens(gemma3_gguf: Path) -> None:
    tok = _tokenizer(gemma3_gguf)
    text = "Llamas 🦙 and ü"
    ids = tok.encode(text, add_special=False)
    stream = tok.stream_decoder()
    chunks = [stream.add(t) for t in ids]
    assert "".join(chunks) + stream.flush() == text
    assert all("\ufffd" not in c for c in chunks)
