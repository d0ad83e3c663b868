"""Opt-in: tokenization equals llama-cpp-python's ``Llama.tokenize`` on seeded random texts, for
every supported vocabulary and the real Gemma 3 file (skipped when ``llama_cpp`` is not
installed; it is a reference only, never used by mlplug itself)."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

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


#: Runs in a child process: another ggml library loaded here (the ggml plugin's) would clash.
_REFERENCE = """
import json, sys
import llama_cpp
jobs = json.load(sys.stdin)
ref = llama_cpp.Llama(jobs["path"], vocab_only=True, verbose=False)
out = [ref.tokenize(t.encode(), add_bos=bos, special=sp) for t, bos, sp in jobs["texts"]]
json.dump(out, sys.stdout)
"""


def _compare(path: Path) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    jobs = [(t, False, sp) for sp in (False, True) for t in _texts()]
    jobs += [(t, False, True) for t in _SPECIAL_TEXTS] + [("hi", True, True)]
    run = subprocess.run(
        [sys.executable, "-c", _REFERENCE],
        input=json.dumps({"path": str(path), "texts": jobs}),
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        pytest.skip(f"llama_cpp could not run: {run.stderr.strip().splitlines()[-1:]}")
    tok = from_gguf(path)
    for (text, bos, parse_special), expected in zip(jobs, json.loads(run.stdout), strict=True):
        got = tok.encode(text, add_special=bos, parse_special=parse_special)
        assert got == expected, f"{text!r} parse_special={parse_special}"


@pytest.mark.parametrize("name", VOCABS)
def test_random_texts_tokenize_as_llama_cpp(llama_cpp_vocabs: Path, name: str) -> None:
    _compare(llama_cpp_vocabs / f"ggml-vocab-{name}.gguf")


def test_gemma3_random_texts_tokenize_as_llama_cpp(gemma3_gguf: Path) -> None:
    _compare(gemma3_gguf)
