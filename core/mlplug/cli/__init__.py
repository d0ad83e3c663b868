"""The ``mlplug`` command line (also ``python -m mlplug``).

Subcommands: ``backends``, ``devices``, ``conformance``, ``inspect``, ``bench`` and ``run``.
Machine-readable output is behind ``--json``. Exit codes: 0 success, 1 a failure (a failed
conformance case, an unreadable model, a broken backend that was asked for), 2 a usage error
(bad flags, unknown backend, malformed ``--gpu-layers``), 130 interrupted. Errors are one line on
stderr, ``mlplug: error: ...``; a traceback means a bug in mlplug or a plugin.

Importing this module (and ``mlplug backends``) loads no backend library: device counts come
from child processes (see :mod:`mlplug.cli._probe`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import MlplugError
from ._common import CommandError, UsageError

__all__ = ["build_parser", "main", "version_text"]

Handler = Callable[[argparse.Namespace], int]


def _cmd_backends(args: argparse.Namespace) -> int:
    from ._devices import cmd_backends

    return cmd_backends(args)


def _cmd_devices(args: argparse.Namespace) -> int:
    from ._devices import cmd_devices

    return cmd_devices(args)


def _cmd_conformance(args: argparse.Namespace) -> int:
    from ._conformance import cmd_conformance

    return cmd_conformance(args)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ._inspect import cmd_inspect

    return cmd_inspect(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import cmd_bench

    return cmd_bench(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from ._run import cmd_run

    return cmd_run(args)


def version_text() -> str:
    """Return the ``--version`` text: mlplug's version and the Python running it."""
    import platform

    from .. import __version__

    return f"mlplug {__version__} (Python {platform.python_version()})"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _token_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        msg = f"expected comma-separated token ids such as 1,2,3, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``mlplug`` command."""
    parser = argparse.ArgumentParser(
        prog="mlplug",
        description="Run ML models and ops on any installed mlplug backend plugin.",
        epilog="Run 'mlplug COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def json_flag(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")

    def backend_flag(p: argparse.ArgumentParser, many: bool) -> None:
        if many:
            p.add_argument(
                "--backend",
                "-b",
                action="append",
                metavar="B",
                help="only this backend (repeat for several; default: every installed one)",
            )
        else:
            p.add_argument("--backend", "-b", metavar="B", help="the backend to use")

    def quiet_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")

    p = command(
        "backends",
        _cmd_backends,
        "List installed backend plugins: distribution, version, status and device count.",
    )
    json_flag(p, "a list of {name, distribution, version, status, error, devices}")

    p = command(
        "devices",
        _cmd_devices,
        "List every device of every backend, grouped by library; a device reached by several "
        "backends is shown once.",
    )
    backend_flag(p, many=True)
    json_flag(p, "a list of DeviceInfo records (Go keys) plus 'plugin' and 'physical_device'")

    p = command(
        "conformance",
        _cmd_conformance,
        "Run the op conformance suite and print the op x backend matrix; exit 1 on any failure.",
    )
    backend_flag(p, many=True)
    p.add_argument(
        "--op",
        metavar="PATTERN",
        help="only cases whose op or case id matches PATTERN (an op name or a glob)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (0)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON ('-': stdout)")
    p.add_argument("--markdown", metavar="FILE", help="write the matrix as Markdown ('-': stdout)")
    quiet_flag(p)

    p = command(
        "inspect",
        _cmd_inspect,
        "Describe a GGUF model: architecture, metadata, tensors, and the memory it needs per "
        "device (a dry run that allocates nothing).",
    )
    p.add_argument("model", metavar="MODEL.gguf", help="the model file")
    backend_flag(p, many=False)
    p.add_argument(
        "--gpu-layers",
        metavar="SPEC",
        help="layers per device for the estimate, e.g. 'CUDA:0=0-11;CUDA:1=12-24'",
    )
    json_flag(p, "{architecture, metadata, tensors, memory}")

    p = command(
        "bench",
        _cmd_bench,
        "Measure op throughput per backend next to the plain library (numpy, torch) in the "
        "same run.",
    )
    backend_flag(p, many=True)
    p.add_argument("--quick", action="store_true", help="fewer runs, reused graphs only")
    p.add_argument("--repeat", type=_positive_int, metavar="N", help="timed runs per op (5)")
    json_flag(p, "the results")
    quiet_flag(p)

    p = command(
        "run",
        _cmd_run,
        "Run a model (a supported architecture: llama) on prompt tokens; print the greedily "
        "generated token ids, and the speed on stderr.",
    )
    p.add_argument("model", metavar="MODEL.gguf", help="the model file")
    backend_flag(p, many=False)
    p.add_argument("--prompt-tokens", type=_token_list, required=True, metavar="1,2,3")
    p.add_argument("-n", type=_positive_int, default=16, metavar="N", help="tokens to generate")
    p.add_argument("--logits-out", metavar="FILE.npy", help="save the last prompt logits")
    json_flag(p, "{tokens, prompt_tokens_per_s, decode_tokens_per_s}")
    return parser


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or exc.title
        return f"invalid {where}: {first.get('msg', exc)}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mlplug`` command line and return its exit code.

    :param argv: the arguments after the program name (default ``sys.argv[1:]``).
    """
    from pydantic import ValidationError

    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except CommandError as exc:
        prefix = f"mlplug {args.command}" if isinstance(exc, UsageError) else "mlplug"
        print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `mlplug devices | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (MlplugError, ValidationError, OSError) as exc:
        print(f"mlplug: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mlplug: interrupted", file=sys.stderr)
        return 130
