"""The text-generation API on a fake model: streaming, stops, context checks, logits."""

from __future__ import annotations

import numpy as np
import pytest
from generate_fakes import EOT, VOCAB, text_model

from mlplug.errors import MlplugError, OutOfRangeError
from mlplug.generate import ContextLengthError, SamplingParams


def test_generate_streams_text_and_stops_at_end_of_turn() -> None:
    with text_model() as tm:
        gen = tm.generate("abc", n=20)
        pieces = list(gen)
        assert pieces == ["d", "e", "f", "g", "h"]
        assert gen.text == "defgh"
        assert gen.stop_reason == "end"
        assert gen.tokens[-1] == EOT and len(gen.tokens) == 6
        assert gen.prompt == tm.tokenize("abc") and gen.prompt[0] == 0  # BOS first
        assert gen.prompt_logits is not None and gen.prompt_logits.shape == (len(VOCAB),)
        # The end token is never run; each other generated token after the first is one step.
        assert tm.model.computed == len(gen.prompt) + 5 - 1 + 1
        assert gen.decode_steps == 5


def test_generate_stops_after_n_tokens() -> None:
    with text_model() as tm:
        gen = tm.generate("a", n=3)
        assert "".join(gen) == "bcd" and gen.stop_reason == "length"


def test_end_tokens_can_be_kept_going() -> None:
    with text_model() as tm:
        gen = tm.generate("g", n=4, stop_at_end=False)
        assert "".join(gen) == "h<eot>ab"
        assert gen.tokens[1] == EOT and gen.stop_reason == "length"


def test_generation_stops_when_the_context_is_full() -> None:
    with text_model(capacity=5) as tm:
        gen = tm.generate([VOCAB.index("a")], n=50, sampling=SamplingParams())
        assert "".join(gen) == "bcdef"
        assert gen.text == "bcdef" and gen.stop_reason == "context"
        assert len(tm.model.cache) == 5


def test_a_prompt_longer_than_the_context_fails_before_any_compute() -> None:
    with text_model(capacity=4) as tm:
        with pytest.raises(ContextLengthError, match="5 tokens, the context holds 4") as info:
            tm.generate("abcd")  # BOS + 4
        assert isinstance(info.value, MlplugError)
        with pytest.raises(ContextLengthError):
            tm.logits("abcdefg")
        assert tm.model.calls == []


def test_bad_prompt_ids_and_n_are_typed_errors() -> None:
    with text_model() as tm:
        with pytest.raises(OutOfRangeError, match="token ids must lie in"):
            tm.generate([1, 999])
        with pytest.raises(OutOfRangeError):
            tm.detokenize([-1])
        with pytest.raises(OutOfRangeError, match="n must be"):
            tm.generate("a", n=0)
        with pytest.raises(ContextLengthError):
            tm.generate([])
        assert tm.model.calls == []


def test_logits_of_any_positions() -> None:
    with text_model() as tm:
        tokens = tm.tokenize("abc")
        every = tm.logits("abc")
        assert every.shape == (4, len(VOCAB)) and every.dtype == np.float32
        assert [int(np.argmax(row)) for row in every] == [VOCAB.index(c) for c in "abcd"]
        some = tm.logits(tokens, outputs=[1, 3])
        np.testing.assert_array_equal(some, every[[1, 3]])
        with pytest.raises(OutOfRangeError, match="output positions"):
            tm.logits(tokens, outputs=[4])


def test_tokenize_and_detokenize_round_trip() -> None:
    with text_model() as tm:
        ids = tm.tokenize("bad cafe")
        assert tm.detokenize(ids) == "bad cafe"
        assert tm.tokenize("bad", add_special=False) == ids[1:4]


def test_a_seed_repeats_a_sampled_generation() -> None:
    params = SamplingParams(temperature=5.0, seed=7)
    with text_model() as tm:
        first = tm.generate("a", n=12, sampling=params)
        second = tm.generate("a", n=12, sampling=params)
        assert list(first) == list(second)
        assert first.tokens == second.tokens


def test_close_frees_the_model_and_the_backend_it_opened() -> None:
    tm = text_model()
    with tm:
        pass
    assert tm.model.closed and tm.backend.closed


def test_an_interrupted_step_resets_the_cache_before_the_next_run() -> None:
    with text_model(interrupt_at=2) as tm:
        gen = tm.generate("a", n=10)
        with pytest.raises(KeyboardInterrupt):
            list(gen)
        assert gen.text == "bc"
        assert tm.cached is None
        assert "".join(tm.generate("a", n=2)) == "bc"  # the fake model asserts clean positions
