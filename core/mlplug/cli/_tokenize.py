"""``mlplug tokenize MODEL.gguf TEXT``: the token ids of a text, from the file's vocabulary."""

from __future__ import annotations

import argparse

from ._common import dump_json

__all__ = ["cmd_tokenize"]


def cmd_tokenize(args: argparse.Namespace) -> int:
    """Print the token ids of ``args.text`` (``--json``: ids and pieces).

    Only the file's metadata is read (no backend is created), so vocabulary-only files work.
    Special tokens in the text are parsed unless ``--no-parse-special``; BOS/EOS are added as the
    file says unless ``--no-special``.
    """
    from ..tokenizer import from_gguf

    tokenizer = from_gguf(args.model)
    ids = tokenizer.encode(
        args.text, add_special=not args.no_special, parse_special=not args.no_parse_special
    )
    if args.json:
        dump_json({"ids": ids, "pieces": [tokenizer.piece(i) for i in ids]})
    else:
        print(" ".join(str(i) for i in ids))
    return 0
