"""``mlplug run MODEL.gguf --prompt TEXT | --prompt-tokens 1,2,3``: generate with a model."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..errors import NotSupportedError
from . import _positive_int
from ._common import CommandError, Progress, UsageError, check_backend_names, dump_json

if TYPE_CHECKING:
    from ..generate import Generation, TextModel
    from ..sample import SamplingParams

__all__ = ["add_model_arguments", "add_run_arguments", "cmd_run", "open_text_model", "sampling"]


def _token_list(text: str) -> list[int]:
    msg = f"expected comma-separated token ids such as 1,2,3, got {text!r}"
    try:
        tokens = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(msg) from None
    if any(t < 0 for t in tokens):
        raise argparse.ArgumentTypeError(msg + " (token ids are not negative)")
    return tokens


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Add the model, backend, placement, cache and sampling options ``run`` and ``chat`` share."""
    p.add_argument("model", metavar="MODEL.gguf", help="the model file")
    p.add_argument("--backend", "-b", metavar="B", help="the backend to use")
    p.add_argument(
        "--gpu-layers", metavar="SPEC", help="layers per device, e.g. 'CUDA:0=0-11;CUDA:1=12-24'"
    )
    p.add_argument(
        "--kv-type", choices=("f16", "f32"), help="element type of the KV cache (default f16)"
    )
    p.add_argument("--num-ctx", type=_positive_int, metavar="N", help="positions the context holds")
    g = p.add_argument_group("sampling (default: greedy)")
    g.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0: greedy (0)")
    g.add_argument("--top-k", type=int, default=0, metavar="K", help="keep the K best (0: off)")
    g.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus (1: off)")
    g.add_argument("--min-p", type=float, default=0.0, metavar="M", help="min-p (0: off)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, metavar="R", help="(1: off)")
    g.add_argument("--frequency-penalty", type=float, default=0.0, metavar="F", help="(0: off)")
    g.add_argument("--presence-penalty", type=float, default=0.0, metavar="P", help="(0: off)")
    g.add_argument("--seed", type=int, metavar="S", help="seed of the random draw")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``mlplug run``."""
    add_model_arguments(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", metavar="TEXT", help="the prompt text (tokenized, BOS added)")
    what.add_argument(
        "--prompt-tokens", type=_token_list, metavar="1,2,3", help="the prompt as token ids"
    )
    p.add_argument("-n", type=_positive_int, default=16, metavar="N", help="tokens to generate")
    p.add_argument("--logits-out", metavar="FILE.npy", help="save the last prompt logits")
    p.add_argument(
        "--json",
        action="store_true",
        help="print {text, tokens, prompt_tokens_per_s, decode_tokens_per_s} as JSON on stdout",
    )


def sampling(args: argparse.Namespace) -> SamplingParams:
    """The sampling parameters of the command line.

    :raises UsageError: a value out of its range.
    """
    from ..sample import SamplingError, SamplingParams

    try:
        return SamplingParams(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            repeat_penalty=args.repeat_penalty,
            frequency_penalty=args.frequency_penalty,
            presence_penalty=args.presence_penalty,
            seed=args.seed,
        )
    except SamplingError as exc:
        raise UsageError(str(exc)) from exc


def open_text_model(
    args: argparse.Namespace,
    progress: Progress,
    *,
    num_ctx: int | None,
    require_tokenizer: bool = True,
) -> TextModel:
    """Open ``args.model`` with the backend, placement and cache the options name."""
    from pydantic import ValidationError

    from ..dtypes import DType
    from ..generate import open_model
    from ..layers import GPULayersList, parse_gpu_layers
    from ..params import BackendParams

    if args.backend is not None:
        check_backend_names([args.backend])
    try:
        layers = parse_gpu_layers(args.gpu_layers) if args.gpu_layers else GPULayersList()
        params = BackendParams(alloc_memory=True, gpu_layers=layers)
    except ValidationError as exc:
        msg = f"invalid --gpu-layers: {exc.errors()[0]['msg']}"
        raise UsageError(msg) from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    kv = {None: None, "f16": DType.F16, "f32": DType.F32}[args.kv_type]
    try:
        return open_model(
            args.model,
            params,
            backend=args.backend,
            num_ctx=num_ctx,
            kv_dtype=kv,
            progress=lambda f: progress(f, label=f"loading {args.model}"),
            require_tokenizer=require_tokenizer,
        )
    except NotSupportedError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        progress.finish()


def _stream(gen: Generation, show: bool) -> None:
    for piece in gen:
        if show:
            sys.stdout.write(piece)
            sys.stdout.flush()
    if show:
        sys.stdout.write("\n")
        sys.stdout.flush()


def cmd_run(args: argparse.Namespace) -> int:
    """Load the model, generate up to ``-n`` tokens, print them (text streams) and the speed."""
    import numpy as np

    params = sampling(args)
    if args.prompt is not None and not args.prompt:
        msg = "--prompt needs some text"
        raise UsageError(msg)
    if args.prompt_tokens is not None and not args.prompt_tokens:
        msg = "--prompt-tokens needs at least one token id"
        raise CommandError(msg)
    text_mode = args.prompt is not None
    ids: list[int] = args.prompt_tokens or []
    prompt: str | list[int] = str(args.prompt) if text_mode else ids
    num_ctx: int | None = args.num_ctx
    if num_ctx is None and isinstance(prompt, list):
        num_ctx = len(prompt) + args.n
    progress = Progress(enabled=not args.json)
    with open_text_model(args, progress, num_ctx=num_ctx, require_tokenizer=text_mode) as tm:
        gen = tm.generate(prompt, args.n, params)
        _stream(gen, show=text_mode and not args.json)
        name = tm.backend.name
        has_text = tm.tokenizer is not None
    if args.logits_out and gen.prompt_logits is not None:
        try:
            np.save(args.logits_out, gen.prompt_logits)
        except OSError as exc:
            msg = f"cannot write {args.logits_out}: {exc.strerror or exc}"
            raise CommandError(msg) from exc
    speed = (
        f"backend {name}: prompt {gen.prompt_computed} tokens, "
        f"{gen.prompt_tokens_per_s:.1f} tokens/s; decode {len(gen.tokens)} tokens, "
        f"{gen.decode_tokens_per_s:.1f} tokens/s"
    )
    if args.json:
        record: dict[str, object] = {"tokens": gen.tokens}
        if has_text:
            record["text"] = gen.text
        record["prompt_tokens_per_s"] = gen.prompt_tokens_per_s
        record["decode_tokens_per_s"] = gen.decode_tokens_per_s
        dump_json(record)
    elif not text_mode:
        print(",".join(str(t) for t in gen.tokens))
    print(speed, file=sys.stderr)
    return 0
