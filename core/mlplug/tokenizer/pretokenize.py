"""Pre-tokenizers of byte-level BPE vocabularies: text to words, by the family that
``tokenizer.ggml.pre`` names.

Each family is a list of regular expressions applied in turn: every expression splits each piece
the previous ones produced into its matches and the text between them. The expressions use
Unicode classes (``\\p{L}`` letters, ``\\p{N}`` numbers, ``\\p{P}`` punctuation, ``\\p{M}`` marks)
that Python's :mod:`re` lacks, so :func:`translate` rewrites them into explicit character classes
built from :mod:`unicodedata` categories (``\\s`` becomes Unicode's White_Space set).
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Sequence
from typing import Final

__all__ = ["FAMILIES", "Pretokenizer", "family_of", "translate"]

_CONTRACTIONS: Final = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2: Final = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3: Final = (
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2: Final = (
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35: Final = (
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
    + r"|\s+(?!\S)|\s+"
)
_CJK: Final = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_DEEPSEEK_LATIN: Final = (
    r"\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293"
    "\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c"
    "\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5"
    "\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    "\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59"
    "\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc"
    "\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee"
    "\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e"
    "\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f"
    "\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943]+"
)

#: The expressions of each pre-tokenizer family, applied in order.
FAMILIES: Final[dict[str, tuple[str, ...]]] = {
    "gpt2": (_GPT2,),
    "llama3": (_LLAMA3,),
    "qwen2": (_QWEN2,),
    "qwen35": (_QWEN35,),
    "starcoder": (r"\p{N}", _GPT2),
    "falcon": (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]"),
    "deepseek-coder": (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"),
    "deepseek-llm": (
        r"[\r\n]",
        _DEEPSEEK_LATIN,
        "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
        r"\s+$",
        _CJK,
        r"\p{N}+",
    ),
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"),
}

#: ``tokenizer.ggml.pre`` names and the family each one uses.
_PRE_NAMES: Final = {
    "default": "default",
    "gpt-2": "gpt2",
    "gpt2": "gpt2",
    "phi-2": "gpt2",
    "mpt": "gpt2",
    "olmo": "gpt2",
    "jais": "gpt2",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "llama-bpe": "llama3",
    "falcon3": "llama3",
    "pixtral": "llama3",
    "dbrx": "llama3",
    "smaug-bpe": "llama3",
    "qwen2": "qwen2",
    "deepseek-r1-qwen": "qwen2",
    "stablelm2": "qwen2",
    "qwen35": "qwen35",
    "starcoder": "starcoder",
    "refact": "starcoder",
    "command-r": "starcoder",
    "smollm": "starcoder",
    "codeshell": "starcoder",
    "exaone": "starcoder",
    "minerva-7b": "starcoder",
    "falcon": "falcon",
    "deepseek-coder": "deepseek-coder",
    "deepseek-llm": "deepseek-llm",
}

#: Families that look a whole word up in the vocabulary before merging.
WHOLE_WORD_FIRST: Final = frozenset({"llama3"})

_WHITE_SPACE: Final = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CATEGORY_PREFIX: Final = {"L": "L", "N": "N", "P": "P", "M": "M"}


def family_of(pre: str) -> str | None:
    """Return the family of a ``tokenizer.ggml.pre`` name (an empty name is ``default``), or
    None when the name is unknown."""
    return _PRE_NAMES.get(pre or "default")


def _escape(cp: int) -> str:
    return f"\\U{cp:08x}"


@functools.cache
def _category_classes() -> dict[str, str]:
    """The body of a character class for each major category letter (L, N, P, M...): one pass
    over every code point, ranges joined."""
    parts: dict[str, list[str]] = {}
    current = ""
    start = 0
    for cp in range(sys.maxunicode + 2):
        major = unicodedata.category(chr(cp))[0] if cp <= sys.maxunicode else ""
        if major == current:
            continue
        if current:
            end = cp - 1
            text = _escape(start) if start == end else f"{_escape(start)}-{_escape(end)}"
            parts.setdefault(current, []).append(text)
        current, start = major, cp
    return {major: "".join(ranges) for major, ranges in parts.items()}


def _category_class(prefix: str) -> str:
    """The body of a character class matching every code point of major category ``prefix``."""
    return _category_classes()[prefix]


def translate(pattern: str) -> str:
    """Rewrite ``\\p{L}``, ``\\p{N}``, ``\\p{P}``, ``\\p{M}``, ``\\s`` and ``\\S`` in ``pattern``
    as explicit character classes Python's :mod:`re` understands."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "p" and pattern.startswith("{", i + 2):
                end = pattern.index("}", i)
                name = pattern[i + 3 : end]
                if name not in _CATEGORY_PREFIX:
                    msg = f"unsupported Unicode class \\p{{{name}}} in {pattern!r}"
                    raise ValueError(msg)
                body = _category_class(_CATEGORY_PREFIX[name])
                out.append(body if in_class else f"[{body}]")
                i = end + 1
                continue
            if nxt == "s":
                out.append(_WHITE_SPACE if in_class else f"[{_WHITE_SPACE}]")
                i += 2
                continue
            if nxt == "S" and not in_class:
                out.append(f"[^{_WHITE_SPACE}]")
                i += 2
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class and pattern[i - 1] not in "[^":
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


class Pretokenizer:
    """Splits text into words with the expressions of one family.

    :param family: a key of :data:`FAMILIES`.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._patterns: Sequence[re.Pattern[str]] = [_compiled(p) for p in FAMILIES[family]]

    def split(self, text: str) -> list[str]:
        """Return the words of ``text`` (their concatenation is ``text``)."""
        pieces = [text] if text else []
        for pattern in self._patterns:
            out: list[str] = []
            for piece in pieces:
                pos = 0
                for m in pattern.finditer(piece):
                    start, end = m.span()
                    if start == end:
                        continue
                    if start > pos:
                        out.append(piece[pos:start])
                    out.append(piece[start:end])
                    pos = end
                if pos < len(piece):
                    out.append(piece[pos:])
            pieces = out
        return pieces
