"""Encoding with small hand-made vocabularies: SentencePiece merges, space prefix, byte fallback,
special tokens, BOS/EOS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlplug.modelfile.config import Config
from mlplug.tokenizer import GGUFTokenizer, Tokenizer, from_config

MakeConfig = Callable[[dict[str, Any]], Config]
SpmMetadata = Callable[..., dict[str, Any]]


def _spm(config_of: MakeConfig, spm_metadata: SpmMetadata, **extra: Any) -> GGUFTokenizer:
    return from_config(config_of(spm_metadata(**extra)))


def _pieces(tok: GGUFTokenizer, ids: list[int]) -> list[str]:
    return [tok.piece(i) for i in ids]


def test_a_tokenizer_meets_the_protocol(config_of: MakeConfig, spm_metadata: SpmMetadata) -> None:
    tok = _spm(config_of, spm_metadata)
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == 6 + 256 + 20
    assert tok.bos_id == 1
    assert tok.add_bos


def test_spm_adds_bos_and_the_space_prefix_by_default(
    config_of: MakeConfig, spm_metadata: SpmMetadata
) -> None:
    tok = _spm(config_of, spm_metadata)
    ids = tok.encode("hello world")
    assert ids[0] == 1
    assert _pieces(tok, ids[1:]) == ["\u2581hello", "\u2581world"]
    assert tok.decode(ids) == "hello world"


def test_without_add_space_prefix_no_space_is_put_first(
    config_of: MakeConfig, spm_metadata: SpmMetadata
) -> None:
    tok = _spm(config_of, spm_metadata, add_space_prefix=False)
    assert _pieces(tok, tok.encode("hello world", add_special=False)) == ["hello", "\u2581world"]


def test_the_highest_scoring_merge_wins(config_of: MakeConfig, spm_metadata: SpmMetadata) -> None:
    tok = _spm(config_of, spm_metadata, add_space_prefix=False)
    # "llo" (score -11) beats "ll" (-10) + "o" only if merged first: "ll" is merged first (higher
    # score), then "llo", then "he"+"llo" is not a token but "hello" is reachable via "he"+"llo".
    assert _pieces(tok, tok.encode("hello", add_special=False)) == ["hello"]


def test_text_outside_the_vocabulary_falls_back_to_byte_tokens(
    config_of: MakeConfig, spm_metadata: SpmMetadata
) -> None:
    tok = _spm(config_of, spm_metadata, add_space_prefix=False)
    ids = tok.encode("h€", add_special=False)
    assert _pieces(tok, ids) == ["h", "<0xE2>", "<0x82>", "<0xAC>"]
    assert tok.decode(ids) == "h€"


def test_special_tokens_are_cut_longest_first(
    config_of: MakeConfig, spm_metadata: SpmMetadata
) -> None:
    tok = _spm(config_of, spm_metadata, add_space_prefix=False)
    ids = tok.encode("<start_of_turn>hello\n\n\nworld<end_of_turn>", add_special=False)
    assert _pieces(tok, ids) == [
        "<start_of_turn>", "hello", "\n\n", "\n", "w", "or", "ld", "<end_of_turn>"
    ]  # fmt: skip


def test_without_parse_special_control_text_is_plain_text(
    config_of: MakeConfig, spm_metadata: SpmMetadata
) -> None:
    tok = _spm(config_of, spm_metadata, add_space_prefix=False)
    ids = tok.encode("<s>\n\n", add_special=False, parse_special=False)
    assert 1 not in ids  # "<s>" is tokenized as characters (bytes)
    assert ids[-1] == 5  # user-defined "\n\n" is still cut out
    assert tok.decode(ids) == "<s>\n\n"


def test_the_space_prefix_follows_each_special_token(
    config_of: MakeConfig, spm_metadata: SpmMetadata
) -> None:
    tok = _spm(config_of, spm_metadata)
    ids = tok.encode("hello<end_of_turn>world", add_special=False)
    assert _pieces(tok, ids) == ["\u2581hello", "<end_of_turn>", "\u2581world"]


def test_phi3_special_tokens_eat_the_whitespace_after_them(
    config_of: MakeConfig, spm_metadata: SpmMetadata
) -> None:
    meta = spm_metadata(add_space_prefix=False)
    text = "<start_of_turn> \n hello<s>  hello"
    plain = from_config(config_of(meta)).encode(text, add_special=False)
    phi3 = from_config(config_of({**meta, "general.name": "Phi3 mini"}))
    ids = phi3.encode(text, add_special=False)
    # "<s>" keeps the spaces after it
    assert _pieces(phi3, ids) == ["<start_of_turn>", "hello", "<s>", "\u2581", "\u2581hello"]
    assert len(plain) > len(ids)


def test_add_eos_puts_eos_last(config_of: MakeConfig, spm_metadata: SpmMetadata) -> None:
    tok = _spm(config_of, spm_metadata, add_eos_token=True, add_bos_token=False)
    ids = tok.encode("hello")
    assert ids[0] != 1
    assert ids[-1] == 2
    assert tok.encode("hello", add_special=False)[-1] != 2


def test_empty_text(config_of: MakeConfig, spm_metadata: SpmMetadata) -> None:
    tok = _spm(config_of, spm_metadata)
    assert tok.encode("") == [1]
    assert tok.encode("", add_special=False) == []


def test_end_of_generation_covers_eos_eot_and_end_of_turn_tokens(
    config_of: MakeConfig, spm_metadata: SpmMetadata
) -> None:
    tok = _spm(config_of, spm_metadata)
    assert tok.is_end_of_generation(2)
    assert tok.is_end_of_generation(4)  # "<end_of_turn>"
    assert not tok.is_end_of_generation(3)
    assert not tok.is_end_of_generation(1)
    tok = _spm(config_of, spm_metadata, eot_token_id=3)
    assert tok.is_end_of_generation(3)


def _bpe_metadata(pre: str) -> dict[str, Any]:
    from mlplug.tokenizer.bpe import byte_to_char

    chars = list(byte_to_char())
    merges = ["h e", "l l", "he ll", "hell o", "\u0120 w", "\u0120w o"]
    tokens = chars + ["he", "ll", "hell", "hello", "\u0120w", "\u0120wo", "<|eot_id|>"]
    return {
        "model": "gpt2",
        "pre": pre,
        "tokens": tokens,
        "token_type": [1] * (len(tokens) - 1) + [3],
        "merges": merges,
        "bos_token_id": 256 + 6,
        "eos_token_id": 256 + 6,
    }


def test_bpe_merges_by_rank_within_words(config_of: MakeConfig) -> None:
    tok = from_config(config_of(_bpe_metadata("gpt-2")))
    ids = tok.encode("hello wo!", add_special=False)
    assert [tok.piece(i) for i in ids] == ["hello", "\u0120wo", "!"]
    assert tok.decode(ids) == "hello wo!"
    assert not tok.add_bos


def test_bpe_bytes_of_any_text_round_trip(config_of: MakeConfig) -> None:
    tok = from_config(config_of(_bpe_metadata("qwen2")))
    text = "naïve 日本 🦙 \t\r\n x"
    assert tok.decode(tok.encode(text)) == text


def test_llama3_vocabularies_start_with_bos_unless_the_file_says_otherwise(
    config_of: MakeConfig,
) -> None:
    tok = from_config(config_of(_bpe_metadata("llama-bpe")))
    assert tok.add_bos
    assert tok.encode("hello")[0] == tok.bos_id
    off = from_config(config_of({**_bpe_metadata("llama-bpe"), "add_bos_token": False}))
    assert off.encode("hello")[0] != off.bos_id


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "qwen2", "starcoder", "falcon", "default"])
def test_every_pre_tokenizer_family_round_trips(config_of: MakeConfig, pre: str) -> None:
    tok = from_config(config_of(_bpe_metadata(pre)))
    text = "I'm 12345 ok...  hello\n\n  wo  "
    assert tok.decode(tok.encode(text, add_special=False)) == text
