"""Sampling: each step on its own, their order, the random seed, and bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from mlplug.errors import MlplugError, ShapeError
from mlplug.sample import (
    Sampler,
    SamplingError,
    SamplingParams,
    apply_penalties,
    min_p_filter,
    softmax,
    top_k_filter,
    top_p_filter,
)


def test_greedy_takes_the_first_maximum() -> None:
    logits = np.array([1.0, 3.0, 0.5, 3.0], dtype=np.float32)
    assert Sampler().sample(logits, []) == 1
    assert Sampler(SamplingParams(temperature=0.0, seed=5)).sample(logits, [1, 1]) == 1


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    out = apply_penalties(np.array([2.0, -2.0, 2.0]), [0, 1], repeat=2.0)
    assert out.tolist() == [1.0, -4.0, 2.0]


def test_frequency_and_presence_penalties_count_occurrences() -> None:
    out = apply_penalties(np.zeros(3), [0, 0, 0, 2], frequency=0.5, presence=1.0)
    assert out.tolist() == [-2.5, 0.0, -1.5]


def test_penalties_look_at_the_last_64_tokens_only() -> None:
    """A token seen 65 tokens ago is no longer penalised; the prompt counts as history."""
    logits = np.array([3.0, 2.0, -10.0], dtype=np.float32)
    sampler = Sampler(SamplingParams(repeat_penalty=4.0))
    assert sampler.sample(logits, [0] + [2] * 63) == 1  # 0 is in the window: 3 / 4 < 2
    assert sampler.sample(logits, [0] + [2] * 64) == 0  # 0 fell out of the window


def test_penalties_come_before_greedy() -> None:
    logits = np.array([3.0, 2.0], dtype=np.float32)
    assert Sampler(SamplingParams(repeat_penalty=2.0)).sample(logits, [0]) == 1


def test_top_k_keeps_the_k_best_sorted_lowest_id_first_on_ties() -> None:
    ids, vals = top_k_filter(np.arange(5), np.array([1.0, 5.0, 3.0, 5.0, 3.0]), 3)
    assert ids.tolist() == [1, 3, 2] and vals.tolist() == [5.0, 5.0, 3.0]
    ids, _ = top_k_filter(np.arange(3), np.array([1.0, 2.0, 3.0]), 0)
    assert ids.tolist() == [2, 1, 0]


def test_top_p_keeps_through_the_first_token_past_p() -> None:
    probs = np.array([0.1, 0.5, 0.3, 0.1])
    ids, kept = top_p_filter(np.arange(4), probs, 0.7)
    assert ids.tolist() == [1, 2] and kept.tolist() == [0.5, 0.3]
    ids, _ = top_p_filter(np.arange(4), probs, 0.5)
    assert ids.tolist() == [1, 2]  # 0.5 does not exceed 0.5: the next one is kept too
    ids, _ = top_p_filter(np.arange(4), probs, 1.0)
    assert ids.tolist() == [0, 1, 2, 3]


def test_min_p_drops_tokens_below_a_fraction_of_the_best() -> None:
    ids, _ = min_p_filter(np.arange(4), np.array([0.5, 0.3, 0.1, 0.1]), 0.4)
    assert ids.tolist() == [0, 1]


def test_softmax_sums_to_one() -> None:
    p = softmax(np.array([1000.0, 1000.0, -1000.0]))
    assert p.tolist() == [0.5, 0.5, 0.0]


def test_temperature_is_applied_after_top_k_and_before_top_p() -> None:
    """With top_k=2 only two tokens can come out; a low temperature sharpens before top_p
    so that top_p then keeps only the best."""
    logits = np.array([2.0, 1.0, 0.0, 1.9], dtype=np.float32)
    seen = {
        Sampler(SamplingParams(temperature=1.0, top_k=2, seed=s)).sample(logits, [])
        for s in range(200)
    }
    assert seen == {0, 3}
    # At T=0.01 token 0 has ~all the mass: top_p=0.5 keeps it alone.
    sharp = {
        Sampler(SamplingParams(temperature=0.01, top_p=0.5, seed=s)).sample(logits, [])
        for s in range(50)
    }
    assert sharp == {0}
    # At T=100 the four are near-uniform (just over and under 0.25): top_p=0.5 keeps the two
    # best, whose sum passes 0.5; top_p=0.6 keeps three.
    for p, expected in ((0.5, {0, 3}), (0.6, {0, 3, 1})):
        params = [SamplingParams(temperature=100.0, top_p=p, seed=s) for s in range(300)]
        assert {Sampler(x).sample(logits, []) for x in params} == expected


def test_min_p_after_top_p() -> None:
    logits = np.log(np.array([0.4, 0.35, 0.25], dtype=np.float32))
    seen = {
        Sampler(SamplingParams(temperature=1.0, min_p=0.7, seed=s)).sample(logits, [])
        for s in range(200)
    }
    assert seen == {0, 1}


def test_the_seed_makes_draws_repeatable_and_frequencies_follow_probabilities() -> None:
    logits = np.log(np.array([0.2, 0.8], dtype=np.float32))
    a = Sampler(SamplingParams(temperature=1.0, seed=42))
    b = Sampler(SamplingParams(temperature=1.0, seed=42))
    draws_a = [a.sample(logits, []) for _ in range(2000)]
    draws_b = [b.sample(logits, []) for _ in range(2000)]
    assert draws_a == draws_b
    assert 0.75 < sum(draws_a) / 2000 < 0.85
    c = Sampler(SamplingParams(temperature=1.0, seed=43))
    assert [c.sample(logits, []) for _ in range(2000)] != draws_a


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -1.0),
        ("temperature", float("nan")),
        ("top_k", -1),
        ("top_k", 2.5),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("min_p", -0.1),
        ("repeat_penalty", 0.0),
        ("repeat_last_n", -1),
        ("seed", -3),
        ("frequency_penalty", float("inf")),
    ],
)
def test_bad_parameters_are_typed_errors_naming_the_parameter(field: str, value: object) -> None:
    with pytest.raises(SamplingError, match=field) as info:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    assert isinstance(info.value, MlplugError) and isinstance(info.value, ValueError)
    assert info.value.name == field


def test_bad_logits_are_typed_errors() -> None:
    with pytest.raises(ShapeError):
        Sampler().sample(np.zeros((2, 3), dtype=np.float32), [])
    with pytest.raises(SamplingError, match="NaN"):
        Sampler().sample(np.array([0.0, np.nan], dtype=np.float32), [])
