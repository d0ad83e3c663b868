"""Token ids back to text: per-token bytes, and a streaming decoder that never splits a UTF-8
character."""

from __future__ import annotations

import codecs
from collections.abc import Callable

__all__ = ["IncrementalTextDecoder"]


class IncrementalTextDecoder:
    """A :class:`~mlplug.tokenizer.StreamDecoder` over a function giving each token's bytes.

    Bytes are fed to an incremental UTF-8 decoder, so a character whose bytes arrive in several
    tokens comes out whole once its last byte arrives; invalid bytes become U+FFFD; an incomplete
    tail becomes U+FFFD at :meth:`flush`.

    :param token_bytes: given a token and whether no text came before it, the token's bytes and
        whether the token starts the text.
    """

    def __init__(self, token_bytes: Callable[[int, bool], tuple[bytes, bool]]) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._first = True

    def add(self, token: int) -> str:
        """Take one more token; return the text that is now complete (may be empty)."""
        data, started = self._token_bytes(token, self._first)
        if started:
            self._first = False
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Return what is left (an incomplete UTF-8 tail becomes U+FFFD), and reset."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        self._first = True
        return text
