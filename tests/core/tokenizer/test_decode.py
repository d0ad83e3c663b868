"""Decoding: byte tokens back to bytes, and streaming that never splits a UTF-8 character."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlplug.errors import OutOfRangeError
from mlplug.modelfile.config import Config
from mlplug.tokenizer import GGUFTokenizer, StreamDecoder, from_config


@pytest.fixture
def tok(
    config_of: Callable[[dict[str, Any]], Config], spm_metadata: Callable[..., dict[str, Any]]
) -> GGUFTokenizer:
    return from_config(config_of(spm_metadata()))


def _byte_ids(tok: GGUFTokenizer, text: str) -> list[int]:
    return [tok.vocab.ids[f"<0x{b:02X}>"] for b in text.encode()]


def test_a_character_split_across_byte_tokens_comes_out_whole(tok: GGUFTokenizer) -> None:
    stream = tok.stream_decoder()
    assert isinstance(stream, StreamDecoder)
    ids = _byte_ids(tok, "€🦙")
    out = [stream.add(t) for t in ids]
    assert out == ["", "", "€", "", "", "", "🦙"]
    assert stream.flush() == ""


def test_streaming_and_decoding_agree(tok: GGUFTokenizer) -> None:
    ids = tok.encode("hello<end_of_turn> world é€") + _byte_ids(tok, "🦙")
    stream = tok.stream_decoder()
    text = "".join(stream.add(t) for t in ids) + stream.flush()
    # the space put before the text after a special token stays (as in llama.cpp)
    assert text == tok.decode(ids) == "hello  world é€🦙"


def test_an_incomplete_character_never_raises_and_flushes_as_replacement(
    tok: GGUFTokenizer,
) -> None:
    stream = tok.stream_decoder()
    for t in _byte_ids(tok, "🦙")[:3]:
        assert stream.add(t) == ""
    assert stream.flush() == "\ufffd"
    # the decoder is reset: the next text starts clean (and loses the space prefix again)
    assert stream.add(tok.vocab.ids["\u2581hello"]) == "hello"


def test_invalid_bytes_become_replacement_characters(tok: GGUFTokenizer) -> None:
    bad = [tok.vocab.ids["<0xFF>"], tok.vocab.ids["h"]]
    assert tok.decode(bad) == "\ufffdh"
    stream = tok.stream_decoder()
    assert "".join(stream.add(t) for t in bad) + stream.flush() == "\ufffdh"


def test_control_tokens_decode_to_nothing_but_have_a_piece(tok: GGUFTokenizer) -> None:
    assert tok.decode([1, 3, 2]) == ""
    assert tok.piece(3) == "<start_of_turn>"
    assert tok.piece(tok.vocab.ids["\u2581hello"]) == "\u2581hello"


def test_only_the_first_space_prefix_is_dropped(tok: GGUFTokenizer) -> None:
    ids = tok.encode("  hello", add_special=False)
    assert tok.decode(ids) == "  hello"


@pytest.mark.parametrize("bad", [-1, 10**6])
def test_a_token_outside_the_vocabulary_is_a_typed_error(tok: GGUFTokenizer, bad: int) -> None:
    with pytest.raises(OutOfRangeError, match=f"token id {bad} is outside the vocabulary"):
        tok.decode([bad])
    with pytest.raises(OutOfRangeError):
        tok.piece(bad)
    with pytest.raises(OutOfRangeError):
        tok.stream_decoder().add(bad)
