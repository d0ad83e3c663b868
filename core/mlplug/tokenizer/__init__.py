"""Tokenizers read from a GGUF vocabulary: text to token ids and back.

:class:`Tokenizer` is the interface the model layer, generation and the CLI use.
:func:`from_config` (a model's ``backend.config()``) and :func:`from_gguf` (a file; only its
metadata is read) return a :class:`GGUFTokenizer`: SentencePiece (``tokenizer.ggml.model =
llama``) or byte-level BPE (``gpt2``, pre-tokenizer families gpt2, llama3, qwen2, qwen35,
starcoder, falcon, deepseek-coder, deepseek-llm and the default one), special tokens cut out
longest first, BOS/EOS as the file says, byte-fallback tokens, streaming decoding.

>>> tok = from_gguf("gemma3.gguf")  # doctest: +SKIP
>>> tok.encode("<start_of_turn>user\n\nHi")  # doctest: +SKIP
[2, 105, 2364, 108, 10979]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .factory import from_config, from_gguf
from .gguf_tokenizer import GGUFTokenizer

__all__ = ["GGUFTokenizer", "StreamDecoder", "Tokenizer", "from_config", "from_gguf"]


@runtime_checkable
class StreamDecoder(Protocol):
    """Turns token ids into text as they are generated, never splitting a UTF-8 character."""

    def add(self, token: int) -> str:
        """Take one more token; return the text that is now complete (may be empty)."""
        ...

    def flush(self) -> str:
        """Return what is left (an incomplete UTF-8 tail becomes U+FFFD), and reset."""
        ...


@runtime_checkable
class Tokenizer(Protocol):
    """A model's tokenizer, as its GGUF file describes it."""

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary."""
        ...

    @property
    def bos_id(self) -> int | None:
        """The beginning-of-sequence token, or None when the file has none."""
        ...

    @property
    def add_bos(self) -> bool:
        """Whether :meth:`encode` puts BOS first when ``add_special`` is true."""
        ...

    def is_end_of_generation(self, token: int) -> bool:
        """Whether ``token`` ends a reply (EOS, end-of-turn, or another end token)."""
        ...

    def encode(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Return the token ids of ``text``.

        :param add_special: add BOS (and EOS) as the file says.
        :param parse_special: cut control and user-defined tokens out of the text (longest
            match first) instead of tokenizing their text.
        """
        ...

    def piece(self, token: int) -> str:
        """The text of one token as the vocabulary stores it (for display)."""
        ...

    def decode(self, tokens: Sequence[int]) -> str:
        """Return the text of ``tokens`` (invalid UTF-8 becomes U+FFFD)."""
        ...

    def stream_decoder(self) -> StreamDecoder:
        """Return a new :class:`StreamDecoder` for text generated token by token."""
        ...
