"""The vocabulary a GGUF file stores under ``tokenizer.ggml.*``, read and checked once.

:class:`Vocab` holds the token texts, scores, types, merges and the special ids; :func:`read_vocab`
builds it from a :class:`~mlplug.modelfile.config.Config` and raises
:class:`~mlplug.errors.ModelFileError` naming the key for anything that cannot be used (an unknown
model type, arrays of different lengths, a token type out of range, a merge naming an unknown
token, a special id past the end of the vocabulary), so a bad file fails before any text is
tokenized.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from ..errors import ModelFileError
from ..modelfile.config import Config

__all__ = ["TokenType", "Vocab", "read_vocab"]

#: Token texts that end a reply in common chat formats (besides the file's EOS and EOT ids). A
#: token with one of these texts counts as a control token even when the file says otherwise (as
#: llama.cpp does): it is cut out of text with special tokens parsed, and decodes to nothing.
END_OF_TURN_TEXTS: Final = frozenset(
    {
        "<end_of_turn>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "</s>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "<end_of_utterance>",
        "<\uff5cend\u2581of\u2581sentence\uff5c>",
    }
)

#: BPE pre-tokenizer names whose models start with BOS when the file does not say.
BOS_BY_DEFAULT: Final = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"})

#: ``tokenizer.ggml.model`` values and the tokenizer family that reads them.
MODEL_KINDS: Final = {"llama": "spm", "gpt2": "bpe"}


class TokenType(enum.IntEnum):
    """``tokenizer.ggml.token_type`` values."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


@dataclass(frozen=True)
class Vocab:
    """A checked GGUF vocabulary.

    :param model: ``tokenizer.ggml.model`` (``llama`` or ``gpt2``).
    :param pre: ``tokenizer.ggml.pre`` (the pre-tokenizer family of a BPE vocabulary).
    :param tokens: the text of each token.
    :param scores: the SentencePiece score of each token (zeros when the file has none).
    :param types: the :class:`TokenType` of each token.
    :param merges: BPE merges as (left, right) pairs, rank = position.
    :param name: ``general.name`` (some models' special tokens eat the spaces after them).
    """

    model: str
    pre: str
    tokens: list[str]
    scores: list[float]
    types: list[TokenType]
    merges: list[tuple[str, str]]
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    ids: dict[str, int] = field(repr=False)
    name: str = ""

    @property
    def size(self) -> int:
        """Number of tokens."""
        return len(self.tokens)

    def end_ids(self) -> frozenset[int]:
        """Ids that end a reply: EOS, EOT, and special tokens with a well-known end-of-turn text."""
        ends = {i for i in (self.eos_id, self.eot_id) if i is not None}
        for text in END_OF_TURN_TEXTS:
            tid = self.ids.get(text)
            if tid is not None:
                ends.add(tid)
        return frozenset(ends)


def _fail(path: str, key: str, message: str) -> ModelFileError:
    return ModelFileError(path, message, key=key)


def _special_id(cfg: Config, path: str, name: str, size: int) -> int | None:
    key = f"tokenizer.ggml.{name}_token_id"
    kv = cfg.kv(key)
    if kv is None:
        return None
    value = kv.value
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, key, f"expected an integer token id, got {value!r}")
    if value < 0 or value >= size:
        raise _fail(path, key, f"token id {value} is outside the vocabulary (size {size})")
    return value


def read_vocab(cfg: Config, *, path: str = "<model metadata>") -> Vocab:
    """Read and check the vocabulary in ``cfg``.

    :param cfg: the file's metadata.
    :param path: the file name used in error messages.
    :raises ModelFileError: naming the key of the first thing that cannot be used.
    """
    model_key = "tokenizer.ggml.model"
    model = cfg.string(model_key)
    if model not in MODEL_KINDS:
        supported = ", ".join(sorted(MODEL_KINDS))
        raise _fail(
            path, model_key, f"unsupported tokenizer model {model!r} (supported: {supported})"
        )
    tokens_key = "tokenizer.ggml.tokens"
    tokens = cfg.strings(tokens_key)
    if not tokens:
        raise _fail(path, tokens_key, "the vocabulary has no tokens (a string array is required)")
    size = len(tokens)

    scores_key = "tokenizer.ggml.scores"
    scores = cfg.floats(scores_key)
    if scores is None:
        scores = [0.0] * size
    elif len(scores) != size:
        raise _fail(path, scores_key, f"{len(scores)} scores for {size} tokens")

    types_key = "tokenizer.ggml.token_type"
    raw_types = cfg.ints(types_key)
    if raw_types is None:
        types = [TokenType.NORMAL] * size
    else:
        if len(raw_types) != size:
            raise _fail(path, types_key, f"{len(raw_types)} token types for {size} tokens")
        valid = {int(t) for t in TokenType}
        types = []
        for i, t in enumerate(raw_types):
            if t not in valid:
                raise _fail(
                    path, types_key, f"token {i} ({tokens[i]!r}) has type {t}, expected 1 to 6"
                )
            types.append(TokenType(t))
    for i, text in enumerate(tokens):
        if text in END_OF_TURN_TEXTS and types[i] is not TokenType.CONTROL:
            types[i] = TokenType.CONTROL

    ids: dict[str, int] = {}
    for i, text in enumerate(tokens):
        ids.setdefault(text, i)

    merges: list[tuple[str, str]] = []
    merges_key = "tokenizer.ggml.merges"
    raw_merges = cfg.strings(merges_key)
    if model == "gpt2":
        if raw_merges is None:
            raise _fail(path, merges_key, "a gpt2 (BPE) vocabulary needs merges")
        for rank, line in enumerate(raw_merges):
            cut = line.find(" ", 1)
            if cut < 0:
                raise _fail(path, merges_key, f"merge {rank} ({line!r}) is not two tokens")
            left, right = line[:cut], line[cut + 1 :]
            for part in (left, right):
                if part not in ids:
                    raise _fail(
                        path, merges_key, f"merge {rank} ({line!r}) names {part!r}, not a token"
                    )
            merges.append((left, right))

    bos = _special_id(cfg, path, "bos", size)
    eos = _special_id(cfg, path, "eos", size)
    eot = _special_id(cfg, path, "eot", size)
    unk = _special_id(cfg, path, "unknown", size)
    spm = model == "llama"
    pre = cfg.string("tokenizer.ggml.pre", "default")
    add_bos = cfg.bool("tokenizer.ggml.add_bos_token", spm or pre in BOS_BY_DEFAULT)
    add_eos = cfg.bool("tokenizer.ggml.add_eos_token", False)
    if add_bos and bos is None:
        raise _fail(path, "tokenizer.ggml.bos_token_id", "add_bos_token is set but BOS is missing")
    if add_eos and eos is None:
        raise _fail(path, "tokenizer.ggml.eos_token_id", "add_eos_token is set but EOS is missing")
    return Vocab(
        model=model,
        pre=pre,
        tokens=tokens,
        scores=scores,
        types=types,
        merges=merges,
        bos_id=bos,
        eos_id=eos,
        eot_id=eot,
        unk_id=unk,
        add_bos=add_bos,
        add_eos=add_eos,
        add_space_prefix=cfg.bool("tokenizer.ggml.add_space_prefix", spm),
        ids=ids,
        name=cfg.string("general.name"),
    )
