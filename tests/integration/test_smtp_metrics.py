"""The SMTP server's figures on ``/metrics`` (issue 7): connections, accepted messages
and their bytes, refusals by reason and AUTH attempts, counted from real smtplib and
aiosmtplib sessions and read back with prometheus-client's parser.

The server is built here on a running gateway's inbox and metrics, as the gateway does in
dev mode, so what is checked is the gateway's own ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from mailgate.app import Gateway, Mode
from mailgate.ingest.smtp import CaptureHandler, SmtpServer
from tests.integration.conftest import GatewayFactory, api
from tests.integration.test_capture_hardening import _refuse_inserts
from tests.integration.test_metrics_health import Samples, scrape, value

Address = tuple[str, int]

MESSAGES = "mailgate_smtp_messages_total"


@contextlib.asynccontextmanager
async def capture_server(gw: Gateway) -> AsyncIterator[Address]:
    """An SMTP capture server recording into ``gw``'s metrics: 2 recipients, 2000 bytes."""
    handler = CaptureHandler(gw.inbox, max_recipients=2)
    server = SmtpServer(
        handler, hostname="mx.test", max_message_size=2000, timeout=30, metrics=gw.metrics
    )
    address = await server.start("127.0.0.1", 0)
    try:
        yield address
    finally:
        await server.stop(grace=1)


async def settled(gw: Gateway) -> Samples:
    """The figures once the server has seen every client go (a close is asynchronous)."""
    return await _until(gw, "mailgate_smtp_connections_open", 0)


async def _until(gw: Gateway, name: str, expected: float) -> Samples:
    async with asyncio.timeout(10):
        while True:
            samples = await scrape(gw)
            if value(samples, name) == expected:
                return samples
            await asyncio.sleep(0.05)


def refused(samples: Samples, reason: str) -> float:
    return value(samples, MESSAGES, result="refused", reason=reason)


def _two_messages(address: Address, first: bytes, second: bytes) -> dict[str, tuple[int, bytes]]:
    """One session, two messages; the second has one recipient too many."""
    with smtplib.SMTP(*address, timeout=10) as client:
        client.sendmail("app@example.com", ["dev@example.com"], first)
        recipients = ["1@example.com", "2@example.com", "3@example.com"]
        return client.sendmail("app@example.com", recipients, second)


def _too_big_twice_and_a_bad_address(address: Address) -> list[int]:
    """552 for a SIZE= announced at MAIL, 552 for data past the limit, 553 for ``<a@>``."""
    codes = []
    big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 50
    with smtplib.SMTP(*address, timeout=10) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as announced:
            client.sendmail("app@example.com", ["dev@example.com"], big)  # smtplib sends SIZE=
        codes.append(announced.value.smtp_code)
        client.mail("app@example.com")  # no SIZE: the server counts what arrives
        client.rcpt("dev@example.com")
        codes.append(client.data(big)[0])
        codes.append(client.docmd("MAIL FROM:<a@>")[0])
    return codes


async def _line_too_long(address: Address) -> int:
    """RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF."""
    client = aiosmtplib.SMTP(hostname=address[0], port=address[1], start_tls=False)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPDataError) as too_long:
        await client.sendmail(
            "app@example.com", ["dev@example.com"], b"Subject: long\r\n\r\n" + b"y" * 1200
        )
    await client.quit()
    return too_long.value.code


async def test_connections_accepted_bytes_and_refusals_by_reason(
    start_gateway: GatewayFactory,
) -> None:
    first = b"Subject: one\r\n\r\nhello\r\n"
    second = b"Subject: two\r\n\r\n" + b"z" * 500 + b"\r\n"
    async with start_gateway() as gw, capture_server(gw) as address:
        during = await scrape(gw)
        rejected = await asyncio.to_thread(_two_messages, address, first, second)
        codes = await asyncio.to_thread(_too_big_twice_and_a_bad_address, address)
        long_line = await _line_too_long(address)
        samples = await settled(gw)

    assert set(rejected) == {"3@example.com"} and rejected["3@example.com"][0] == 452
    assert codes == [552, 552, 553] and long_line == 500
    assert value(during, "mailgate_smtp_connections_total") == 0
    assert value(samples, "mailgate_smtp_connections_total") == 3
    assert value(samples, MESSAGES, result="accepted", reason="") == 2
    assert value(samples, "mailgate_smtp_received_bytes_total") == len(first) + len(second)
    assert refused(samples, "too_many_recipients") == 1
    assert refused(samples, "too_big") == 2
    assert refused(samples, "bad_address") == 1
    assert refused(samples, "line_too_long") == 1
    assert refused(samples, "store_unavailable") == 0


async def test_connections_open_while_clients_are_connected(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway() as gw, capture_server(gw) as address:
        clients = [aiosmtplib.SMTP(hostname=address[0], port=address[1]) for _ in range(2)]
        for client in clients:
            await client.connect()
            await client.ehlo()  # answered, so the server has seen the connection
        assert value(await scrape(gw), "mailgate_smtp_connections_open") == 2
        await clients[0].quit()
        one_left = await _until(gw, "mailgate_smtp_connections_open", 1)
        await clients[1].quit()
        samples = await settled(gw)
    assert value(one_left, "mailgate_smtp_connections_total") == 2
    assert value(samples, "mailgate_smtp_connections_total") == 2


async def test_a_message_the_store_could_not_keep_is_refused_not_accepted(
    start_gateway: GatewayFactory, db_url: str
) -> None:
    async with start_gateway() as gw, capture_server(gw) as address:
        await asyncio.to_thread(_refuse_inserts, db_url.removeprefix("sqlite:///"))
        client = aiosmtplib.SMTP(hostname=address[0], port=address[1], start_tls=False)
        await client.connect()
        with pytest.raises(aiosmtplib.SMTPDataError) as lost:
            await client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n")
        await client.quit()
        samples = await settled(gw)
    assert lost.value.code == 451
    assert refused(samples, "store_unavailable") == 1
    assert value(samples, MESSAGES, result="accepted", reason="") == 0
    assert value(samples, "mailgate_smtp_received_bytes_total") == 0


def _plain_then_bad_base64(address: Address) -> list[int]:
    """smtplib's own AUTH PLAIN in one session, CRAM-MD5 (what its login() picks first) in
    another; a response that is not base64 in a third, then a mechanism the server does not
    offer (504), which is no attempt of any."""
    with smtplib.SMTP(*address, timeout=10) as client:
        client.ehlo()
        client.user, client.password = "app-user", "p4ss"
        assert client.auth("PLAIN", client.auth_plain)[0] == 235
        assert client.docmd("AUTH", "LOGIN")[0] == 503  # already authenticated: no attempt
    with smtplib.SMTP(*address, timeout=10) as client:
        assert client.login("app-user", "p4ss")[0] == 235
    with smtplib.SMTP(*address, timeout=10) as client:
        client.ehlo()
        return [client.docmd("AUTH", "PLAIN !!!")[0], client.docmd("AUTH", "XOAUTH2")[0]]


async def test_auth_attempts_by_mechanism_and_outcome(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw, capture_server(gw) as address:
        client = aiosmtplib.SMTP(hostname=address[0], port=address[1], start_tls=False)
        await client.connect()
        await client.ehlo()
        await client.auth_login("app-user", "secret")
        await client.quit()
        codes = await asyncio.to_thread(_plain_then_bad_base64, address)
        samples = await settled(gw)

    assert codes == [501, 504]
    attempts = {
        labels: n
        for (name, labels), n in samples.items()
        if name == "mailgate_smtp_auth_attempts_total"
    }
    assert attempts == {
        (("mechanism", "CRAM-MD5"), ("outcome", "success")): 1,
        (("mechanism", "LOGIN"), ("outcome", "success")): 1,
        (("mechanism", "PLAIN"), ("outcome", "success")): 1,
        (("mechanism", "PLAIN"), ("outcome", "failure")): 1,
    }


async def test_the_dev_gateways_own_smtp_server_reports_to_metrics(
    start_gateway: GatewayFactory,
) -> None:
    raw = b"Subject: hi\r\n\r\nhi\r\n"
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        await asyncio.to_thread(_two_messages, gw.smtp_address, raw, raw)
        assert len((await client.get("/inbox")).json()["items"]) == 2
        samples = await settled(gw)
    assert value(samples, "mailgate_smtp_connections_total") == 1
    assert value(samples, MESSAGES, result="accepted", reason="") == 2
    assert value(samples, "mailgate_smtp_received_bytes_total") == 2 * len(raw)
