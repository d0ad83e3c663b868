"""Cutting special tokens out of text before the plain-text tokenizer sees it."""

from __future__ import annotations

from .vocab import TokenType, Vocab

__all__ = ["SpecialSplitter", "right_stripping"]

#: The whitespace a special token that strips its right side removes.
_ASCII_SPACE = " \t\n\v\f\r"
#: Special tokens of Phi-3 models that keep the spaces after them.
_PHI3_KEEP_SPACE = frozenset({"<unk>", "<s>", "<|endoftext|>"})

#: A piece of text still to tokenize, or the id of a special token cut out of it.
Fragment = str | int


def right_stripping(vocab: Vocab, special: list[int]) -> frozenset[int]:
    """The special tokens that remove the whitespace right after them in the text: every special
    token but ``<unk>``, ``<s>`` and ``<|endoftext|>`` in Phi-3 models (``general.name``), as
    llama.cpp treats them; none in other models."""
    name = vocab.name.lower()
    if "phi-3" not in name and "phi3" not in name:
        return frozenset()
    found = {i for i in special if vocab.tokens[i] not in _PHI3_KEEP_SPACE}
    eos = vocab.ids.get("</s>")
    if eos is not None:
        found.add(eos)
    return frozenset(found)


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
        self._rstrip = right_stripping(vocab, [i for _, i in found])

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
                        if tid in self._rstrip:
                            part = part.lstrip(_ASCII_SPACE)
                    if part:
                        out.append(part)
            fragments = out
        return fragments
