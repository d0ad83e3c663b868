"""Byte-level BPE (``tokenizer.ggml.model = gpt2``) encoding of plain text (no special tokens)."""

from __future__ import annotations

import functools

from .merging import merge_pairs
from .pretokenize import WHOLE_WORD_FIRST, Pretokenizer
from .vocab import Vocab

__all__ = ["BPEEncoder", "byte_to_char", "char_to_byte"]


@functools.cache
def byte_to_char() -> tuple[str, ...]:
    """GPT-2's map of each byte to a printable character: printable Latin-1 bytes stand for
    themselves, the others take the code points from 256 up, in byte order."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    kept = set(keep)
    chars: list[str] = []
    extra = 0
    for b in range(256):
        if b in kept:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return tuple(chars)


@functools.cache
def char_to_byte() -> dict[str, int]:
    """The inverse of :func:`byte_to_char`."""
    return {c: b for b, c in enumerate(byte_to_char())}


class BPEEncoder:
    """Encodes text with a byte-level BPE vocabulary: pre-tokenize into words, map each word's
    UTF-8 bytes to GPT-2's printable characters, merge pairs by lowest rank in the merges list.

    :param vocab: a checked vocabulary with merges.
    :param family: the pre-tokenizer family (a key of
        :data:`~mlplug.tokenizer.pretokenize.FAMILIES`).
    """

    def __init__(self, vocab: Vocab, family: str) -> None:
        self._ids = vocab.ids
        self._ranks = {pair: rank for rank, pair in reversed(list(enumerate(vocab.merges)))}
        self._pre = Pretokenizer(family)
        self._whole_word_first = family in WHOLE_WORD_FIRST
        self._chars = byte_to_char()
        self._byte_ids = [vocab.ids.get(c, vocab.unk_id) for c in self._chars]
        self._cache: dict[str, list[int]] = {}

    def _priority(self, left: str, right: str) -> float | None:
        rank = self._ranks.get((left, right))
        return None if rank is None else float(rank)

    def _word(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        mapped = "".join(self._chars[b] for b in word.encode("utf-8"))
        whole = self._ids.get(mapped) if self._whole_word_first else None
        if whole is not None:
            out = [whole]
        else:
            out = []
            for piece in merge_pairs(list(mapped), self._priority):
                tid = self._ids.get(piece)
                if tid is not None:
                    out.append(tid)
                    continue
                for ch in piece:
                    byte_id = self._byte_ids[char_to_byte()[ch]]
                    if byte_id is not None:
                        out.append(byte_id)
        if len(self._cache) < 65536:
            self._cache[word] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Return the ids of ``text``."""
        out: list[int] = []
        for word in self._pre.split(text):
            out.extend(self._word(word))
        return out
