"""One suite for every transport: capture, SMTP (a real aiosmtpd upstream) and Postmark
(a local server speaking its contract). What a transport promises the dispatcher:

* an accepted message comes back ``sent`` with a result for every recipient;
* only the envelope's recipients (those still pending) are addressed;
* a refused recipient fails alone, the others are sent;
* a peer it cannot reach is ``deferred``, class ``network``, and counts (not config);
* its ``name`` says where the mail went, without credentials.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Protocol

import pytest

from mailgate.clock import SystemClock
from mailgate.deliver.capture import CaptureTransport
from mailgate.deliver.transport import Envelope, Outgoing, Transport
from mailgate.deliver.transports import transport_for
from mailgate.inbox import Inbox
from mailgate.mime import build_message
from mailgate.model import (
    Account,
    AccountTransport,
    FailureClass,
    Message,
    Outcome,
    SmtpAuth,
    SmtpSecurity,
)
from mailgate.settings import DeliverySettings, PostmarkSettings
from mailgate.store import Database, InboxStore
from tests.builders import make_message
from tests.peers import Upstream
from tests.postmark_peer import PostmarkPeer

SETTINGS = DeliverySettings(smtp_timeout=5.0)


@dataclass(frozen=True)
class Arrived:
    subject: str
    recipients: frozenset[str]


class Harness(Protocol):
    name: str
    transport: Transport

    async def arrived(self) -> list[Arrived]: ...

    def refuse(self, address: str) -> None: ...


def smtp_account(port: int) -> Account:
    return Account(
        id="acct",
        tenant="t1",
        transport=AccountTransport.SMTP,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security=SmtpSecurity.NONE,
        smtp_auth=SmtpAuth.NONE,
        is_outbound_enabled=True,
    )


def postmark_account(token: str = "server-token") -> Account:
    return Account(id="pm", tenant="t1", transport=AccountTransport.POSTMARK, postmark_token=token)


def postmark_settings(url: str) -> PostmarkSettings:
    return PostmarkSettings(base_url=url, timeout=5.0)


class CaptureHarness:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.transport: Transport = CaptureTransport(inbox)
        self.name = "capture"

    async def arrived(self) -> list[Arrived]:
        records, _ = await self.inbox.store.list("default", limit=100)
        return [Arrived(r.subject, frozenset(r.rcpt_to)) for r in reversed(records)]

    def refuse(self, address: str) -> None:
        raise AssertionError("capture accepts every recipient")


class SmtpHarness:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport = transport_for(
            smtp_account(upstream.port), settings=SETTINGS, local_hostname="gw.test"
        )
        self.name = f"smtp://127.0.0.1:{upstream.port}"

    async def arrived(self) -> list[Arrived]:
        return [
            Arrived(str(r.message["Subject"]), frozenset(r.rcpt_tos))
            for r in self.upstream.received
        ]

    def refuse(self, address: str) -> None:
        self.upstream.rcpt_replies[address] = f"550 5.1.1 <{address}>: no such user"


class PostmarkHarness:
    def __init__(self, peer: PostmarkPeer) -> None:
        self.peer = peer
        self.transport = transport_for(
            postmark_account(),
            settings=SETTINGS,
            local_hostname="gw.test",
            postmark=postmark_settings(peer.url),
        )
        self.name = "postmark"

    async def arrived(self) -> list[Arrived]:
        out = []
        for body in self.peer.requests:
            values = [body[k] for k in ("To", "Cc", "Bcc") if body.get(k)]
            out.append(Arrived(body["Subject"], frozenset(a for _, a in getaddresses(values))))
        return out

    def refuse(self, address: str) -> None:
        self.peer.inactive.add(address)


@contextlib.asynccontextmanager
async def capture_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    db = Database(f"sqlite:///{tmp_path / 'capture.sqlite3'}")
    await db.migrate()
    try:
        yield CaptureHarness(Inbox(InboxStore(db), SystemClock()))
    finally:
        await db.aclose()


@contextlib.asynccontextmanager
async def smtp_harness() -> AsyncIterator[Harness]:
    async with Upstream() as up:
        harness = SmtpHarness(up)
        yield harness
        await harness.transport.aclose()


@contextlib.asynccontextmanager
async def postmark_harness() -> AsyncIterator[Harness]:
    async with PostmarkPeer() as peer:
        harness = PostmarkHarness(peer)
        yield harness
        await harness.transport.aclose()


@pytest.fixture(params=["capture", "smtp", "postmark"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kinds = {
        "capture": lambda: capture_harness(tmp_path),
        "smtp": smtp_harness,
        "postmark": postmark_harness,
    }
    async with kinds[request.param]() as h:
        yield h


@pytest.fixture(params=["smtp", "postmark"])
async def remote(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The transports that talk to a peer that can refuse a recipient."""
    async with smtp_harness() if request.param == "smtp" else postmark_harness() as h:
        yield h


def outgoing(message: Message, recipients: tuple[str, ...] | None = None) -> Outgoing:
    pending = recipients if recipients is not None else message.envelope_recipients
    envelope = Envelope(parseaddr(message.sender)[1], pending, message.id)
    return Outgoing(message, envelope, build_message)


async def test_an_accepted_message_is_sent_with_a_result_per_recipient(harness: Harness) -> None:
    message = make_message(
        subject="contract",
        to=("Ann <a@example.com>",),
        cc=("c@example.com",),
        bcc=("b@example.com",),
    )
    result = await harness.transport.send(outgoing(message))
    assert result.status is Outcome.SENT, result
    assert result.failure_class is None
    everyone = {"a@example.com", "c@example.com", "b@example.com"}
    assert set(result.recipients) == everyone
    assert all(r.status is Outcome.SENT for r in result.recipients.values())
    assert await harness.arrived() == [Arrived("contract", frozenset(everyone))]


async def test_only_the_pending_recipients_are_addressed(harness: Harness) -> None:
    """A retry after a partial failure must not reach again those who have the message."""
    message = make_message(subject="retry", to=("a@example.com", "b@example.com"))
    result = await harness.transport.send(outgoing(message, ("b@example.com",)))
    assert result.status is Outcome.SENT, result
    assert set(result.recipients) == {"b@example.com"}
    assert await harness.arrived() == [Arrived("retry", frozenset({"b@example.com"}))]


async def test_a_refused_recipient_fails_alone(remote: Harness) -> None:
    remote.refuse("gone@example.com")
    message = make_message(subject="partial", to=("a@example.com", "gone@example.com"))
    result = await remote.transport.send(outgoing(message))
    assert result.status is Outcome.SENT, result
    assert result.recipients["a@example.com"].status is Outcome.SENT
    assert result.recipients["gone@example.com"].status is Outcome.FAILED
    assert "gone@example.com" in result.recipients["gone@example.com"].text


async def test_every_recipient_refused_fails_as_invalid_recipient(remote: Harness) -> None:
    remote.refuse("gone@example.com")
    result = await remote.transport.send(outgoing(make_message(to=("gone@example.com",))))
    assert result.status is Outcome.FAILED, result
    assert result.failure_class is FailureClass.INVALID_RECIPIENT
    assert not result.config_error
    assert result.recipients["gone@example.com"].status is Outcome.FAILED
    assert await remote.arrived() == []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("kind", ["smtp", "postmark"])
async def test_an_unreachable_peer_is_deferred_as_network(kind: str) -> None:
    port = closed_port()
    if kind == "smtp":
        transport = transport_for(smtp_account(port), settings=SETTINGS, local_hostname="gw")
    else:
        transport = transport_for(
            postmark_account(),
            settings=SETTINGS,
            local_hostname="gw",
            postmark=postmark_settings(f"http://127.0.0.1:{port}"),
        )
    try:
        result = await transport.send(outgoing(make_message()))
    finally:
        await transport.aclose()
    assert result.status is Outcome.DEFERRED, result
    assert result.failure_class is FailureClass.NETWORK
    assert not result.config_error  # the message's attempt: it counts


async def test_the_name_says_where_the_mail_went(harness: Harness) -> None:
    assert harness.transport.name == harness.name
    result = await harness.transport.send(outgoing(make_message()))
    assert result.status is Outcome.SENT
