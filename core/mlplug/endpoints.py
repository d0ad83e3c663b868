"""Remote-device endpoints: ``host:port`` strings, parsed and validated once for every backend.

``MLPLUG_RPC_SERVERS=host:port,host:port`` (or ``BackendParams.rpc_servers``) names the servers
whose devices a backend adds as remote devices; ``mlplug serve`` binds to one. A host is an IPv4
address, a host name, or an IPv6 address in brackets (``[::1]:50052``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Final, NamedTuple

from .errors import RemoteDeviceError

__all__ = [
    "DEFAULT_PORT",
    "ENV_RPC_SERVERS",
    "Endpoint",
    "env_endpoints",
    "is_loopback",
    "parse_endpoint",
    "parse_endpoints",
]

#: Environment variable listing RPC servers, comma-separated ``host:port``.
ENV_RPC_SERVERS: Final = "MLPLUG_RPC_SERVERS"
#: The port ``mlplug serve`` listens on by default (ggml's RPC server default).
DEFAULT_PORT: Final = 50052

_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME: Final = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


class Endpoint(NamedTuple):
    """One server address; ``str()`` gives ``host:port`` (IPv6 hosts in brackets)."""

    host: str
    port: int

    def __str__(self) -> str:
        """Return ``host:port``, bracketing an IPv6 host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _bad(text: str, why: str) -> RemoteDeviceError:
    return RemoteDeviceError(f"bad RPC endpoint {text!r}: {why}", endpoint=text)


def parse_endpoint(text: str, *, allow_port_zero: bool = False) -> Endpoint:
    """Parse one ``host:port``.

    :param allow_port_zero: accept port 0 (a server asking the system for a free port).
    :raises RemoteDeviceError: the text is not ``host:port`` with a valid host and a port in
        1..65535; the message names the text and what is wrong.
    """
    raw = text.strip()
    if not raw:
        raise _bad(text, "empty")
    if raw.startswith("["):
        close = raw.find("]")
        if close < 0 or raw[close + 1 : close + 2] != ":":
            raise _bad(text, "expected [ipv6]:port")
        host, port_text = raw[1:close], raw[close + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(text, f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or not host:
            raise _bad(text, "expected host:port")
        if ":" in host:
            raise _bad(text, "an IPv6 host needs brackets: [host]:port")
        if not _HOSTNAME.match(host):
            raise _bad(text, f"{host!r} is not a host name or IPv4 address")
    if not port_text.isdigit():
        raise _bad(text, f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise _bad(text, f"port {port} is outside {low}..65535")
    return Endpoint(host, port)


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """Parse a comma-separated list of ``host:port`` (empty text: no endpoints).

    :raises RemoteDeviceError: an entry is malformed (named in the message) or listed twice.
    """
    out: list[Endpoint] = []
    if not text.strip():
        return ()
    for entry in text.split(","):
        ep = parse_endpoint(entry)
        if ep in out:
            raise _bad(entry, "listed twice")
        out.append(ep)
    return tuple(out)


def env_endpoints() -> tuple[Endpoint, ...]:
    """Parse ``$MLPLUG_RPC_SERVERS`` (unset or empty: no endpoints).

    :raises RemoteDeviceError: the variable holds a malformed entry.
    """
    return parse_endpoints(os.environ.get(ENV_RPC_SERVERS, ""))


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
