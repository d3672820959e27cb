"""Which addresses a URL attachment may be fetched from: checked after DNS resolution.

A URL attachment makes the gateway fetch whatever a client names, so an unchecked
fetch would let any API client read the gateway's own network: a loopback admin
port, a private service, or a cloud metadata endpoint holding credentials
(``169.254.169.254``, ``fd00:ec2::254``). The name in the URL says nothing about
where it leads, so the check is on the *addresses* it resolves to — every one of
them, since a client would connect to any — and the connection is then made to the
address that was checked (:class:`NetGuard.resolve` returns it), so a second DNS
answer cannot rebind the name to a forbidden address between check and connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

__all__ = [
    "METADATA_ADDRESSES",
    "AddressRefused",
    "NetGuard",
    "Resolver",
    "UnresolvableHost",
    "refusal",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Resolves ``(host, port)`` to IP address texts; tests pass their own to answer anything.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

#: Instance metadata services (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba): they hand
#: out the machine's cloud credentials to anyone who can reach them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")  #: RFC 4193


class AddressRefused(Exception):
    """The host resolves to an address URL attachments may not reach (permanent)."""


class UnresolvableHost(Exception):
    """DNS gave no answer for the host (may be temporary)."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's resolver (``getaddrinfo``, off the event loop), every address it gives."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be fetched from (a kind of address), or None if it is public.

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is judged as the IPv4 address it
    reaches. Anything not globally routable (RFC 6890 special-purpose registries) is out.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    checks: tuple[tuple[bool, str], ...] = (
        (ip in METADATA_ADDRESSES, "a cloud metadata address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL, "a unique-local address"),
        (ip.is_private, "a private address"),
        (not ip.is_global or ip.is_reserved, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


@dataclass(frozen=True, slots=True)
class NetGuard:
    """The fetch policy: public addresses only, unless private networks or a host are allowed."""

    allow_private: bool = False
    allowed_hosts: Collection[str] = ()  #: names (or IP texts) exempt from the check
    resolver: Resolver = system_resolver

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: :class:`AddressRefused` unless every
        address it resolves to may be reached, :class:`UnresolvableHost` without one."""
        addresses = [host] if _literal(host) else await self._lookup(host, port)
        if not self._exempt(host):
            for text in addresses:
                reason = refusal(ipaddress.ip_address(text.partition("%")[0]))
                if reason is not None:
                    where = f"{host} is" if text == host else f"{host} resolves to {text},"
                    raise AddressRefused(f"{where} {reason}: refused to connect to it")
        return addresses[0]

    def _exempt(self, host: str) -> bool:
        return self.allow_private or host.lower() in {h.lower() for h in self.allowed_hosts}

    async def _lookup(self, host: str, port: int) -> list[str]:
        try:
            addresses = list(await self.resolver(host, port))
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise UnresolvableHost(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise UnresolvableHost(f"cannot resolve {host}: no address")
        return addresses


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True
