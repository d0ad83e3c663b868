"""Cutting special tokens out of text before the plain-text tokenizer sees it."""

from __future__ import annotations

from .vocab import TokenType, Vocab

__all__ = ["SpecialSplitter"]

#: A piece of text still to tokenize, or the id of a special token cut out of it.
Fragment = str | int


class SpecialSplitter:
    """Finds special tokens (control, user-defined and unknown types) in text.

    Tokens are cut longest first: the longest special token is cut out of all the text, then the
    next longest out of what is left, so an overlap goes to the longer token (Gemma's ``"\\n\\n"``
    is one token, not two ``"\\n"``). Without ``parse_special`` only user-defined tokens are cut.

    :param vocab: a checked vocabulary.
    """

    def __init__(self, vocab: Vocab) -> None:
        kinds = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)
        found = [
            (text, tid)
            for tid, (text, kind) in enumerate(zip(vocab.tokens, vocab.types, strict=True))
            if kind in kinds and text
        ]
        found.sort(key=lambda item: -len(item[0]))
        self._all = found
        self._user = [(t, i) for t, i in found if vocab.types[i] is TokenType.USER_DEFINED]

    def split(self, text: str, *, parse_special: bool) -> list[Fragment]:
        """Return ``text`` as pieces of plain text and special-token ids, in order."""
        fragments: list[Fragment] = [text] if text else []
        for token, tid in self._all if parse_special else self._user:
            if token not in text:
                continue
            out: list[Fragment] = []
            for frag in fragments:
                if isinstance(frag, int) or token not in frag:
                    out.append(frag)
                    continue
                parts = frag.split(token)
                for k, part in enumerate(parts):
                    if k:
                        out.append(tid)
                    if part:
                        out.append(part)
            fragments = out
        return fragments
