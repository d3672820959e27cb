"""The router's order and its transport cache, on an in-memory account directory.

The directory and transports are small real classes (the router only needs their
interfaces); the store's own contract runs elsewhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime

from mailgate.deliver import Outgoing
from mailgate.deliver.router import Route, Router
from mailgate.model import Account, AccountTransport, Outcome, SendResult
from tests.builders import NOW, make_message, parse_submitted


class Directory:
    def __init__(self, *accounts: Account) -> None:
        self.accounts = {(a.tenant, a.id): a for a in accounts}
        self.health: list[tuple[str, datetime | None, str | None]] = []

    async def get(self, tenant: str, id: str) -> Account | None:
        return self.accounts.get((tenant, id))

    async def for_sender(self, tenant: str, address: str) -> Account | None:
        for a in sorted(self.accounts.values(), key=lambda a: a.id):
            if a.tenant == tenant and a.is_outbound_enabled and a.may_send_as(address):
                return a
        return None

    async def record_health(
        self, tenant: str, id: str, *, ok_at: datetime | None, error: str | None
    ) -> None:
        self.health.append((id, ok_at, error))


class Named:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    async def send(self, outgoing: Outgoing) -> SendResult:
        return SendResult(Outcome.SENT, 250, None, "ok")

    async def aclose(self) -> None:
        self.closed = True


def account(id: str, *, enabled: bool = True, **kw: object) -> Account:
    fields: dict[str, object] = {"from_": (), "smtp_host": "h", "smtp_port": 25, **kw}
    return Account(id, "default", AccountTransport.SMTP, is_outbound_enabled=enabled, **fields)  # type: ignore[arg-type]


def router(directory: Directory, *, relay: bool = True) -> tuple[Router, list[Named]]:
    built: list[Named] = []

    def factory(a: Account) -> Named:
        built.append(Named(f"{a.id}@v{a.version}"))
        return built[-1]

    relay_route = (account("default"), Named("relay")) if relay else None
    return (
        Router(
            capture=Named("capture"),
            accounts=directory,
            factory=factory,
            relay=relay_route,
            lookup_ttl=0.0,
        ),
        built,
    )


def name(route: Route) -> str | None:
    return None if route.transport is None else route.transport.name


async def test_the_named_account_when_enabled_else_the_message_waits() -> None:
    directory = Directory(account("news"), account("off", enabled=False))
    r, _ = router(directory)
    assert name(await r.route(make_message(account="news"))) == "news@v1"
    off = await r.route(make_message(account="off"))
    assert off.transport is None and off.wait == "account 'off' is disabled"
    missing = await r.route(make_message(account="ghost"))
    assert missing.wait == "account 'ghost' does not exist"


async def test_the_sender_picks_the_account_then_the_relay_then_capture() -> None:
    directory = Directory(account("shop", from_=("@shop.example",)))
    r, _ = router(directory)
    assert name(await r.route(make_message(sender="Shop <a@shop.example>"))) == "shop@v1"
    relayed = await r.route(make_message(sender="x@other.example"))
    assert name(relayed) == "relay" and relayed.account_id == "default" and not relayed.stored
    bare, _ = router(Directory(), relay=False)
    captured = await bare.route(make_message())
    assert name(captured) == "capture" and captured.account is None


async def test_a_stored_default_wins_over_the_relay_and_waits_when_disabled() -> None:
    r, _ = router(Directory(account("default")))
    assert name(await r.route(make_message())) == "default@v1"
    off, _ = router(Directory(account("default", enabled=False)))
    assert (await off.route(make_message())).wait == "account 'default' is disabled"


async def test_capacity_is_the_pool_size_known_or_assumed() -> None:
    """An account not looked up yet is assumed to have the default pool, so the first
    lease for it is capped like later ones; looked up, its own pool size counts."""
    r = Router(capture=Named("capture"), accounts=Directory(account("news")),
               factory=lambda a: Named(a.id),
               lookup_ttl=60.0, default_pool_size=3)  # fmt: skip
    assert r.capacity("default", "news") == 3
    await r.route(make_message(account="news"))
    assert r.capacity("default", "news") == account("news").limits.pool_size
    capture = Router(capture=Named("capture"), capture_only=True, default_pool_size=3)
    assert capture.capacity("default", "news") is None


async def test_dev_captures_everything() -> None:
    r = Router(capture=Named("capture"), accounts=Directory(account("news")), capture_only=True)
    assert name(await r.route(make_message(account="news"))) == "capture"


async def test_a_changed_account_gets_a_new_transport_and_the_old_pool_closes() -> None:
    directory = Directory(account("news"))
    r, built = router(directory)
    first = await r.route(make_message(account="news"))
    assert await r.route(make_message(account="news")) == first  # cached
    directory.accounts[("default", "news")] = replace(account("news"), version=2)
    assert name(await r.route(make_message(account="news"))) == "news@v2"
    await asyncio.sleep(0)  # the old one closes in the background
    assert built[0].closed and not built[1].closed
    del directory.accounts[("default", "news")]
    assert (await r.route(make_message(account="news"))).wait is not None
    await asyncio.sleep(0)
    assert built[1].closed


async def test_health_goes_to_stored_accounts_and_success_is_not_written_per_message() -> None:
    directory = Directory(account("news"))
    r, _ = router(directory)
    stored = await r.route(make_message(account="news"))
    relayed = await r.route(make_message())
    for _ in range(3):
        await r.record_health(stored, ok_at=NOW)
    await r.record_health(relayed, error="535 bad login")  # the relay is not stored
    await r.record_health(stored, error="535 bad login")
    await r.record_health(stored, ok_at=NOW)
    assert directory.health == [
        ("news", NOW, None),
        ("news", None, "535 bad login"),
        ("news", NOW, None),
    ]


async def test_aclose_closes_every_transport_it_built() -> None:
    r, built = router(Directory(account("a"), account("b")))
    await r.route(make_message(account="a"))
    await r.route(make_message(account="b"))
    await r.aclose()
    assert [t.closed for t in built] == [True, True]


def test_a_message_for_an_unknown_account_is_accepted() -> None:
    """Submission no longer refuses it: it is queued and waits (issue 6)."""
    assert (
        parse_submitted({"to": "a@x.io", "subject": "s", "text": "t", "account": "x"}).account
        == "x"
    )
