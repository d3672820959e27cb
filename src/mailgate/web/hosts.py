"""A Host-header check: the defence against DNS rebinding for an API without a token.

A page on ``evil.example`` can make its own name resolve to 127.0.0.1 and then
talk to a loopback API as a same-origin site: the browser still sends
``Host: evil.example``. Without an API token the Host header is all that tells
such a request apart, so :class:`HostCheck` serves only loopback names
(``localhost``, ``*.localhost`` — RFC 6761 §6.3 —, 127.0.0.0/8, ``[::1]``) and the
configured ``http.allowed_hosts``; anything else gets ``421 Misdirected Request``
(RFC 9110 §15.5.20). With a token set every request must prove itself anyway,
so any Host is served.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only types: the health probes use this module without Starlette
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["HostCheck", "admitted", "host_allowed", "split_host"]


def split_host(value: str) -> tuple[str, str | None]:
    """``name[:port]`` or ``[v6][:port]`` → (lower-case name without brackets, port)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else None
    name, sep, port = value.rpartition(":")
    if not sep or ":" in name:  # no port, or a bare IPv6 address
        return value.rstrip("."), None
    return name.rstrip("."), port


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """True for a loopback name, or a match of an ``allowed`` entry.

    An entry without a port matches its name on any port; one with a port
    matches only that port.
    """
    name, port = split_host(host)
    if not name:
        return False
    if is_loopback_name(name):
        return True
    for entry in allowed:
        entry_name, entry_port = split_host(entry)
        if entry_name == name and entry_port in (None, port):
            return True
    return False


class HostCheck:
    """Pure ASGI middleware; ``enabled`` is false when an API token is configured."""

    def __init__(self, app: ASGIApp, *, allowed: Iterable[str], enabled: bool) -> None:
        self.app = app
        self.allowed = tuple(allowed)
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if admitted(scope, self.allowed):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _refuse(send, _header(scope, b"host"))


def admitted(scope: Scope, allowed: Iterable[str]) -> bool:
    """Whether a request's Host is one :class:`HostCheck` serves (``allowed``: the
    configured ``http.allowed_hosts``)."""
    host = _header(scope, b"host")
    return host is not None and host_allowed(host, allowed)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, host: str | None) -> None:
    if host is None:
        status, reason = 400, "a Host header is required"  # RFC 9112 §3.2
    else:
        status = 421
        reason = (
            f"Host {host!r} is not served here: without an API token only loopback names"
            " (localhost, 127.0.0.1, [::1]) and http.allowed_hosts are accepted"
            " (a guard against DNS rebinding)"
        )
    body = json.dumps({"detail": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
