"""A vocabulary that cannot be used fails when the tokenizer is made, naming the key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlplug.errors import ModelFileError
from mlplug.modelfile.config import Config
from mlplug.tokenizer import from_config

MakeConfig = Callable[[dict[str, Any]], Config]


def _bpe(**extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "model": "gpt2",
        "pre": "gpt-2",
        "tokens": ["a", "b", "ab", "<eos>"],
        "token_type": [1, 1, 1, 3],
        "merges": ["a b"],
        "eos_token_id": 3,
    }
    meta.update(extra)
    return meta


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ({"model": "bert"}, "tokenizer.ggml.model", "unsupported tokenizer model 'bert'"),
        ({"model": ""}, "tokenizer.ggml.model", "unsupported tokenizer model ''"),
        ({"tokens": 5}, "tokenizer.ggml.tokens", "no tokens"),
        ({"token_type": [1, 1, 9, 3]}, "tokenizer.ggml.token_type", "token 2 .* has type 9"),
        ({"token_type": [1, 1]}, "tokenizer.ggml.token_type", "2 token types for 4 tokens"),
        ({"scores": [0.0]}, "tokenizer.ggml.scores", "1 scores for 4 tokens"),
        ({"merges": ["a c"]}, "tokenizer.ggml.merges", "merge 0 .* names 'c', not a token"),
        ({"merges": ["ab"]}, "tokenizer.ggml.merges", "merge 0 .* is not two tokens"),
        ({"merges": None}, "tokenizer.ggml.merges", "needs merges"),
        ({"bos_token_id": 4}, "tokenizer.ggml.bos_token_id", "token id 4 is outside"),
        ({"eos_token_id": 7}, "tokenizer.ggml.eos_token_id", "token id 7 is outside"),
        ({"eot_token_id": 99}, "tokenizer.ggml.eot_token_id", "token id 99 is outside"),
        ({"add_bos_token": True}, "tokenizer.ggml.bos_token_id", "BOS is missing"),
        ({"pre": "no-such-family"}, "tokenizer.ggml.pre", "unsupported pre-tokenizer"),
    ],
)
def test_a_bad_vocabulary_is_a_model_file_error_naming_the_key(
    config_of: MakeConfig, extra: dict[str, Any], key: str, message: str
) -> None:
    meta = {k: v for k, v in _bpe(**extra).items() if v is not None}
    with pytest.raises(ModelFileError, match=message) as info:
        from_config(config_of(meta))
    assert info.value.key == key


def test_a_good_vocabulary_works(config_of: MakeConfig) -> None:
    tok = from_config(config_of(_bpe()))
    assert tok.encode("abab") == [2, 2]
    assert tok.is_end_of_generation(3)
