"""The base class of model architectures: a forward pass plus greedy generation."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError

if TYPE_CHECKING:
    from ..backend import Backend

__all__ = ["Generation", "Model"]


@dataclass(frozen=True)
class Generation:
    """What :meth:`Model.generate` produced, with its timings."""

    #: The generated token ids (greedy).
    tokens: list[int]
    #: Logits of the last prompt position, float32 ``(vocab,)``.
    prompt_logits: np.ndarray
    #: Seconds spent on the prompt (one forward pass over every prompt token).
    prompt_seconds: float
    #: Seconds spent on decode steps (one forward pass per generated token after the first).
    decode_seconds: float
    #: Number of prompt tokens.
    prompt_count: int

    @property
    def prompt_tokens_per_s(self) -> float:
        """Prompt tokens per second (0.0 when nothing was timed)."""
        return self.prompt_count / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode steps per second (0.0 when only one token was generated)."""
        steps = len(self.tokens) - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else 0.0


class Model(ABC):
    """A loaded model architecture on a backend whose weights are loaded.

    A model owns its KV cache; :meth:`close` frees it (the backend stays open).
    """

    #: The ``general.architecture`` value this class implements.
    architecture: ClassVar[str] = ""

    def __init__(
        self,
        backend: Backend,
        *,
        num_ctx: int | None = None,
        kv_dtype: DType | str = DType.F16,
    ) -> None:
        """Build the model on ``backend`` with a ``num_ctx``-position ``kv_dtype`` KV cache."""
        self.backend = backend

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of rows of the output logits."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """Number of positions the KV cache holds."""

    @abstractmethod
    def forward(
        self,
        tokens: Sequence[int],
        positions: Sequence[int],
        outputs: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Run ``tokens`` at ``positions`` through the model, extending the KV cache.

        :param outputs: indices into ``tokens`` whose logits to return (default: the last).
        :returns: float32 logits ``(len(outputs), vocab_size)``.
        """

    @abstractmethod
    def reset(self) -> None:
        """Forget every cached position (the next forward starts a new sequence)."""

    @abstractmethod
    def close(self) -> None:
        """Free the KV cache (idempotent)."""

    def generate(self, prompt: Sequence[int], n: int) -> Generation:
        """Greedily generate ``n`` tokens after ``prompt``, starting a new sequence.

        :raises ShapeError: if the prompt is empty or prompt plus output exceed :attr:`capacity`.
        """
        if not prompt or n < 1:
            msg = f"generate needs at least one prompt token and n >= 1, got {len(prompt)}, {n}"
            raise ShapeError(msg, op="generate")
        if len(prompt) + n - 1 > self.capacity:
            msg = (
                f"{len(prompt)} prompt tokens plus {n} generated need {len(prompt) + n - 1} "
                f"cache positions, the cache holds {self.capacity}"
            )
            raise ShapeError(msg, op="generate")
        self.reset()
        start = time.perf_counter()
        logits = self.forward(prompt, range(len(prompt)))[-1]
        prompt_seconds = time.perf_counter() - start
        tokens = [int(np.argmax(logits))]
        start = time.perf_counter()
        for pos in range(len(prompt), len(prompt) + n - 1):
            step = self.forward([tokens[-1]], [pos])[-1]
            tokens.append(int(np.argmax(step)))
        decode_seconds = time.perf_counter() - start
        return Generation(tokens, logits, prompt_seconds, decode_seconds, len(prompt))

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
