"""The tokenizer of a GGUF vocabulary: special tokens, SentencePiece or byte-level BPE, decoding."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import OutOfRangeError
from .bpe import BPEEncoder, char_to_byte
from .decode import IncrementalTextDecoder
from .special import SpecialSplitter
from .spm import SPACE, SentencePieceEncoder
from .vocab import TokenType, Vocab

__all__ = ["GGUFTokenizer"]

_UNKNOWN_TEXT = "\u2585".encode()


def _byte_token(text: str) -> bytes | None:
    if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
        try:
            return bytes([int(text[3:5], 16)])
        except ValueError:
            return None
    return None


class GGUFTokenizer:
    """A :class:`~mlplug.tokenizer.Tokenizer` for a checked GGUF vocabulary.

    Use :func:`mlplug.tokenizer.from_config` or :func:`mlplug.tokenizer.from_gguf` to make one.

    :param vocab: the vocabulary.
    :param family: the pre-tokenizer family of a BPE vocabulary (ignored for SentencePiece).
    """

    def __init__(self, vocab: Vocab, family: str = "default") -> None:
        self.vocab = vocab
        self._special = SpecialSplitter(vocab)
        self._spm = SentencePieceEncoder(vocab) if vocab.model == "llama" else None
        self._bpe = BPEEncoder(vocab, family) if vocab.model == "gpt2" else None
        self._ends = vocab.end_ids()
        self._bytes = [self._piece_bytes(i) for i in range(vocab.size)]

    def __repr__(self) -> str:
        kind = "SentencePiece" if self._spm is not None else "BPE"
        return f"<GGUFTokenizer {kind} vocab_size={self.vocab_size} pre={self.vocab.pre!r}>"

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary."""
        return self.vocab.size

    @property
    def bos_id(self) -> int | None:
        """The beginning-of-sequence token, or None when the file has none."""
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        """The end-of-sequence token, or None when the file has none."""
        return self.vocab.eos_id

    @property
    def add_bos(self) -> bool:
        """Whether :meth:`encode` puts BOS first when ``add_special`` is true."""
        return self.vocab.add_bos

    def is_end_of_generation(self, token: int) -> bool:
        """Whether ``token`` ends a reply (EOS, end-of-turn, or another end token)."""
        return token in self._ends

    def encode(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Return the token ids of ``text``.

        :param add_special: add BOS (and EOS) as the file says.
        :param parse_special: cut control tokens out of the text too (user-defined tokens are
            always cut), longest match first, instead of tokenizing their text.
        """
        vocab = self.vocab
        out: list[int] = []
        if add_special and vocab.add_bos and vocab.bos_id is not None:
            out.append(vocab.bos_id)
        prev_special = True
        for frag in self._special.split(text, parse_special=parse_special):
            if isinstance(frag, int):
                out.append(frag)
                prev_special = True
                continue
            if self._spm is not None:
                prefix = vocab.add_space_prefix and prev_special
                out.extend(self._spm.encode(frag, space_prefix=prefix))
            elif self._bpe is not None:
                out.extend(self._bpe.encode(frag))
            prev_special = False
        if add_special and vocab.add_eos and vocab.eos_id is not None:
            out.append(vocab.eos_id)
        return out

    def _check(self, token: int) -> None:
        if not 0 <= token < self.vocab.size:
            msg = f"token id {token} is outside the vocabulary (size {self.vocab.size})"
            raise OutOfRangeError(msg)

    def piece(self, token: int) -> str:
        """The text of one token as the vocabulary stores it (for display)."""
        self._check(token)
        return self.vocab.tokens[token]

    def _piece_bytes(self, token: int) -> bytes:
        text = self.vocab.tokens[token]
        kind = self.vocab.types[token]
        if kind is TokenType.CONTROL:
            return b""
        if kind is TokenType.UNKNOWN:
            return _UNKNOWN_TEXT
        if kind is TokenType.BYTE:
            raw = _byte_token(text)
            if raw is not None:
                return raw
        if kind is TokenType.USER_DEFINED:
            return text.encode()
        if self._spm is not None:
            return text.replace(SPACE, " ").encode()
        table = char_to_byte()
        return b"".join(bytes([table[c]]) if c in table else c.encode() for c in text)

    def token_bytes(self, token: int) -> bytes:
        """The bytes ``token`` stands for in decoded text (control tokens stand for none)."""
        self._check(token)
        return self._bytes[token]

    def _text_bytes(self, token: int, first: bool) -> tuple[bytes, bool]:
        """The bytes of ``token`` and whether it starts the text; the first piece of text loses
        the space a SentencePiece vocabulary with ``add_space_prefix`` put before it."""
        data = self.token_bytes(token)
        if not data:
            return data, False
        if first and self._spm is not None and self.vocab.add_space_prefix:
            if data.startswith(b" "):
                data = data[1:]
        return data, True

    def decode(self, tokens: Sequence[int]) -> str:
        """Return the text of ``tokens`` (invalid UTF-8 becomes U+FFFD; control tokens such as
        BOS and EOS stand for no text)."""
        parts: list[bytes] = []
        first = True
        for t in tokens:
            data, started = self._text_bytes(t, first)
            if started:
                first = False
            parts.append(data)
        return b"".join(parts).decode("utf-8", errors="replace")

    def stream_decoder(self) -> IncrementalTextDecoder:
        """Return a new stream decoder for text generated token by token."""
        return IncrementalTextDecoder(self._text_bytes)
