"""``mlplug chat MODEL.gguf``: an interactive conversation in the terminal (or over a pipe)."""

from __future__ import annotations

import argparse
import sys

from . import _positive_int
from ._common import CommandError, Progress, warn
from ._run import open_text_model, sampling

__all__ = ["add_chat_arguments", "cmd_chat"]


def add_chat_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``mlplug chat`` beyond the model and sampling ones."""
    p.add_argument(
        "-n", type=_positive_int, default=512, metavar="N", help="most tokens per reply (512)"
    )
    p.add_argument("--system", metavar="TEXT", help="a system message to start with")
    p.add_argument(
        "--template",
        metavar="FILE",
        help="a Jinja chat template to use instead of the file's tokenizer.chat_template",
    )


def _read_template(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise CommandError(msg) from exc


def cmd_chat(args: argparse.Namespace) -> int:
    """Read a message per line, stream each reply; Ctrl-C stops a reply, EOF or /bye ends."""
    from ..generate import Chat, ContextLengthError, template_for

    params = sampling(args)
    source = _read_template(args.template)
    interactive = sys.stdin.isatty()
    with open_text_model(args, Progress(), num_ctx=args.num_ctx) as tm:
        chat = Chat(tm, template_for(tm, source), system=args.system, sampling=params)
        if interactive:
            print("Ctrl-C stops a reply; Ctrl-D or /bye ends the chat.", file=sys.stderr)
        while True:
            try:
                line = input(">>> " if interactive else "")
            except EOFError:
                if interactive:
                    print()
                break
            except KeyboardInterrupt:
                print()
                continue
            if not line.strip():
                continue
            if line.strip() == "/bye":
                break
            try:
                reply = chat.say(line, n=args.n)
            except ContextLengthError as exc:
                warn(f"{exc}; start a new chat")
                continue
            try:
                for piece in reply:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            except KeyboardInterrupt:
                reply.close()
                print()
                print("(reply stopped)", file=sys.stderr)
                continue
            print()
            sys.stdout.flush()
            if reply.stop_reason == "context":
                warn("the context is full: the reply was cut; start a new chat")
    return 0
