"""SentencePiece (``tokenizer.ggml.model = llama``) encoding of plain text (no special tokens)."""

from __future__ import annotations

from .merging import merge_pairs
from .vocab import Vocab

__all__ = ["SPACE", "SentencePieceEncoder"]

#: The character SentencePiece vocabularies store for a space.
SPACE = "\u2581"


class SentencePieceEncoder:
    """Encodes text with a SentencePiece vocabulary: spaces become ``▁``, then the adjacent pair
    whose joined text is a token with the highest score is merged (leftmost on ties) until no
    pair is a token; a piece outside the vocabulary becomes its ``<0xXX>`` byte tokens.

    :param vocab: a checked vocabulary.
    """

    def __init__(self, vocab: Vocab) -> None:
        self._ids = vocab.ids
        self._scores = vocab.scores
        self._bytes = [vocab.ids.get(f"<0x{b:02X}>", vocab.unk_id) for b in range(256)]

    def _priority(self, left: str, right: str) -> float | None:
        tid = self._ids.get(left + right)
        return None if tid is None else -self._scores[tid]

    def encode(self, text: str, *, space_prefix: bool) -> list[int]:
        """Return the ids of ``text``; ``space_prefix`` puts a space before it first."""
        if space_prefix:
            text = " " + text
        text = text.replace(" ", SPACE)
        out: list[int] = []
        for piece in merge_pairs(list(text), self._priority):
            tid = self._ids.get(piece)
            if tid is not None:
                out.append(tid)
                continue
            for b in piece.encode("utf-8"):
                byte_id = self._bytes[b]
                if byte_id is not None:
                    out.append(byte_id)
        return out
