"""The route from a message to its transport: data, looked up from the account directory.

Like httpx's mounts, a route is a value (:class:`Route`), not a closure: the dispatcher
asks :meth:`Router.route` and gets the transport, the account it belongs to, or the
reason the message has to wait. The order (issue 6, "Choosing a transport"):

1. the account the message names, when it exists and is enabled;
2. a message that named another account than ``default`` waits while that account is
   unknown or disabled (``queued``, with the reason shown), instead of failing;
3. the enabled account whose ``from`` matches the sender;
4. a stored account named ``default`` (disabled: the message waits);
5. the configured relay, as the account ``default`` (``--relay``/``MAILGATE_RELAY_URL``);
6. capture: nothing leaves the machine (``mailgate dev`` always captures, but for a
   captured message released on purpose, which goes through the relay when one is set).

Transports are cached per (tenant, account, version); an account that changed or was
deleted has its old transport's pool closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from mailgate.deliver.transport import Transport
from mailgate.errors import ConfigError
from mailgate.model import Account, Message, mailbox

__all__ = [
    "RELEASED",
    "AccountDirectory",
    "FixedRoute",
    "Route",
    "Router",
    "Routes",
    "TransportFactory",
]

#: the ``source`` of a captured message released on (``mailgate.inbox.release``)
RELEASED = "release"

log = logging.getLogger(__name__)

_HEALTH_REFRESH = 60.0  #: seconds a recorded success stands for an account that keeps working

#: Builds an account's transport (its own SMTP pool, or the provider's API client).
TransportFactory = Callable[[Account], Transport]


class AccountDirectory(Protocol):
    """What the router needs of ``mailgate.store.accounts.AccountStore``."""

    async def get(self, tenant: str, id: str) -> Account | None: ...

    async def for_sender(self, tenant: str, address: str) -> Account | None: ...

    async def record_health(
        self, tenant: str, id: str, *, ok_at: datetime | None, error: str | None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Route:
    """Where one message goes: a transport (with its account, None when captured), or
    ``wait``: why it is held until its account can send."""

    transport: Transport | None = None
    account: Account | None = None
    wait: str | None = None
    stored: bool = False  #: the account is in the directory (health is recorded there)

    @property
    def account_id(self) -> str | None:
        return None if self.account is None else self.account.id


class Routes(Protocol):
    """What the dispatcher asks of a router."""

    async def route(self, message: Message) -> Route: ...

    def capacity(self, tenant: str, account: str) -> int | None: ...

    async def record_health(
        self, route: Route, *, ok_at: datetime | None = None, error: str | None = None
    ) -> None: ...


class FixedRoute:
    """Every message through one transport, without an account (tests, capture)."""

    def __init__(self, transport: Transport) -> None:
        self._route = Route(transport)

    async def route(self, message: Message) -> Route:
        return self._route

    def capacity(self, tenant: str, account: str) -> int | None:
        return None

    async def record_health(
        self, route: Route, *, ok_at: datetime | None = None, error: str | None = None
    ) -> None:
        return None


class Router:
    """Looks routes up; owns the transports it built and closes them (:meth:`aclose`)."""

    def __init__(
        self,
        *,
        capture: Transport,
        accounts: AccountDirectory | None = None,
        factory: TransportFactory | None = None,
        relay: tuple[Account, Transport] | None = None,
        capture_only: bool = False,
        lookup_ttl: float = 5.0,
        default_pool_size: int | None = None,
    ) -> None:
        """``relay``: the configured default relay as an account and its transport.
        ``lookup_ttl``: seconds an account lookup is reused (a burst from one sender
        costs one query, and a change is seen within that time).
        ``default_pool_size``: the capacity assumed for an account not looked up yet."""
        self.capture = Route(capture)
        self.accounts = accounts
        self.factory = factory
        self.relay = relay
        self.capture_only = capture_only
        self.lookup_ttl = lookup_ttl
        self.default_pool_size = default_pool_size
        self._transports: dict[tuple[str, str], tuple[int, Transport]] = {}
        self._lookups: dict[tuple[str, str, str], tuple[float, Account | None]] = {}
        self._pending: dict[tuple[str, str, str], asyncio.Future[Account | None]] = {}
        self._generation: dict[str, int] = {}  #: per tenant, bumped by forget()
        self._closing: set[asyncio.Task[None]] = set()
        self._healthy: dict[tuple[str, str], float] = {}  #: account → ok recorded until
        self._relay_routes: dict[str, Route] = {}

    async def route(self, message: Message) -> Route:
        """The route for ``message`` now (see the module docstring for the order)."""
        if self.capture_only:
            if message.source == RELEASED and self.relay is not None:
                return self._relay_route(message.tenant)  # a release leaves on purpose
            return self.capture
        named = await self._get(message.tenant, message.account)
        if named is not None and named.is_outbound_enabled:
            return self._stored(named)
        if message.account != "default":
            return Route(wait=_unusable(message.account, named))
        sender = await self._for_sender(message.tenant, mailbox(message.sender)[1])
        if sender is not None:
            return self._stored(sender)
        if named is not None:  # a stored, disabled "default" wins over the relay
            return Route(wait=_unusable("default", named))
        if self.relay is not None:
            return self._relay_route(message.tenant)
        return self.capture

    def _relay_route(self, tenant: str) -> Route:
        """The configured relay, as the tenant's ``default`` account (one Route per tenant)."""
        route = self._relay_routes.get(tenant)
        if route is None:
            assert self.relay is not None
            account, transport = self.relay
            route = self._relay_routes[tenant] = Route(transport, replace(account, tenant=tenant))
        return route

    def capacity(self, tenant: str, account: str) -> int | None:
        """How many sends the account named ``account`` can have at once (its pool
        size), from what routing already looked up. An account not looked up yet gets
        the default pool size, so its first lease is capped too (it would otherwise take
        every free slot); None only when unbounded (capture). No query: this runs
        before every lease."""
        if self.capture_only:
            return None
        hit = self._lookups.get((tenant, "id", account))
        if hit is not None and hit[1] is not None:
            return hit[1].limits.pool_size
        if account == "default" and self.relay is not None:
            return self.relay[0].limits.pool_size
        return self.default_pool_size

    async def record_health(
        self, route: Route, *, ok_at: datetime | None = None, error: str | None = None
    ) -> None:
        """Write a send's verdict on the account to its health fields (stored ones only).

        A failure is written every time; success once per :data:`_HEALTH_REFRESH` while
        the account keeps working (and at once after a failure).
        """
        if self.accounts is None or route.account is None or not route.stored:
            return
        account = route.account
        key = (account.tenant, account.id)
        if error is None and self._healthy.get(key, 0.0) > time.monotonic():
            return  # known to work: not one write per message sent
        await self.accounts.record_health(account.tenant, account.id, ok_at=ok_at, error=error)
        if error is None:
            self._healthy[key] = time.monotonic() + _HEALTH_REFRESH
        else:
            self._healthy.pop(key, None)

    async def _get(self, tenant: str, account_id: str) -> Account | None:
        if self.accounts is None:
            return None
        return await self._cached(
            (tenant, "id", account_id), lambda: self._fetch(tenant, account_id)
        )

    async def _fetch(self, tenant: str, account_id: str) -> Account | None:
        assert self.accounts is not None
        found = await self.accounts.get(tenant, account_id)
        if found is None:
            self._forget(tenant, account_id)  # deleted: close its pool
        return found

    async def _for_sender(self, tenant: str, address: str) -> Account | None:
        accounts = self.accounts
        if accounts is None or not address:
            return None
        key = (tenant, "from", address.lower())
        return await self._cached(key, lambda: accounts.for_sender(tenant, address))

    async def _cached(
        self, key: tuple[str, str, str], fetch: Callable[[], Awaitable[Account | None]]
    ) -> Account | None:
        """A lookup reused for ``lookup_ttl`` seconds; concurrent misses share one query
        (a batch of sends for one account would otherwise each ask the store at once)."""
        hit = self._lookups.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fill(key, fetch))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _fill(
        self, key: tuple[str, str, str], fetch: Callable[[], Awaitable[Account | None]]
    ) -> Account | None:
        generation = self._generation.get(key[0], 0)
        found = await fetch()
        if self._generation.get(key[0], 0) == generation:  # no change while we looked
            if len(self._lookups) > 10_000:  # many senders: start over rather than grow
                self._lookups.clear()
            self._lookups[key] = (time.monotonic() + self.lookup_ttl, found)
        return found

    def _stored(self, account: Account) -> Route:
        """The account's route; an account its transport cannot be built for (no host,
        no token) waits like a disabled one, with the reason."""
        try:
            return Route(self._transport_for(account), account, stored=True)
        except ConfigError as exc:
            return Route(account=account, wait=f"account {account.id!r}: {exc}", stored=True)

    def _transport_for(self, account: Account) -> Transport:
        """The account's cached transport; rebuilt (the old one closed) when it changed."""
        key = (account.tenant, account.id)
        cached = self._transports.get(key)
        if cached is not None and cached[0] == account.version:
            return cached[1]
        if self.factory is None:
            raise RuntimeError("stored accounts need a transport factory")
        transport = self.factory(account)
        self._transports[key] = (account.version, transport)
        if cached is not None:
            self._close_later(cached[1])
        return transport

    def forget(self, tenant: str, account_id: str) -> None:
        """The account changed or was deleted: drop what is cached about it now."""
        self._lookups = {k: v for k, v in self._lookups.items() if k[0] != tenant}
        self._generation[tenant] = self._generation.get(tenant, 0) + 1  # in-flight: don't keep
        self._forget(tenant, account_id)

    def _forget(self, tenant: str, account_id: str) -> None:
        cached = self._transports.pop((tenant, account_id), None)
        if cached is not None:
            self._close_later(cached[1])

    def _close_later(self, transport: Transport) -> None:
        """Close a replaced transport's pool without holding up the message being routed."""
        task = asyncio.create_task(_close(transport))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every transport built here (the relay's and capture are closed by their
        owner, the composition root)."""
        transports = [t for _, t in self._transports.values()]
        self._transports.clear()
        await asyncio.gather(*(_close(t) for t in transports), *self._closing)


def _unusable(account_id: str, account: Account | None) -> str:
    if account is None:
        return f"account {account_id!r} does not exist"
    return f"account {account_id!r} is disabled"


async def _close(transport: Transport) -> None:
    try:
        await transport.aclose()
    except Exception:
        log.exception("closing the transport %s failed", transport.name)
