"""``mlplug serve``: expose this machine's devices to remote clients (ggml's RPC server).

The server speaks a protocol with no authentication and no encryption: it binds to 127.0.0.1
unless ``--allow-remote`` is given with another ``--host``, and then prints a warning. Reach a
server on another machine through an SSH tunnel (``ssh -L 50052:127.0.0.1:50052 HOST``) or a
private network. Logs go to stderr; Ctrl-C exits 130, SIGTERM 143.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..endpoints import DEFAULT_PORT, ENV_RPC_SERVERS, is_loopback, parse_endpoint
from ..errors import RemoteDeviceError
from ._common import UsageError

if TYPE_CHECKING:
    from ..registry import BackendEntry

__all__ = ["SECURITY_WARNING", "add_serve_arguments", "cmd_serve"]

#: Printed to stderr when the server binds to an address other machines can reach.
SECURITY_WARNING = (
    "mlplug serve: WARNING: the RPC protocol has no authentication and no encryption: anyone "
    "who can reach {where} can run computations on this machine and read the memory it "
    "serves. Prefer 127.0.0.1 with an SSH tunnel, or a private network."
)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        msg = f"expected a port number 0..65535, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``mlplug serve``."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port, printed)",
    )
    p.add_argument("--device", metavar="NAME", help="serve only this device (CPU, CUDA0, ...)")
    p.add_argument(
        "--threads", type=int, default=0, metavar="N", help="CPU threads (default: all cores)"
    )
    p.add_argument("--backend", "-b", metavar="B", help="the backend serving (default: ggml)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (unauthenticated, unencrypted: see the docs)",
    )


def _server(name: str | None) -> BackendEntry:
    """The backend that serves: ``name``, else the highest-priority one that can."""
    from ..registry import manager

    entries = manager().backends()
    if name is not None:
        entries = [e for e in entries if e.name == name]
        if not entries:
            from ._common import check_backend_names

            check_backend_names([name])  # raises naming the installed ones
    serving = sorted((e for e in entries if e.serve is not None), key=lambda e: -e.priority)
    if not serving:
        which = f"backend {name!r}" if name else "no installed backend"
        msg = f"{which} can serve devices to remote clients (the ggml backend can)"
        raise UsageError(msg)
    return serving[0]


def cmd_serve(args: argparse.Namespace) -> int:
    """Validate the address, then serve until interrupted (never returns normally)."""
    if args.threads < 0:
        msg = f"--threads must be >= 0, got {args.threads}"
        raise UsageError(msg)
    try:
        endpoint = parse_endpoint(
            f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}",
            allow_port_zero=True,
        )
    except RemoteDeviceError as exc:
        raise UsageError(str(exc)) from exc
    if not is_loopback(endpoint.host) and not args.allow_remote:
        msg = (
            f"refusing to bind {endpoint.host}: the RPC protocol is unauthenticated; bind "
            "127.0.0.1 and use an SSH tunnel, or pass --allow-remote"
        )
        raise UsageError(msg)
    entry = _server(args.backend)
    if not is_loopback(endpoint.host):
        print(SECURITY_WARNING.format(where=endpoint), file=sys.stderr, flush=True)

    def ready(port: int) -> None:
        where = str(endpoint._replace(port=port))
        print(
            f"mlplug serve: {entry.name} listening on {where} (clients: {ENV_RPC_SERVERS}={where})",
            file=sys.stderr,
            flush=True,
        )

    assert entry.serve is not None
    entry.serve(endpoint.host, endpoint.port, args.device, args.threads, ready)
    return 1  # the server returned: it stopped without a signal
