"""The ``mlplug`` command line (also ``python -m mlplug``).

Subcommands: ``backends``, ``devices``, ``conformance``, ``inspect``, ``bench``, ``run`` and
``chat``, ``tokenize``, ``serve``, ``new-plugin``.
Machine-readable output is behind ``--json``. Exit codes: 0 success, 1 a failure (a failed
conformance case, an unreadable model, a broken backend that was asked for), 2 a usage error
(bad flags, unknown backend, malformed ``--gpu-layers`` or ``--prompt-tokens``, an invalid
``MLPLUG_*`` variable), 130 interrupted, 143 terminated. Errors, including any exception from
plugin code, are one line on stderr, ``mlplug: error: ...``; ``mlplug --debug COMMAND`` (or
``MLPLUG_STRICT_PLUGINS=1``) adds the traceback.

Importing this module (and ``mlplug backends``) loads no backend library: device counts come
from child processes (see :mod:`mlplug.cli._probe`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError, MlplugError
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


def _cmd_chat(args: argparse.Namespace) -> int:
    from ._chat import cmd_chat

    return cmd_chat(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ._serve import cmd_serve

    return cmd_serve(args)


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from ._tokenize import cmd_tokenize

    return cmd_tokenize(args)


def _cmd_new_plugin(args: argparse.Namespace) -> int:
    from ._new_plugin import cmd_new_plugin

    return cmd_new_plugin(args)


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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``mlplug`` command."""
    parser = argparse.ArgumentParser(
        prog="mlplug",
        description="Run ML models and ops on any installed mlplug backend plugin.",
        epilog="Run 'mlplug COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error (also MLPLUG_STRICT_PLUGINS=1)",
    )
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
    p.add_argument(
        "--list",
        action="store_true",
        help="list the ops (and how many cases each has) instead of running them",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (0)")
    p.add_argument(
        "--tier",
        choices=("default", "full", "all"),
        default="default",
        help="which cases: the fast default tier, the real-size cases of the full tier, or all",
    )
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON ('-': stdout)")
    p.add_argument("--markdown", metavar="FILE", help="write the matrix as Markdown ('-': stdout)")
    from ._conformance import add_flags as _conformance_flags

    _conformance_flags(p)
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
        "Run a model on a prompt (text or token ids): stream the generated text (greedy unless "
        "sampling options say otherwise), and the speed on stderr.",
    )
    from ._run import add_model_arguments, add_run_arguments

    add_run_arguments(p)

    p = command(
        "chat",
        _cmd_chat,
        "Chat with a model in the terminal, with the chat template its file carries; "
        "Ctrl-C stops a reply, Ctrl-D ends the chat.",
    )
    add_model_arguments(p)
    from ._chat import add_chat_arguments

    add_chat_arguments(p)

    p = command(
        "serve",
        _cmd_serve,
        "Serve this machine's devices to remote clients (ggml RPC; loopback unless "
        "--allow-remote).",
    )
    from ._serve import add_serve_arguments

    add_serve_arguments(p)

    p = command("tokenize", _cmd_tokenize, "Print the token ids of a text (the file's vocabulary).")
    p.add_argument("model", metavar="MODEL.gguf", help="the model (or vocabulary-only) file")
    p.add_argument("text", metavar="TEXT", help="the text to tokenize")
    p.add_argument("--no-special", action="store_true", help="add no BOS/EOS")
    p.add_argument(
        "--no-parse-special", action="store_true", help="tokenize control tokens' text as text"
    )
    json_flag(p, "{ids, pieces}")

    p = command(
        "new-plugin",
        _cmd_new_plugin,
        "Write a new backend plugin distribution (package, tests, tox, CI) ready to install.",
    )
    p.add_argument("name", metavar="NAME", help="the backend name (a lowercase identifier)")
    p.add_argument("--dir", metavar="D", help="the folder to write (new or empty; default ./NAME)")
    p.add_argument(
        "--engine",
        choices=("array", "graph"),
        default="array",
        help="array: eager kernels over strided buffers (numpy, torch); graph: the backend "
        "translates the whole graph at compute (ggml). Default: array",
    )
    return parser


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or exc.title
        return f"invalid {where}: {first.get('msg', exc)}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _strict_plugins() -> bool:
    return os.environ.get("MLPLUG_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so that ``finally`` blocks (probe cleanup) run."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    print(f"mlplug: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _report(exc: BaseException, debug: bool, prefix: str = "mlplug") -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)


def _report_foreign(exc: BaseException, debug: bool) -> None:
    """One line for an exception mlplug does not know (from plugin code), with its type."""
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = " ".join(str(exc).split())
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    hint = "" if debug else " (run 'mlplug --debug ...' for the traceback)"
    print(f"mlplug: error: {what}{hint}", file=sys.stderr)


def _dispatch(argv: Sequence[str] | None) -> int:
    from pydantic import ValidationError

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or _strict_plugins()
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return handler(args)
    except CommandError as exc:
        prefix = f"mlplug {args.command}" if isinstance(exc, UsageError) else "mlplug"
        _report(exc, debug, prefix)
        return exc.exit_code
    except ConfigError as exc:
        _report(exc, False)
        return 2
    except BrokenPipeError:  # e.g. `mlplug devices | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (MlplugError, ValidationError, OSError) as exc:
        _report(exc, debug)
        return 1
    except Exception as exc:  # plugin code may raise anything: still one line
        _report_foreign(exc, debug)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mlplug`` command line and return its exit code.

    Errors are one line on stderr (``--debug`` or ``MLPLUG_STRICT_PLUGINS=1`` add the
    traceback); Ctrl-C exits 130 and SIGTERM 143, after killing any device probe.

    :param argv: the arguments after the program name (default ``sys.argv[1:]``).
    """
    from .._child_processes import kill_all_children
    from .._plugin_screen import screen_by_default

    previous: Any = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    try:
        if in_main_thread:
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            screen_by_default()
            return _dispatch(argv)
        finally:
            kill_all_children()
            if in_main_thread and previous is not None:
                signal.signal(signal.SIGTERM, previous)
    except KeyboardInterrupt:
        print("mlplug: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("mlplug: terminated", file=sys.stderr)
        return 143
