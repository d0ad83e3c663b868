"""Making a tokenizer from a model file's metadata."""

from __future__ import annotations

import os

from ..errors import ModelFileError
from ..modelfile.config import Config
from ..modelfile.reader import GGUFFile
from .gguf_tokenizer import GGUFTokenizer
from .pretokenize import family_of
from .vocab import read_vocab

__all__ = ["from_config", "from_gguf"]


def from_config(config: Config, *, path: str = "<model metadata>") -> GGUFTokenizer:
    """Return the tokenizer described by a model's metadata (``backend.config()``).

    :param config: the model's metadata.
    :param path: the file name used in error messages.
    :raises ModelFileError: the vocabulary is missing, malformed or of an unsupported kind
        (naming the key).
    """
    vocab = read_vocab(config, path=path)
    family = "default"
    if vocab.model == "gpt2":
        found = family_of(vocab.pre)
        if found is None:
            raise ModelFileError(
                path, f"unsupported pre-tokenizer {vocab.pre!r}", key="tokenizer.ggml.pre"
            )
        family = found
    return GGUFTokenizer(vocab, family)


def from_gguf(path: str | os.PathLike[str]) -> GGUFTokenizer:
    """Return the tokenizer of a GGUF file, reading only its metadata (vocabulary-only files
    work; no backend is created).

    :raises ModelFileError: the file cannot be read or its vocabulary cannot be used.
    """
    with GGUFFile(path) as gguf:
        return from_config(Config(gguf.metadata), path=os.fspath(path))
