"""Choosing the next token from a model's logits: penalties, greedy or seeded random sampling.

The steps, in order:

1. repeat / frequency / presence penalties over the last ``repeat_last_n`` (64) tokens of the
   sequence, prompt included;
2. temperature 0: greedy, the first maximum;
3. otherwise top-k, divide by the temperature, softmax, top-p, min-p, and a draw from a
   generator seeded with ``seed``.

Everything is numpy on the host, so a seed gives the same tokens on every backend.

>>> import numpy as np
>>> Sampler(SamplingParams()).sample(np.array([0.0, 2.0, 2.0, 1.0], dtype=np.float32), [])
1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import MlplugError, ShapeError

__all__ = [
    "Sampler",
    "SamplingError",
    "SamplingParams",
    "apply_penalties",
    "min_p_filter",
    "softmax",
    "top_k_filter",
    "top_p_filter",
]


class SamplingError(MlplugError, ValueError):
    """A sampling parameter is out of its range; names the parameter and the value."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        super().__init__(f"sampling parameter {name}={value!r} is invalid: expected {expected}")
        self.name = name
        self.value = value
        self.expected = expected


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. The defaults are greedy with no penalties (deterministic).

    :raises SamplingError: a value out of its range (checked on construction).
    """

    #: 0 picks the most likely token; above 0 samples (higher is more random).
    temperature: float = 0.0
    #: Keep only the k most likely tokens (0: all).
    top_k: int = 0
    #: Keep the most likely tokens until their probabilities sum to more than p (1: all).
    top_p: float = 1.0
    #: Drop tokens whose probability is below min_p times the largest one (0: none).
    min_p: float = 0.0
    #: Divide a positive logit by it (multiply a negative one) for each recent token (1: off).
    repeat_penalty: float = 1.0
    #: Subtract it times a recent token's count from its logit (0: off).
    frequency_penalty: float = 0.0
    #: Subtract it once from each recent token's logit (0: off).
    presence_penalty: float = 0.0
    #: How many of the last tokens (prompt included) the penalties look at.
    repeat_last_n: int = 64
    #: Seed of the random draw (None: a fresh seed from the operating system).
    seed: int | None = None

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise SamplingError(name, getattr(self, name), expected)

        def finite(x: float) -> bool:
            return isinstance(x, (int, float)) and math.isfinite(x)

        check("temperature", finite(self.temperature) and self.temperature >= 0, "a number >= 0")
        check("top_k", _is_int(self.top_k) and self.top_k >= 0, "an integer >= 0 (0: off)")
        check("top_p", finite(self.top_p) and 0 < self.top_p <= 1, "a number in (0, 1]")
        check("min_p", finite(self.min_p) and 0 <= self.min_p <= 1, "a number in [0, 1]")
        check(
            "repeat_penalty",
            finite(self.repeat_penalty) and self.repeat_penalty > 0,
            "a number > 0 (1: off)",
        )
        check("frequency_penalty", finite(self.frequency_penalty), "a finite number")
        check("presence_penalty", finite(self.presence_penalty), "a finite number")
        check(
            "repeat_last_n",
            _is_int(self.repeat_last_n) and self.repeat_last_n >= 0,
            "an integer >= 0",
        )
        check(
            "seed",
            self.seed is None or (_is_int(self.seed) and self.seed >= 0),
            "None or an integer >= 0",
        )

    @property
    def greedy(self) -> bool:
        """Whether the temperature is 0 (the most likely token is always picked)."""
        return self.temperature == 0


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def apply_penalties(
    logits: np.ndarray,
    recent: Sequence[int],
    *,
    repeat: float = 1.0,
    frequency: float = 0.0,
    presence: float = 0.0,
) -> np.ndarray:
    """Return a copy of ``logits`` with the penalties applied for the tokens in ``recent``.

    Each distinct token seen ``c`` times: a positive logit is divided by ``repeat``, a negative
    one multiplied by it; then ``c * frequency + presence`` is subtracted.
    """
    out = np.array(logits, dtype=np.float64, copy=True)
    if not len(recent) or (repeat == 1.0 and frequency == 0.0 and presence == 0.0):
        return out
    ids, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
    keep = (ids >= 0) & (ids < out.shape[0])
    ids, counts = ids[keep], counts[keep]
    values = out[ids]
    values = np.where(values > 0, values / repeat, values * repeat)
    values -= counts * frequency + presence
    out[ids] = values
    return out


def top_k_filter(ids: np.ndarray, logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``k`` largest logits, sorted from largest (lower id first on ties); 0 keeps all."""
    if k <= 0 or k >= logits.shape[0]:
        order = np.argsort(-logits, kind="stable")
        return ids[order], logits[order]
    part = np.argpartition(-logits, k - 1)[:k]
    # argpartition may pick any of several tied values at the boundary: take the lowest ids.
    threshold = logits[part].min()
    candidates = np.flatnonzero(logits >= threshold)
    order = candidates[np.argsort(-logits[candidates], kind="stable")][:k]
    return ids[order], logits[order]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Return the probabilities of ``logits`` (float64, summing to 1)."""
    shifted = np.exp(logits - logits.max())
    total: np.ndarray = shifted / shifted.sum()
    return total


def top_p_filter(
    ids: np.ndarray, probs: np.ndarray, p: float, *, sorted_desc: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the most likely tokens through the first one where the running sum exceeds ``p``.

    The result is sorted from most likely; ``p >= 1`` keeps everything (order unchanged).
    """
    if p >= 1.0:
        return ids, probs
    if not sorted_desc:
        order = np.argsort(-probs, kind="stable")
        ids, probs = ids[order], probs[order]
    running = np.cumsum(probs)
    over = np.flatnonzero(running > p)
    end = int(over[0]) + 1 if over.size else probs.shape[0]
    return ids[:end], probs[:end]


def min_p_filter(ids: np.ndarray, probs: np.ndarray, min_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop the tokens whose probability is below ``min_p`` times the largest one."""
    if min_p <= 0.0:
        return ids, probs
    keep = probs >= min_p * probs.max()
    return ids[keep], probs[keep]


class Sampler:
    """Picks tokens with :class:`SamplingParams`; one sampler per generated sequence.

    The random generator is seeded once, so the same seed, logits and history give the same
    tokens.
    """

    def __init__(self, params: SamplingParams | None = None) -> None:
        """Create a sampler (default: greedy)."""
        self.params = params if params is not None else SamplingParams()
        self._rng = np.random.default_rng(self.params.seed)

    def sample(self, logits: np.ndarray, history: Sequence[int]) -> int:
        """Return the next token for ``logits`` (one row, vocabulary length).

        :param history: every token of the sequence so far, prompt included; the penalties
            look at its last ``repeat_last_n``.
        :raises ShapeError: ``logits`` is not one non-empty row.
        :raises SamplingError: ``logits`` holds NaN.
        """
        row = np.asarray(logits)
        if row.ndim != 1 or row.shape[0] == 0:
            msg = f"sample needs one non-empty row of logits, got shape {row.shape}"
            raise ShapeError(msg, op="sample", shapes=(row.shape,))
        if np.isnan(row).any():
            name = "logits"
            raise SamplingError(name, "NaN", "logits without NaN (the model produced NaN)")
        p = self.params
        window = list(history[-p.repeat_last_n :]) if p.repeat_last_n > 0 else []
        scores = apply_penalties(
            row,
            window,
            repeat=p.repeat_penalty,
            frequency=p.frequency_penalty,
            presence=p.presence_penalty,
        )
        if p.greedy:
            return int(np.argmax(scores))
        ids = np.arange(scores.shape[0])
        is_sorted = False
        if p.top_k > 0:
            ids, scores = top_k_filter(ids, scores, p.top_k)
            is_sorted = True
        probs = softmax(scores / p.temperature)
        ids, probs = top_p_filter(ids, probs, p.top_p, sorted_desc=is_sorted)
        ids, probs = min_p_filter(ids, probs, p.min_p)
        running = np.cumsum(probs)
        target = self._rng.random() * running[-1]
        index = min(int(np.searchsorted(running, target, side="right")), ids.shape[0] - 1)
        return int(ids[index])
