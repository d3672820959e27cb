"""The SMTP pool against real aiosmtpd upstreams: reuse, NOOP, reconnects, age and size.

What the upstream sees is the evidence: how many sessions it accepted, which
commands (NOOP, QUIT) it got, how many transactions ran at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from email.utils import parseaddr
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from mailgate.app import Gateway
from mailgate.deliver.relay import parse_relay_url
from mailgate.deliver.smtp import SmtpTransport
from mailgate.deliver.transport import Envelope, Outgoing
from mailgate.deliver.transports import transport_for
from mailgate.mime import build_message
from mailgate.model import (
    Account,
    AccountLimits,
    AccountTransport,
    FailureClass,
    Outcome,
    SmtpAuth,
    SmtpSecurity,
)
from mailgate.settings import DeliverySettings
from tests.builders import make_message
from tests.integration.conftest import GatewayFactory, api, wait_for_state
from tests.integration.test_metrics_health import scrape, value
from tests.peers import Upstream


class Watching(Upstream):
    """Counts NOOP and QUIT, and transactions in flight at once; scripts a few faults."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.noops = 0
        self.quits = 0
        self.inflight = 0
        self.most_inflight = 0
        self.data_delay = 0.0
        self.mail_replies: list[str] = []  #: consumed one per MAIL before the default
        self.drop_once_at: str | None = None
        self.noop_reply: str | None = None

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        self.noops += 1
        if self.noop_reply is not None:
            server.transport.close()
            return self.noop_reply
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 2.0.0 Bye"

    def _drop(self, server: Any, verb: str) -> bool:
        if self.drop_once_at == verb:
            self.drop_once_at = None
            server.transport.close()
            return True
        return super()._drop(server, verb)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail_replies:
            return self.mail_replies.pop(0)
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        try:
            await asyncio.sleep(self.data_delay)
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.inflight -= 1


@contextlib.asynccontextmanager
async def watching() -> AsyncIterator[Watching]:
    up = Watching()
    async with up:
        yield up


def pooled(up: Upstream, *, size: int = 3, **pool: float) -> SmtpTransport:
    account = Account(
        id="acct",
        tenant="t1",
        transport=AccountTransport.SMTP,
        smtp_host="127.0.0.1",
        smtp_port=up.port,
        smtp_security=SmtpSecurity.NONE,
        smtp_auth=SmtpAuth.NONE,
        limits=AccountLimits(pool_size=size),
    )
    settings = DeliverySettings(smtp_timeout=5.0, **{f"pool_{k}": v for k, v in pool.items()})
    transport = transport_for(account, settings=settings, local_hostname="gw.test")
    assert isinstance(transport, SmtpTransport)
    return transport


def outgoing(subject: str = "hello") -> Outgoing:
    message = make_message(subject=subject)
    envelope = Envelope(parseaddr(message.sender)[1], message.envelope_recipients, message.id)
    return Outgoing(message, envelope, build_message)


async def test_many_messages_share_one_session() -> None:
    async with watching() as up:
        smtp = pooled(up)
        for n in range(10):
            assert (await smtp.send(outgoing(str(n)))).status is Outcome.SENT
        stats = smtp.stats.snapshot()
        await smtp.aclose()
    assert up.connections == 1 and len(up.received) == 10
    assert stats == {"created": 1, "reused": 9, "closed": 0, "in_use": 0, "idle": 1}
    assert up.quits == 1  # aclose says goodbye (RFC 5321 §4.1.1.10)


@pytest.mark.parametrize("fault", ["drop", "421"])
async def test_a_session_lost_before_mail_is_replaced_within_the_attempt(fault: str) -> None:
    async with watching() as up:
        smtp = pooled(up)
        await smtp.send(outgoing("first"))
        if fault == "drop":
            up.drop_once_at = "MAIL"
        else:  # RFC 5321 §3.8: the server is closing the channel
            up.mail_replies.append("421 4.3.2 upstream.test shutting down")
        result = await smtp.send(outgoing("second"))
        await smtp.aclose()
    assert result.status is Outcome.SENT, result
    assert up.connections == 2
    assert [r.message["Subject"] for r in up.received] == ["first", "second"]


async def test_421_on_a_new_session_is_deferred_as_throttled_not_retried() -> None:
    async with watching() as up:
        up.mail_replies.append("421 4.7.0 too many connections, try again in 30 seconds")
        smtp = pooled(up)
        result = await smtp.send(outgoing())
        await smtp.aclose()
    assert result.status is Outcome.DEFERRED
    assert (result.code, result.failure_class, result.retry_after) == (
        421,
        FailureClass.THROTTLED,
        30.0,
    )
    assert up.connections == 1


async def test_a_drop_after_mail_is_deferred_never_sent_twice() -> None:
    """The upstream may hold the message once DATA started: no second try at once."""
    async with watching() as up:
        smtp = pooled(up)
        await smtp.send(outgoing("first"))
        up.drop_once_at = "DATA"
        result = await smtp.send(outgoing("second"))
        await smtp.aclose()
    assert result.status is Outcome.DEFERRED
    assert result.failure_class is FailureClass.NETWORK and not result.config_error
    assert up.transactions == 2 and up.connections == 1


async def test_a_session_idle_past_noop_after_is_checked_with_noop() -> None:
    async with watching() as up:
        smtp = pooled(up, noop_after=0.2)
        await smtp.send(outgoing("1"))
        await smtp.send(outgoing("2"))  # right away: no NOOP
        assert up.noops == 0
        await asyncio.sleep(0.3)
        assert (await smtp.send(outgoing("3"))).status is Outcome.SENT
        await smtp.aclose()
    assert up.noops == 1 and up.connections == 1


async def test_a_session_that_fails_noop_is_replaced() -> None:
    async with watching() as up:
        smtp = pooled(up, noop_after=0.0)
        await smtp.send(outgoing("1"))
        up.noop_reply = "421 4.4.2 idle too long"
        result = await smtp.send(outgoing("2"))
        stats = smtp.stats.snapshot()
        await smtp.aclose()
    assert result.status is Outcome.SENT and up.connections == 2
    assert (stats["created"], stats["closed"]) == (2, 1)


async def test_a_session_past_its_max_age_is_quit_and_replaced() -> None:
    async with watching() as up:
        smtp = pooled(up, max_age=0.3)
        await smtp.send(outgoing("1"))
        await asyncio.sleep(0.4)
        await smtp.send(outgoing("2"))
        await smtp.aclose()
    assert up.connections == 2 and up.quits == 2  # the old one expired, the new one at aclose


async def test_an_idle_session_is_quit_after_the_idle_timeout() -> None:
    async with watching() as up:
        smtp = pooled(up, idle_timeout=0.2)
        await smtp.send(outgoing())
        await asyncio.sleep(0.5)  # no traffic: the pool's reaper closes it
        stats = smtp.stats.snapshot()
        await smtp.aclose()
    assert up.quits == 1
    assert (stats["closed"], stats["idle"]) == (1, 0)


async def test_at_most_pool_size_sessions_at_once() -> None:
    async with watching() as up:
        up.data_delay = 0.2
        smtp = pooled(up, size=2)
        results = await asyncio.gather(*(smtp.send(outgoing(str(n))) for n in range(6)))
        await smtp.aclose()
    assert all(r.status is Outcome.SENT for r in results)
    assert up.most_inflight == 2 and up.connections == 2


async def test_stats_show_each_pool_and_the_queue(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        for n in range(3):
            mid = (await client.post("/messages", json=_message(n))).json()["ids"][0]
            await wait_for_state(client, mid, "sent")
        response = await client.get("/stats")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["queue"] == {"sent": 3}
    assert body["pools"] == {
        "default/default": {"created": 1, "reused": 2, "closed": 0, "in_use": 0, "idle": 1}
    }
    assert body["last_hour"] == {"sent": 3, "failed": 0, "success_rate": 1.0}
    assert body["last_day"] == body["last_hour"]
    assert len(body["sent_per_minute"]) == 60 and body["sent_per_minute"][-1] == 3
    assert body["last_errors"] == {}


async def test_metrics_show_the_pools_connections_open_in_use_idle_and_closed(
    start_gateway: GatewayFactory,
) -> None:
    """Two sends held in DATA: two open, both in use; sent: both idle; past the idle
    timeout: both closed, none open. /metrics is parsed with prometheus-client's parser."""
    settings = {"delivery": {"pool_idle_timeout": 1.0}}
    async with (
        watching() as up,
        start_gateway(relay_url=up.url, **settings) as gw,
        api(gw) as client,
    ):
        up.data_delay = 1.0
        ids = (await client.post("/messages", json=[_message(1), _message(2)])).json()["ids"]
        await _until(lambda: up.inflight == 2)
        sending = await _pool_figures(gw, "default/default")
        for mid in ids:
            await wait_for_state(client, mid, "sent")
        sent = await _pool_figures(gw, "default/default")
        await _until(lambda: up.quits == 2)  # the reaper quits both after the idle timeout
        closed = await _pool_figures(gw, "default/default")
    assert up.connections == 2
    assert sending == {"in_use": 2, "idle": 0, "open": 2, "closed_total": 0}
    assert sent == {"in_use": 0, "idle": 2, "open": 2, "closed_total": 0}
    assert closed == {"in_use": 0, "idle": 0, "open": 0, "closed_total": 2}


async def _pool_figures(gw: Gateway, pool: str) -> dict[str, float]:
    samples = await scrape(gw)
    for name in ("mailgate_pool_connections_open", "mailgate_pool_connections_closed_total"):
        assert (name, (("pool", pool),)) in samples, name  # shown, not a missing zero
    return {
        "in_use": value(samples, "mailgate_pool_connections", pool=pool, state="in_use"),
        "idle": value(samples, "mailgate_pool_connections", pool=pool, state="idle"),
        "open": value(samples, "mailgate_pool_connections_open", pool=pool),
        "closed_total": value(samples, "mailgate_pool_connections_closed_total", pool=pool),
    }


async def _until(check: Callable[[], bool], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


def _message(n: int) -> dict[str, Any]:
    return {"from": "shop@example.com", "to": "a@example.com", "subject": f"{n}", "text": "t"}


class LoginOnlyUpstream(Upstream):
    """A server that offers AUTH LOGIN but not PLAIN (some Exchange set-ups)."""

    def _session(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        session = super()._session(loop)
        session._auth_methods.pop("PLAIN", None)
        return session


async def test_a_server_offering_only_login_gets_login() -> None:
    """The relay URL names no mechanism: PLAIN is preferred, LOGIN used when it is all
    the server offers (aiosmtplib's login() did the same before accounts)."""
    up = LoginOnlyUpstream(credentials={"agent": "pw"})
    async with up:
        relay = parse_relay_url(f"smtp://agent:pw@127.0.0.1:{up.port}?auth_plaintext=true")
        transport = transport_for(
            relay.account(pool_size=1), settings=DeliverySettings(), local_hostname="mg.test"
        )
        try:
            result = await transport.send(outgoing())
        finally:
            await transport.aclose()
    assert result.status is Outcome.SENT, result
    assert up.logins == ["agent"]
