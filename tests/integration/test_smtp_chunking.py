"""RFC 3030 CHUNKING (issue 9): BDAT over a real socket. smtplib has no BDAT, so the
commands are written raw with asyncio streams and every reply is read and checked."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailgate.app import Gateway, Mode
from tests.integration.conftest import GatewayFactory, api
from tests.peers import Upstream

PASSWORD = "app-password-1"

#: dot-led lines and a lone "." line (no stuffing in BDAT), 8-bit octets, a CR and LF
#: that chunk boundaries will fall between
MESSAGE = (
    b"From: App <app@example.com>\r\nTo: b@example.com\r\nSubject: chunked\r\n"
    b"Message-ID: <c1@example.com>\r\n\r\n"
    b".a line starting with a dot\r\n.\r\n..two dots\r\n\xc3\xa9t\xc3\xa9 \xff\x00 raw\r\n"
    + b"x" * 5000
    + b"\r\nthe end\r\n"
)


class Client:
    """One SMTP session over a socket: write raw octets, read replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> bytes:
        """One reply, its last line (a multi-line reply's lines have ``-`` after the code)."""
        async with asyncio.timeout(10):
            line = await self.reader.readline()
            while line[3:4] == b"-":
                line = await self.reader.readline()
        return line

    async def replies(self, count: int) -> list[bytes]:
        return [await self.reply() for _ in range(count)]

    async def ehlo(self) -> list[bytes]:
        await self.send(b"EHLO client.test\r\n")
        lines = [await self.reader.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(await self.reader.readline())
        return lines


@contextlib.asynccontextmanager
async def session(gw: Gateway, *, ehlo: bool = True) -> AsyncIterator[Client]:
    assert gw.smtp_address is not None
    reader, writer = await asyncio.open_connection(*gw.smtp_address)
    client = Client(reader, writer)
    assert (await client.reply()).startswith(b"220 ")
    if ehlo:
        await client.ehlo()
    try:
        yield client
    finally:
        writer.close()


TRANSACTION = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"


async def _only_raw(gw: Gateway) -> tuple[dict[str, Any], bytes]:
    async with api(gw) as client:
        [item] = (await client.get("/inbox")).json()["items"]
        event = (await client.get(f"/inbox/{item['id']}")).json()
        raw = (await client.get(f"/inbox/{item['id']}/raw")).content
    return event, raw


async def test_ehlo_offers_chunking_and_not_binarymime(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, session(gw, ehlo=False) as client:
        features = [line[4:].strip() for line in await client.ehlo()]
        assert b"CHUNKING" in features and b"BINARYMIME" not in features


async def test_a_message_in_chunks_split_across_reads_is_captured_byte_identical(
    start_gateway: GatewayFactory,
) -> None:
    cuts = [0, 31, 32, 80, 81, 1000, len(MESSAGE)]  # between CR and LF, mid-line, ...
    chunks = [MESSAGE[a:b] for a, b in itertools.pairwise(cuts)]
    async with start_gateway(Mode.DEV) as gw, session(gw) as client:
        await client.send(TRANSACTION)
        assert [r[:3] for r in await client.replies(2)] == [b"250", b"250"]
        for number, chunk in enumerate(chunks):
            last = b" LAST" if number == len(chunks) - 1 else b""
            await client.send(b"BDAT %d%s\r\n" % (len(chunk), last) + chunk[:7])
            await asyncio.sleep(0.02)  # the rest of the chunk comes in later reads
            await client.send(chunk[7:20])
            await asyncio.sleep(0.02)
            await client.send(chunk[20:])
            expected = b"250 2.0.0 " if last else b"250 2.0.0 %d octets received\r\n" % len(chunk)
            assert (await client.reply()).startswith(expected)
        event, raw = await _only_raw(gw)
    assert raw == MESSAGE
    assert event["message"]["subject"] == "chunked"
    assert event["message"]["problems"] == []  # no violation, no bare line ending


async def test_pipelined_chunks_and_the_commands_after_them(start_gateway: GatewayFactory) -> None:
    """RFC 3030 §4.2: the whole transaction in one write; the replies come in order."""
    first, second = MESSAGE[:100], MESSAGE[100:]
    async with start_gateway(Mode.DEV) as gw, session(gw) as client:
        await client.send(
            TRANSACTION
            + b"BDAT 100\r\n" + first
            + b"BDAT %d LAST\r\n" % len(second) + second
            + b"NOOP\r\n"
        )  # fmt: skip
        replies = await client.replies(5)
        assert replies[:3] == [b"250 OK\r\n", b"250 2.1.5 OK\r\n",
                               b"250 2.0.0 100 octets received\r\n"]  # fmt: skip
        assert replies[3].startswith(b"250 2.0.0 OK") and replies[4] == b"250 OK\r\n"
        _, raw = await _only_raw(gw)
    assert raw == MESSAGE


async def test_a_client_that_half_closes_after_its_last_command_hears_every_reply(
    start_gateway: GatewayFactory,
) -> None:
    """A client may pipeline its whole transaction, QUIT included (RFC 3030 §4.2), and
    shut down its side of the connection (TCP half-close: ``nc -N``, ``socat``): every
    command it sent is still answered, the message's 250 with it, or a client told
    nothing sends again a message that was kept (a duplicate). Then the server closes."""
    async with start_gateway(Mode.DEV) as gw, session(gw) as client:
        await client.send(TRANSACTION + b"BDAT %d LAST\r\n" % len(MESSAGE) + MESSAGE + b"QUIT\r\n")
        client.writer.write_eof()
        replies = await client.replies(4)
        assert await client.reader.read() == b""  # and the server closes
        _, raw = await _only_raw(gw)
    assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"221"], replies
    assert replies[2].startswith(b"250 2.0.0 OK: queued as ")
    assert raw == MESSAGE


async def test_bdat_0_last_ends_the_message(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, session(gw) as client:
        await client.send(TRANSACTION + b"BDAT %d\r\n" % len(MESSAGE) + MESSAGE)
        assert (await client.replies(3))[-1] == b"250 2.0.0 %d octets received\r\n" % len(MESSAGE)
        await client.send(b"BDAT 0 LAST\r\n")
        assert (await client.reply()).startswith(b"250 2.0.0 OK")
        _, raw = await _only_raw(gw)
    assert raw == MESSAGE


async def test_chunks_past_the_size_limit_are_read_and_refused_552_at_last(
    start_gateway: GatewayFactory,
) -> None:
    async with (
        start_gateway(Mode.DEV, smtp={"max_message_size": 2000}) as gw,
        session(gw) as client,
        api(gw) as http,
    ):
        await client.send(TRANSACTION + b"BDAT 1500\r\n" + b"a" * 1500)
        assert (await client.replies(3))[-1] == b"250 2.0.0 1500 octets received\r\n"
        await client.send(b"BDAT 1500\r\n" + b"NOOP\r\n" * 250)  # octets, not commands
        assert await client.reply() == b"250 2.0.0 1500 octets received\r\n"
        await client.send(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
        assert await client.reply() == b"552 5.3.4 Too much mail data\r\n"
        assert await client.reply() == b"250 OK\r\n"  # the NOOP: still in step
        await client.send(b"BDAT 3 LAST\r\nabc")  # the transaction was reset
        assert (await client.reply()).startswith(b"503 ")
        assert (await http.get("/inbox")).json()["items"] == []


async def test_bdat_out_of_order_is_503_and_its_octets_are_still_read(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, session(gw) as client:
        await client.send(b"BDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n")  # 12 octets, then NOOP
        assert await client.reply() == b"503 5.5.1 Error: need MAIL command\r\n"
        assert await client.reply() == b"250 OK\r\n"
        await client.send(b"MAIL FROM:<a@example.com>\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")
        assert await client.replies(3) == [b"250 OK\r\n",
                                           b"503 5.5.1 Error: need RCPT command\r\n",
                                           b"250 OK\r\n"]  # fmt: skip
        # DATA after BDAT in one transaction (RFC 3030 §3)
        await client.send(b"RCPT TO:<b@example.com>\r\nBDAT 4\r\nabc\nDATA\r\n")
        replies = await client.replies(3)
        assert [r[:3] for r in replies] == [b"250", b"250", b"503"], replies
        # RSET throws the chunks away: the next message is only what follows
        await client.send(b"RSET\r\n" + TRANSACTION + b"BDAT %d LAST\r\n" % len(MESSAGE))
        await client.send(MESSAGE)
        assert [r[:3] for r in await client.replies(4)] == [b"250"] * 4
        _, raw = await _only_raw(gw)
    assert raw == MESSAGE


@pytest.mark.parametrize(
    "command",
    [b"BDAT", b"BDAT x", b"BDAT -1", b"BDAT 1x LAST", b"BDAT 5 NOTLAST", b"BDAT 5 LAST x"],
)
async def test_a_malformed_bdat_is_501_and_the_connection_closed(
    start_gateway: GatewayFactory, command: bytes
) -> None:
    """RFC 3030 §2: without the size, the octets that follow cannot be skipped."""
    async with start_gateway(Mode.DEV) as gw, session(gw) as client:
        await client.send(TRANSACTION + command + b"\r\nNOOP\r\n")
        assert (await client.replies(3))[-1] == b"501 5.5.4 Syntax: BDAT <size> [LAST]\r\n"
        async with asyncio.timeout(5):
            assert await client.reader.read() == b""  # closed, the NOOP never answered


async def test_capture_flags_bare_line_endings_in_chunks(start_gateway: GatewayFactory) -> None:
    smuggled = MESSAGE + b"line\n.\nMAIL FROM:<evil@example.com>\r\n"
    async with start_gateway(Mode.DEV) as gw, session(gw) as client:
        await client.send(TRANSACTION + b"BDAT %d LAST\r\n" % len(smuggled) + smuggled)
        assert (await client.replies(3))[-1].startswith(b"250 2.0.0 OK")
        event, raw = await _only_raw(gw)
    assert raw == smuggled
    assert [p[:18] for p in event["message"]["problems"]] == ["DATA has 2 bare LF"]


@pytest.fixture
async def submission(start_gateway: GatewayFactory, upstream: Upstream) -> AsyncIterator[Gateway]:
    async with start_gateway(relay_url=upstream.url, smtp={"mode": "submission"}) as gw:
        async with api(gw) as client:
            user = {"username": "app", "password": PASSWORD, "senders": ["@example.com"]}
            assert (await client.post("/smtp-users", json=user)).status_code == 201
        yield gw


async def test_submission_refuses_bare_lf_in_chunks_and_takes_clean_ones(
    submission: Gateway, upstream: Upstream
) -> None:
    plain = base64.b64encode(f"\0app\0{PASSWORD}".encode())
    smuggled = MESSAGE[:200] + b"\n.\nMAIL FROM:<app@example.com>\r\n" + MESSAGE[200:]
    async with session(submission) as client:
        await client.send(b"AUTH PLAIN " + plain + b"\r\n")
        assert (await client.reply()).startswith(b"235 ")
        await client.send(TRANSACTION + b"BDAT 100\r\n" + smuggled[:100])
        await client.send(b"BDAT %d LAST\r\n" % (len(smuggled) - 100) + smuggled[100:])
        replies = await client.replies(4)
        assert replies[-1].startswith(b"550 5.5.2 "), replies
        clean = MESSAGE.replace(b"\x00", b"")  # submission takes text: no NUL (RFC 6152)
        await client.send(TRANSACTION + b"BDAT %d LAST\r\n" % len(clean) + clean)
        replies = await client.replies(3)
        assert [r[:3] for r in replies] == [b"250"] * 3, replies
        async with api(submission) as http:
            [queued] = (await http.get("/messages")).json()["items"]
        assert queued["subject"] == "chunked"


async def test_submission_answers_a_half_closed_pipeline_and_closes_at_data_with_no_end(
    submission: Gateway,
) -> None:
    """MAIL waits on the store (a task), so what was pipelined after it is still in the
    buffer when the client shuts its side down: it is answered all the same. A DATA the
    client can no longer end closes the connection then, not a read time-out later."""
    plain = base64.b64encode(f"\0app\0{PASSWORD}".encode())
    clean = MESSAGE.replace(b"\x00", b"")  # submission takes text: no NUL (RFC 6152)
    async with session(submission) as client:
        await client.send(b"AUTH PLAIN " + plain + b"\r\n")
        assert (await client.reply()).startswith(b"235 ")
        await client.send(TRANSACTION + b"BDAT %d LAST\r\n" % len(clean) + clean
                          + TRANSACTION + b"DATA\r\n")  # fmt: skip
        client.writer.write_eof()
        replies = await client.replies(6)
        async with asyncio.timeout(5):
            assert await client.reader.read() == b""
    assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"250", b"250", b"354"], replies
    async with api(submission) as http:
        [queued] = (await http.get("/messages")).json()["items"]
    assert replies[2].decode().split()[-1] == queued["id"]
