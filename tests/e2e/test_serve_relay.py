"""``mailgate serve`` relaying to a real upstream MTA, across a restart."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StartAsync, Workspace, await_messages
from tests.peers import Upstream

pytestmark = pytest.mark.e2e

FAST_RETRY = {
    "MAILGATE_RETRY__INITIAL_DELAY": "1",
    "MAILGATE_RETRY__MULTIPLIER": "1",
    "MAILGATE_RETRY__JITTER": "0",
    "MAILGATE_DELIVERY__POLL_INTERVAL": "0.2",
}


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else gets it), not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _serve_args(workspace: Workspace, relay: str) -> tuple[str, ...]:
    return ("serve", "--http", "127.0.0.1:0", "--db", str(workspace.db), "--relay", relay)


async def test_serve_relays_a_message_upstream(
    upstream: Upstream, amailgate: StartAsync, workspace: Workspace
) -> None:
    mg = await amailgate(*_serve_args(workspace, f"{upstream.url}?from=app@example.com"))
    assert mg.mode == "serve"
    assert mg.smtp_port is None  # serve runs no SMTP listener
    message = {
        "to": ["a@example.com"],
        "bcc": ["hidden@example.com"],
        "subject": "Relayed — ünïcödé ✓",
        "text": "Hello from mailgate\n",
        "html": "<p>Hello</p>\n",
        "headers": {"X-Order": "42"},
    }
    async with httpx.AsyncClient(base_url=mg.web, timeout=10) as http:
        response = await http.post("/api/v1/messages", json=message)
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["queued"] == 1
        assert body["rejected"] == []
        [message_id] = body["ids"]

        [received] = await upstream.wait_for(1)
        [sent] = await await_messages(http, [message_id])

    assert received.mail_from == "app@example.com"  # the relay URL's ?from=
    assert sorted(received.rcpt_tos) == ["a@example.com", "hidden@example.com"]
    parsed = received.message
    assert parsed["X-Mailgate-ID"] == message_id
    assert parsed["Subject"] == message["subject"]
    assert parsed["From"] == "app@example.com"
    assert parsed["X-Order"] == "42"
    assert b"hidden@example.com" not in received.raw  # Bcc only in the envelope
    text = parsed.get_body(preferencelist=("plain",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == message["text"]

    [attempt] = sent["attempts"]
    assert attempt["code"] == 250
    assert attempt["transport"] == f"smtp://127.0.0.1:{upstream.port}"
    assert {r: v["status"] for r, v in attempt["recipients"].items()} == {
        "a@example.com": "sent",
        "hidden@example.com": "sent",
    }
    assert sent["last_error"] is None


async def test_deferred_messages_survive_a_restart(
    upstream: Upstream, amailgate: StartAsync, workspace: Workspace, dead_port: int
) -> None:
    first = await amailgate(
        *_serve_args(workspace, f"smtp://127.0.0.1:{dead_port}"), env=FAST_RETRY
    )
    batch = [
        {"from": "app@example.com", "to": [f"r{i}@example.com"], "subject": f"m{i}", "text": "x"}
        for i in range(3)
    ]
    async with httpx.AsyncClient(base_url=first.web, timeout=10) as http:
        response = await http.post("/api/v1/messages", json=batch)
        assert response.status_code == 202, response.text
        ids: list[str] = response.json()["ids"]
        assert len(set(ids)) == 3

        def deferred(m: dict[str, Any]) -> bool:
            return m["state"] == "deferred" and len(m["attempts"]) >= 1

        for message in await await_messages(http, ids, deferred):
            assert all(a["code"] is None for a in message["attempts"])
            assert message["last_error"]
            assert message["next_attempt_at"] is not None

    first.signal(signal.SIGTERM)
    assert await first.wait() == 0, first.output()
    assert "mailgate serve: stopped" in first.stdout()
    assert upstream.received == []

    second = await amailgate(*_serve_args(workspace, upstream.url), env=FAST_RETRY)
    assert second.db == first.db
    await upstream.wait_for(3)
    async with httpx.AsyncClient(base_url=second.web, timeout=10) as http:
        messages = await await_messages(http, ids)
    for message in messages:
        assert len(message["attempts"]) >= 2
        assert message["attempts"][0]["code"] is None
        assert message["attempts"][-1]["code"] == 250
    # Every message reached the upstream exactly once.
    delivered = sorted(r.message["X-Mailgate-ID"] for r in upstream.received)
    assert delivered == sorted(ids)


async def test_serve_records_each_recipients_outcome(
    upstream: Upstream, amailgate: StartAsync, workspace: Workspace
) -> None:
    """README: a recipient refused at RCPT is recorded on its own; the others still get it.
    The relay comes from MAILGATE_RELAY_URL this time."""
    upstream.rcpt_replies = {
        "gone@example.com": "550 5.1.1 no such user",
        "busy@example.com": "451 4.2.1 mailbox busy, try later",
    }
    mg = await amailgate(
        "serve", "--http", "127.0.0.1:0", "--db", str(workspace.db),
        env={**FAST_RETRY, "MAILGATE_RETRY__INITIAL_DELAY": "3600",
             "MAILGATE_RELAY_URL": upstream.url},
    )  # fmt: skip
    base = {"from": "app@example.com", "text": "x"}
    batch = [
        {**base, "subject": "partly", "to": ["ok@example.com", "gone@example.com"]},
        {**base, "subject": "refused", "to": ["gone@example.com"]},
        {**base, "subject": "later", "to": ["busy@example.com"]},
    ]
    async with httpx.AsyncClient(base_url=mg.web, timeout=10) as http:
        response = await http.post("/api/v1/messages", json=batch)
        assert response.status_code == 202, response.text
        partly, refused, later = response.json()["ids"]
        settled = await await_messages(http, [partly, refused, later], _settled)

    by_id = {m["id"]: m for m in settled}
    assert by_id[partly]["state"] == "sent"
    [attempt] = by_id[partly]["attempts"]
    assert attempt["recipients"]["ok@example.com"]["status"] == "sent"
    assert attempt["recipients"]["ok@example.com"]["code"] == 250
    assert attempt["recipients"]["gone@example.com"]["status"] == "failed"
    assert attempt["recipients"]["gone@example.com"]["code"] == 550

    assert by_id[refused]["state"] == "failed"
    assert by_id[refused]["attempts"][0]["code"] == 550
    assert by_id[refused]["attempts"][0]["enhanced_code"] == "5.1.1"

    assert by_id[later]["state"] == "deferred"
    assert by_id[later]["attempts"][0]["code"] == 451
    assert by_id[later]["next_attempt_at"] is not None

    [received] = upstream.received
    assert received.message["Subject"] == "partly"
    assert received.rcpt_tos == ["ok@example.com"]


async def test_serve_relays_non_ascii_addresses_with_smtputf8(
    upstream: Upstream, amailgate: StartAsync, workspace: Workspace
) -> None:
    """RFC 6531: an internationalized address goes out with MAIL FROM … SMTPUTF8
    when the upstream offers it (aiosmtpd does) — on the very first connection too."""
    mg = await amailgate(*_serve_args(workspace, upstream.url))
    message = {
        "from": "Jörg <jörg@bücher.example>",
        "to": ["山田 <yamada@例え.jp>"],
        "subject": "SMTPUTF8 ✓",
        "text": "x",
    }
    async with httpx.AsyncClient(base_url=mg.web, timeout=10) as http:
        response = await http.post("/api/v1/messages", json=message)
        assert response.status_code == 202, response.text
        [message_id] = response.json()["ids"]
        [settled] = await await_messages(http, [message_id], _settled)

    assert settled["state"] == "sent", settled["attempts"]
    [received] = upstream.received
    assert received.mail_from == "jörg@bücher.example"
    assert received.rcpt_tos == ["yamada@例え.jp"]
    assert "SMTPUTF8" in [option.upper() for option in received.mail_options]
    assert received.message["To"] == "山田 <yamada@例え.jp>"


def _settled(message: dict[str, Any]) -> bool:
    """An attempt was made and its outcome recorded."""
    return message["state"] not in {"queued", "sending"}
