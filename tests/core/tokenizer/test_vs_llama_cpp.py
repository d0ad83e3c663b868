"""Opt-in: tokenization equals llama-cpp-python's ``Llama.tokenize`` on seeded random texts, for
every supported vocabulary and the real Gemma 3 file (skipped when ``llama_cpp`` is not
installed; it is a reference only, never used by mlplug itself)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from mlplug.tokenizer import from_gguf

pytestmark = pytest.mark.network

VOCABS = [
    "llama-spm",
    "phi-3",
    "gpt-2",
    "llama-bpe",
    "qwen2",
    "qwen35",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "starcoder",
    "refact",
    "command-r",
    "mpt",
]

_ALPHABET = [
    *"abcXYZ019 \n\t.,'!?-_()[]{}<>/\\\"",
    *"éüñßçøåÆЖж日本語中文한국어ãÓ€£¥•…“”—",
    *["🦙", "😀", "👍🏽", "\u200b", "\u00a0", "\u3000", "\r\n", "  ", "'s", "'LL", "12345", "\n\n"],
]
_SPECIAL_TEXTS = [
    "<start_of_turn>user\nhi<end_of_turn>\n",
    "<s>x</s>",
    "<|im_start|>a<|im_end|>",
    "<|begin_of_text|><|eot_id|>",
    "<|user|>\nHi  <|end|>\n<|assistant|>  x",
    "<s> x <unk> y<|endoftext|> z </s>  b",
]


def _texts(count: int = 200) -> list[str]:
    rng = random.Random(0)
    return ["".join(rng.choices(_ALPHABET, k=rng.randint(1, 40))) for _ in range(count)]


def _compare(path: Path) -> None:
    llama_cpp: Any = pytest.importorskip("llama_cpp")
    ref = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    tok = from_gguf(path)
    for parse_special in (False, True):
        texts = _texts() + (_SPECIAL_TEXTS if parse_special else [])
        for text in texts:
            expected = ref.tokenize(text.encode(), add_bos=False, special=parse_special)
            got = tok.encode(text, add_special=False, parse_special=parse_special)
            assert got == expected, f"{text!r} parse_special={parse_special}"
    assert tok.encode("hi") == ref.tokenize(b"hi", add_bos=True, special=True)


@pytest.mark.parametrize("name", VOCABS)
def test_random_texts_tokenize_as_llama_cpp(llama_cpp_vocabs: Path, name: str) -> None:
    _compare(llama_cpp_vocabs / f"ggml-vocab-{name}.gguf")


def test_gemma3_random_texts_tokenize_as_llama_cpp(gemma3_gguf: Path) -> None:
    _compare(gemma3_gguf)
