"""A tiny fake tokenizer, model and backend for the generation tests (no model file needed).

The "language": after a letter comes the next letter of ``ALPHABET``; after its last letter,
the end-of-turn token. So a prompt ending in "e" continues "fgh" and ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SPECIALS = ["<bos>", "<eos>", "<eot>", "<start>"]
ALPHABET = "abcdefgh"
CHARS = ALPHABET + " \n:éuserodlmitn"
VOCAB = SPECIALS + [c for c in dict.fromkeys(CHARS)]
BOS, EOS, EOT, START = 0, 1, 2, 3


class FakeDecoder:
    def __init__(self, tok: FakeTokenizer) -> None:
        self.tok = tok

    def add(self, token: int) -> str:
        return self.tok.decode([token])

    def flush(self) -> str:
        return ""


class FakeTokenizer:
    """One token per character; the specials are parsed longest first."""

    vocab_size = len(VOCAB)
    bos_id: int | None = BOS
    add_bos = True

    def is_end_of_generation(self, token: int) -> bool:
        return token in (EOS, EOT)

    def encode(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        ids = [BOS] if add_special and self.add_bos else []
        i = 0
        while i < len(text):
            for s, tid in sorted(((s, VOCAB.index(s)) for s in SPECIALS), key=lambda x: -len(x[0])):
                if parse_special and text.startswith(s, i):
                    ids.append(tid)
                    i += len(s)
                    break
            else:
                ids.append(VOCAB.index(text[i]))
                i += 1
        return ids

    def piece(self, token: int) -> str:
        return VOCAB[token]

    def decode(self, tokens: Sequence[int]) -> str:
        return "".join(VOCAB[t] for t in tokens if t != BOS)

    def stream_decoder(self) -> FakeDecoder:
        return FakeDecoder(self)


def next_token(token: int) -> int:
    """The most likely token after ``token`` in the fake language."""
    piece = VOCAB[token]
    if piece in ALPHABET:
        k = ALPHABET.index(piece)
        return VOCAB.index(ALPHABET[k + 1]) if k + 1 < len(ALPHABET) else EOT
    return VOCAB.index("a")


class FakeModel:
    """Checks that positions continue its cache, and scores ``next_token`` highest."""

    def __init__(self, capacity: int = 64, interrupt_at: int | None = None) -> None:
        self.capacity = capacity
        self.vocab_size = len(VOCAB)
        self.cache: list[int] = []
        self.computed = 0  # tokens run through forward in total
        self.calls: list[list[int]] = []
        self.interrupt_at = interrupt_at  # raise KeyboardInterrupt on this forward call
        self.closed = False

    def forward(
        self, tokens: Sequence[int], positions: Sequence[int], outputs: Sequence[int] | None = None
    ) -> np.ndarray:
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            self.interrupt_at = None
            self.calls.append([-1])
            self.cache.append(-1)  # a half-written step
            raise KeyboardInterrupt
        assert list(positions) == list(range(len(self.cache), len(self.cache) + len(tokens)))
        assert len(self.cache) + len(tokens) <= self.capacity
        self.calls.append(list(tokens))
        self.cache.extend(tokens)
        self.computed += len(tokens)
        wanted = [len(tokens) - 1] if outputs is None else list(outputs)
        out = np.zeros((len(wanted), self.vocab_size), dtype=np.float32)
        for row, o in enumerate(wanted):
            out[row, next_token(tokens[o])] = 5.0
            out[row, VOCAB.index("b")] += 1.0  # a runner-up, for sampling tests
        return out

    def reset(self) -> None:
        self.cache = []

    def close(self) -> None:
        self.closed = True


class FakeConfig:
    def __init__(self, arch: str = "fake", template: str = "") -> None:
        self.arch = arch
        self.template = template

    def architecture(self) -> str:
        return self.arch

    def string(self, key: str, default: str = "") -> str:
        return self.template if key == "tokenizer.chat_template" else default

    def uint(self, key: str, default: int = 0) -> int:
        return EOS if key == "tokenizer.ggml.eos_token_id" else default


class FakeBackend:
    name = "fake"

    def __init__(self, config: FakeConfig | None = None) -> None:
        self._config = config or FakeConfig()
        self.closed = False

    def config(self) -> Any:
        return self._config

    def close(self) -> None:
        self.closed = True


TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<start>{{ 'model' if m['role'] == 'assistant' else m['role'] }}:{{ m['content'] }}<eot>\n"
    "{% endfor %}{% if add_generation_prompt %}<start>model:{% endif %}"
)


def text_model(capacity: int = 64, template: str = TEMPLATE, **kw: Any) -> Any:
    from mlplug.generate import TextModel

    model = FakeModel(capacity, **kw)
    backend = FakeBackend(FakeConfig(template=template))
    return TextModel(backend, model, FakeTokenizer(), owns_backend=True)  # type: ignore[arg-type]
