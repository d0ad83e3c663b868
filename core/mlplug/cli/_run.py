"""``mlplug run MODEL.gguf --prompt-tokens 1,2,3 [-n N]``: greedy generation with a model."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..errors import NotSupportedError
from ._common import CommandError, Progress, check_backend_names, dump_json

if TYPE_CHECKING:
    from ..models import Generation

__all__ = ["cmd_run"]


def _generate(args: argparse.Namespace, progress: Progress) -> tuple[str, Generation]:
    from .. import BackendParams, new_backend
    from ..models import architectures, load_model

    prompt: list[int] = args.prompt_tokens
    with new_backend(args.model, BackendParams(alloc_memory=True), backend=args.backend) as be:
        arch = be.config().architecture()
        if arch not in architectures:
            supported = ", ".join(sorted(architectures))
            msg = (
                f"{args.model}: model architecture {arch!r} is not supported "
                f"(supported: {supported})"
            )
            raise CommandError(msg)
        be.load(lambda f: progress(f, label=f"loading {args.model}"))
        progress.finish()
        with load_model(be, num_ctx=len(prompt) + args.n) as model:
            bad = [t for t in prompt if not 0 <= t < model.vocab_size]
            if bad:
                msg = f"prompt token ids must lie in [0, {model.vocab_size}), got {bad}"
                raise CommandError(msg)
            return be.name, model.generate(prompt, args.n)


def cmd_run(args: argparse.Namespace) -> int:
    """Load the model, generate ``-n`` tokens greedily, print them and the speed."""
    import numpy as np

    if args.backend is not None:
        check_backend_names([args.backend])
    if not args.prompt_tokens:
        msg = "--prompt-tokens needs at least one token id"
        raise CommandError(msg)
    progress = Progress(enabled=not args.json)
    try:
        name, gen = _generate(args, progress)
    except NotSupportedError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        progress.finish()
    if args.logits_out:
        try:
            np.save(args.logits_out, gen.prompt_logits)
        except OSError as exc:
            msg = f"cannot write {args.logits_out}: {exc.strerror or exc}"
            raise CommandError(msg) from exc
    speed = (
        f"backend {name}: prompt {gen.prompt_count} tokens, "
        f"{gen.prompt_tokens_per_s:.1f} tokens/s; decode {len(gen.tokens)} tokens, "
        f"{gen.decode_tokens_per_s:.1f} tokens/s"
    )
    if args.json:
        dump_json(
            {
                "tokens": gen.tokens,
                "prompt_tokens_per_s": gen.prompt_tokens_per_s,
                "decode_tokens_per_s": gen.decode_tokens_per_s,
            }
        )
    else:
        print(",".join(str(t) for t in gen.tokens))
    print(speed, file=sys.stderr)
    return 0
