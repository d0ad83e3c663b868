"""A model with its tokenizer: text in, streamed text out, and logits of any positions."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MlplugError, ModelFileError, NotSupportedError, OutOfRangeError
from ..sample import Sampler, SamplingParams

if TYPE_CHECKING:
    from ..backend import Backend
    from ..dtypes import DType
    from ..models import Model
    from ..params import BackendParams
    from ..tokenizer import Tokenizer

__all__ = ["ContextLengthError", "Generation", "TextModel", "open_model"]

#: What a prompt may be: text (tokenized with BOS as the file says) or token ids.
Prompt = str | Sequence[int]


class ContextLengthError(MlplugError, ValueError):
    """A prompt does not fit the model's context (its KV cache); raised before any compute."""

    def __init__(self, tokens: int, capacity: int) -> None:
        super().__init__(
            f"the prompt has {tokens} tokens, the context holds {capacity} "
            f"(open the model with a larger num_ctx, or shorten the prompt)"
        )
        self.tokens = tokens
        self.capacity = capacity


class TextModel:
    """A loaded model, its tokenizer and its backend; a context manager.

    ``generate``, ``logits`` and chat turns share the model's KV cache: :attr:`cached` tracks
    which tokens it holds, so a conversation only runs each new turn.
    """

    def __init__(
        self,
        backend: Backend,
        model: Model,
        tokenizer: Tokenizer | None,
        *,
        owns_backend: bool = False,
    ) -> None:
        """Wrap an open ``backend``, its ``model`` and ``tokenizer`` (None: a file without a
        vocabulary, which runs on token ids only).

        :param owns_backend: :meth:`close` also closes the backend.
        """
        self.backend = backend
        self.model = model
        self.tokenizer = tokenizer
        self._owns_backend = owns_backend
        #: Token ids the KV cache holds at positions 0..len-1 (None: unknown, reset first).
        self.cached: list[int] | None = []
        #: How many tokens the last :meth:`forward` computed.
        self.last_computed = 0

    @property
    def capacity(self) -> int:
        """Number of positions the context (KV cache) holds."""
        return self.model.capacity

    @property
    def vocab_size(self) -> int:
        """Number of rows of the logits."""
        return self.model.vocab_size

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Return the token ids of ``text`` (BOS as the file says when ``add_special``)."""
        tok = self.need_tokenizer()
        return tok.encode(text, add_special=add_special, parse_special=parse_special)

    def need_tokenizer(self) -> Tokenizer:
        """Return the tokenizer.

        :raises NotSupportedError: the model file has no vocabulary.
        """
        if self.tokenizer is None:
            raise NotSupportedError(self.backend.name, "tokenize", "the model has no vocabulary")
        return self.tokenizer

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Return the text of ``tokens``.

        :raises OutOfRangeError: an id outside the vocabulary.
        """
        self._check_ids(tokens)
        return self.need_tokenizer().decode(tokens)

    def prompt_tokens(self, prompt: Prompt) -> list[int]:
        """Return the token ids of ``prompt`` (tokenized when it is text), checked.

        :raises OutOfRangeError: an id outside the vocabulary.
        :raises ContextLengthError: an empty prompt, or one longer than the context.
        """
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        self._check_ids(tokens)
        if not tokens or len(tokens) > self.capacity:
            raise ContextLengthError(len(tokens), self.capacity)
        return tokens

    def _check_ids(self, tokens: Sequence[int]) -> None:
        limit = self.vocab_size
        if self.tokenizer is not None:
            limit = min(limit, self.tokenizer.vocab_size)
        bad = [int(t) for t in tokens if not 0 <= int(t) < limit]
        if bad:
            msg = f"token ids must lie in [0, {limit}), got {bad[:8]}"
            raise OutOfRangeError(msg)

    def forward(self, tokens: Sequence[int], outputs: Sequence[int] | None = None) -> np.ndarray:
        """Append ``tokens`` to the cached sequence and return the logits at ``outputs``.

        A cache in an unknown state (an interrupted step) is reset first, which needs the whole
        sequence: callers pass new tokens only after :attr:`cached` was checked.
        """
        assert self.cached is not None
        start = len(self.cached)
        if start + len(tokens) > self.capacity:
            raise ContextLengthError(start + len(tokens), self.capacity)
        done = False
        try:
            logits = self.model.forward(tokens, range(start, start + len(tokens)), outputs)
            done = True
        finally:
            if done:
                self.cached.extend(int(t) for t in tokens)
                self.last_computed = len(tokens)
            else:
                self.cached = None  # interrupted mid-step: the cache content is unknown
        return logits

    def extend(self, tokens: Sequence[int], outputs: Sequence[int] | None = None) -> np.ndarray:
        """Run ``tokens`` (the whole sequence), reusing the cache when it holds a prefix of it.

        Only the tokens after the cached prefix are computed; ``outputs`` index into ``tokens``
        (default: the last) and must lie in the part that is computed.
        """
        cached = self.cached
        if cached is None or len(cached) >= len(tokens) or list(tokens[: len(cached)]) != cached:
            self.reset()
            cached = []
        skip = len(cached)
        rel = None if outputs is None else [o - skip for o in outputs]
        if rel is not None and any(o < 0 for o in rel):
            self.reset()
            return self.forward(tokens, outputs)
        return self.forward(tokens[skip:], rel)

    def reset(self) -> None:
        """Forget the cached sequence."""
        self.model.reset()
        self.cached = []

    def logits(self, prompt: Prompt, outputs: Sequence[int] | None = None) -> np.ndarray:
        """Return float32 logits ``(len(outputs), vocab)`` of ``prompt`` at ``outputs``.

        :param outputs: positions in the prompt (default: every position).
        :raises OutOfRangeError: a position outside the prompt.
        :raises ContextLengthError: the prompt does not fit the context.
        """
        tokens = self.prompt_tokens(prompt)
        wanted = list(range(len(tokens))) if outputs is None else [int(o) for o in outputs]
        bad = [o for o in wanted if not 0 <= o < len(tokens)]
        if bad or not wanted:
            msg = f"output positions must lie in [0, {len(tokens)}), got {bad or wanted}"
            raise OutOfRangeError(msg)
        self.reset()
        return self.forward(tokens, wanted)

    def generate(
        self,
        prompt: Prompt,
        n: int = 128,
        sampling: SamplingParams | None = None,
        *,
        stop_at_end: bool = True,
    ) -> Generation:
        """Start generating up to ``n`` tokens after ``prompt``; iterate the result for text.

        The prompt is checked here, before any compute; the model runs as the result is
        iterated. Generation stops at the end of a reply (EOS, end-of-turn) unless
        ``stop_at_end`` is false, after ``n`` tokens, or when the context is full.

        :raises ContextLengthError: the prompt is empty or does not fit the context.
        :raises OutOfRangeError: a prompt token id outside the vocabulary.
        """
        if n < 1:
            msg = f"n must be at least 1, got {n}"
            raise OutOfRangeError(msg)
        tokens = self.prompt_tokens(prompt)
        self.reset()
        return Generation(self, tokens, n, Sampler(sampling), stop_at_end=stop_at_end)

    def close(self) -> None:
        """Free the model's cache, and the backend when this object opened it (idempotent)."""
        self.model.close()
        if self._owns_backend:
            self.backend.close()

    def __enter__(self) -> TextModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Generation(Iterator[str]):
    """A running generation: iterate it for text pieces; the counters fill in as it runs."""

    def __init__(
        self,
        text_model: TextModel,
        prompt: list[int],
        n: int,
        sampler: Sampler,
        *,
        stop_at_end: bool = True,
    ) -> None:
        """Prepare to generate after ``prompt`` (the sequence, cached prefix included)."""
        self._tm = text_model
        #: The prompt's token ids.
        self.prompt = prompt
        #: Generated token ids, the end token included when it stopped the reply.
        self.tokens: list[int] = []
        #: Logits of the last prompt position (float32, vocabulary length), once computed.
        self.prompt_logits: np.ndarray | None = None
        #: Prompt tokens actually computed (a cached prefix is not).
        self.prompt_computed = 0
        self.prompt_seconds = 0.0
        self.decode_seconds = 0.0
        #: Decode steps (forward passes of one token).
        self.decode_steps = 0
        #: Why it stopped: "end" (an end token), "length" (n tokens), "context" (cache full).
        self.stop_reason: str | None = None
        self._pieces: list[str] = []
        self._n = n
        self._sampler = sampler
        self._stop_at_end = stop_at_end
        self._gen = self._run()

    @property
    def text(self) -> str:
        """The text generated so far."""
        return "".join(self._pieces)

    @property
    def reply_tokens(self) -> list[int]:
        """The generated tokens without the end token that stopped the reply."""
        return self.tokens[:-1] if self.stop_reason == "end" else list(self.tokens)

    @property
    def prompt_tokens_per_s(self) -> float:
        """Prompt tokens computed per second (0.0 before the prompt ran)."""
        return self.prompt_computed / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode steps per second (0.0 when no step ran)."""
        return self.decode_steps / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        """Stop generating (the text so far stays in :attr:`text`)."""
        self._gen.close()

    def __iter__(self) -> Generation:
        return self

    def _run(self) -> Generator[str, None, None]:
        tm = self._tm
        tok = tm.tokenizer
        decoder = tok.stream_decoder() if tok is not None else None
        history = list(self.prompt)
        start = time.perf_counter()
        logits = tm.extend(self.prompt)[-1]
        self.prompt_seconds = time.perf_counter() - start
        self.prompt_computed = tm.last_computed
        self.prompt_logits = logits
        while True:
            token = self._sampler.sample(logits, history)
            self.tokens.append(token)
            history.append(token)
            if self._stop_at_end and tok is not None and tok.is_end_of_generation(token):
                self.stop_reason = "end"
                break
            piece = decoder.add(token) if decoder is not None else ""
            if piece:
                self._pieces.append(piece)
                yield piece
            if len(self.tokens) >= self._n:
                self.stop_reason = "length"
                break
            if tm.cached is None or len(tm.cached) >= tm.capacity:
                self.stop_reason = "context"
                break
            start = time.perf_counter()
            logits = tm.forward([token])[-1]
            self.decode_seconds += time.perf_counter() - start
            self.decode_steps += 1
        tail = decoder.flush() if decoder is not None else ""
        if tail:
            self._pieces.append(tail)
            yield tail


def _tokenizer_for(backend: Backend, path: str, required: bool) -> Tokenizer | None:
    from ..tokenizer import from_config

    if not required and not backend.config().strings("tokenizer.ggml.tokens"):
        return None
    try:
        return from_config(backend.config(), path=path)
    except MlplugError:
        if required:
            raise
        return None  # token ids only: a vocabulary the tokenizer cannot read is not needed


def _check_architecture(backend: Backend, path: str) -> None:
    from .. import models

    known = getattr(models, "architectures", None)
    arch = backend.config().architecture()
    if isinstance(known, dict) and arch not in known:
        supported = ", ".join(sorted(known))
        msg = f"model architecture {arch!r} is not supported (supported: {supported})"
        raise ModelFileError(path, msg, key="general.architecture")


def open_model(
    path: str,
    params: BackendParams | None = None,
    *,
    backend: str | None = None,
    num_ctx: int | None = None,
    kv_dtype: DType | None = None,
    progress: Callable[[float], None] | None = None,
    require_tokenizer: bool = True,
) -> TextModel:
    """Open the GGUF model at ``path`` on a backend, load its weights, and return it with its
    tokenizer.

    :param params: backend parameters (threads, GPU layers); memory is always allocated.
    :param backend: the backend's name (default: as :func:`mlplug.new_backend` picks).
    :param num_ctx: positions the context holds (default: the model's choice).
    :param kv_dtype: the KV cache's element type (default: the model's, f16).
    :param progress: called with the loaded fraction while the weights load.
    :param require_tokenizer: false lets a file without a vocabulary open (token ids only).
    :raises ModelFileError: an architecture no model implements.
    :raises NotSupportedError: a KV type the model cannot take.
    :raises ModelFileError: also for a vocabulary the tokenizer cannot read (naming the key).
    """
    from .. import BackendParams as Params
    from .. import new_backend
    from ..models import load_model

    base = params if params is not None else Params()
    be = new_backend(path, base.model_copy(update={"alloc_memory": True}), backend=backend)
    try:
        _check_architecture(be, path)
        tokenizer = _tokenizer_for(be, path, require_tokenizer)
        be.load(progress)
        options: dict[str, Any] = {} if kv_dtype is None else {"kv_dtype": kv_dtype}
        model = load_model(be, num_ctx=num_ctx, **options)
    except BaseException:
        be.close()
        raise
    return TextModel(be, model, tokenizer, owns_backend=True)
