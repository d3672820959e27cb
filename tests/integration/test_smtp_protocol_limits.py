"""The SMTP protocol engine under hostile and odd clients (issue 9): a 1 MB command line,
NUL bytes, DATA without end, 10,000 pipelined recipients, a client dribbling a byte at a
time, STARTTLS with commands pipelined behind it. Each gets a clear reply or a close; the
server's buffers stay bounded and other sessions are served meanwhile.

The server is built on a running gateway's inbox, as the gateway builds it in dev mode,
with small limits; its connections are looked at to check what they hold."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mailgate.app import Gateway
from mailgate.ingest.smtp import CaptureHandler, SmtpServer
from mailgate.ingest.smtp_syntax import MAX_COMMAND_LINE
from mailgate.ingest.tls import self_signed, server_context
from tests.integration.conftest import GatewayFactory, api

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def serving(gw: Gateway, **options: Any) -> AsyncIterator[SmtpServer]:
    settings: dict[str, Any] = {"hostname": "mx.test", "max_message_size": 100_000,
                                "timeout": 30} | options  # fmt: skip
    server = SmtpServer(CaptureHandler(gw.inbox, max_recipients=100), **settings)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop(grace=1)


def _address(server: SmtpServer) -> tuple[str, int]:
    assert server._server is not None
    host, port = server._server.sockets[0].getsockname()[:2]
    return host, port


async def _connect(server: SmtpServer, ehlo: bool = True) -> Streams:
    reader, writer = await asyncio.open_connection(*_address(server))
    assert (await reader.readline()).startswith(b"220 mx.test")
    if ehlo:
        writer.write(b"EHLO client.test\r\n")
        await _reply(reader)
    return reader, writer


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One reply, its last line (a multi-line reply's lines have ``-`` after the code)."""
    async with asyncio.timeout(10):
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
    return line


async def test_a_1_mb_command_line_is_refused_without_being_kept(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway() as gw, serving(gw) as server:
        reader, writer = await _connect(server)
        [session] = server.sessions
        writer.write(b"NOOP " + b"x" * 500_000)
        await writer.drain()
        await asyncio.sleep(0.2)
        assert len(session._buf) <= 256 * 1024  # at most a read, never the line
        writer.write(b"x" * 500_000 + b"\r\nNOOP\r\n")
        assert await _reply(reader) == b"500 Command line too long\r\n"
        assert await _reply(reader) == b"250 OK\r\n"  # and the session goes on
        writer.write(b"NOOP " + b"y" * (MAX_COMMAND_LINE - 5) + b"\r\n")  # the longest taken
        assert await _reply(reader) == b"250 OK\r\n"
        writer.close()


async def test_an_auth_answer_too_long_ends_the_exchange(start_gateway: GatewayFactory) -> None:
    """RFC 4954 §4: an answer the server cannot take ends AUTH (500 5.5.6); the lines after
    it are commands again, not the exchange's next answer, and nobody is logged in."""
    async with start_gateway() as gw, serving(gw) as server:
        reader, writer = await _connect(server)
        starts = (b"AUTH LOGIN\r\n", b"AUTH PLAIN\r\n", b"AUTH LOGIN dXNlcg==\r\n")
        for start in starts:
            for length in (MAX_COMMAND_LINE + 100, 300_000):  # past the buffer: dropped as read
                writer.write(start)
                assert (await _reply(reader)).startswith(b"334 ")
                writer.write(b"A" * length + b"\r\nNOOP\r\n")
                assert await _reply(reader) == (
                    b"500 5.5.6 Authentication Exchange line is too long\r\n"
                )
                assert await _reply(reader) == b"250 OK\r\n"
        [session] = server.sessions
        assert not session.session.authenticated
        writer.write(b"QUIT\r\n")
        assert (await _reply(reader)).startswith(b"221 ")
        writer.close()


async def test_the_line_limit_is_the_same_however_the_line_arrives(
    start_gateway: GatewayFactory,
) -> None:
    """``MAX_COMMAND_LINE`` octets before the line end, CRLF or bare LF, in one write or
    with the CR and the LF apart: a command, and an AUTH answer, are taken; one octet
    more is refused."""
    async with start_gateway() as gw, serving(gw) as server:
        reader, writer = await _connect(server)
        longest = b"NOOP " + b"y" * (MAX_COMMAND_LINE - 5)
        for pieces, reply in (
            ([longest + b"\r\n"], b"250 OK\r\n"),
            ([longest + b"\r", b"\n"], b"250 OK\r\n"),
            ([longest + b"\n"], b"250 OK\r\n"),
            ([longest + b"y\r", b"\n"], b"500 Command line too long\r\n"),
            ([longest + b"y\n"], b"500 Command line too long\r\n"),
        ):
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
            assert await _reply(reader) == reply, pieces
        answer = base64.b64encode(b"u" * 1536)  # 2,048 octets
        assert len(answer) == MAX_COMMAND_LINE
        too_long = b"500 5.5.6 Authentication Exchange line is too long\r\n"
        for pieces, reply in (
            ([answer + b"\r", b"\n"], b"334 UGFzc3dvcmQA\r\n"),
            ([answer + b"=\n"], too_long),
            ([answer + b"=\r", b"\n"], too_long),
        ):
            writer.write(b"AUTH LOGIN\r\n")
            assert (await _reply(reader)).startswith(b"334 ")
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
            assert await _reply(reader) == reply, pieces
            if reply.startswith(b"334"):
                writer.write(b"*\r\n")  # cancel at the password
                assert await _reply(reader) == b"501 5.7.0 Auth aborted\r\n"
        writer.close()


async def test_nul_bytes_are_bad_syntax(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw, serving(gw) as server:
        reader, writer = await _connect(server)
        for command in (b"NO\0OP\r\n", b"MAIL FROM:<a\0@example.com>\r\n", b"\0\r\n"):
            writer.write(command)
            assert await _reply(reader) == b"500 Error: bad syntax\r\n"
        writer.write(b"MAIL FROM:<a@example.com>\r\n")
        assert await _reply(reader) == b"250 OK\r\n"
        writer.close()


async def test_data_without_end_is_thrown_away_as_it_comes_then_552(
    start_gateway: GatewayFactory,
) -> None:
    """Past ``max_message_size`` DATA is read and dropped (RFC 5321 §4.2.5: the reply
    comes at its end); 5 MB sent, never more held than the limit and the third a block
    of stuffed dots may add."""
    async with start_gateway() as gw, serving(gw) as server, api(gw) as client:
        reader, writer = await _connect(server)
        [session] = server.sessions
        writer.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert [await _reply(reader) for _ in range(3)][-1].startswith(b"354 ")
        held = 0
        for _ in range(50):
            writer.write((b"z" * 998 + b"\r\n") * 100)
            await writer.drain()
            assert session._data is not None
            held = max(held, sum(map(len, session._data._chunks)))
        assert held <= 133_334  # what came before the stuffed limit, then nothing
        writer.write(b".\r\nNOOP\r\n")
        assert await _reply(reader) == b"552 5.3.4 Too much mail data\r\n"
        assert await _reply(reader) == b"250 OK\r\n"
        assert not session.in_transaction
        writer.close()
        assert (await client.get("/inbox")).json()["items"] == []


async def test_the_size_limit_counts_a_message_without_its_stuffed_dots(
    start_gateway: GatewayFactory,
) -> None:
    """RFC 1870 §3: the size is the message's octets, not the dots that stuffed its lines
    (nor the end's dot): a message of exactly the limit is taken, however many of its
    lines begin with a dot; one octet more is 552."""
    limit = 1000
    async with start_gateway() as gw, serving(gw, max_message_size=limit) as server:
        reader, writer = await _connect(server)
        for dotted in (0, 20, 332):  # 332: every line a dot, 4 octets on the wire for 3
            lines = b".\r\n" * dotted
            exact = lines + b"a" * (limit - len(lines) - 2) + b"\r\n"
            for message, reply in ((exact, b"250 "), (exact + b"b\r\n", b"552 5.3.4")):
                stuffed = _stuffed(message)
                assert len(message) - limit in (0, 3) and len(stuffed) == len(message) + dotted
                writer.write(b"MAIL FROM:<a@example.com> SIZE=%d\r\n" % len(exact))
                writer.write(b"RCPT TO:<b@example.com>\r\nDATA\r\n")
                assert [await _reply(reader) for _ in range(3)][-1].startswith(b"354 ")
                writer.write(stuffed + b".\r\n")
                assert (await _reply(reader)).startswith(reply), (dotted, len(message))
        writer.close()


def _stuffed(message: bytes) -> bytes:
    """RFC 5321 §4.5.2: a dot begins each line that began with one."""
    return (b"." if message[:1] == b"." else b"") + message.replace(b"\r\n.", b"\r\n..")


async def test_a_client_gone_quiet_in_data_hears_421(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw, serving(gw, timeout=0.5) as server:
        reader, writer = await _connect(server)
        writer.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert [await _reply(reader) for _ in range(3)][-1].startswith(b"354 ")
        writer.write(b"Subject: never ends\r\n\r\npart of a line")
        assert await _reply(reader) == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
        assert await reader.read() == b""
        writer.close()


async def test_10000_pipelined_recipients(start_gateway: GatewayFactory) -> None:
    """RFC 2920: one write of 10,000 RCPTs (and DATA); the replies come in order while the
    client reads them as they come: 100 taken, then 452 4.5.3 for each of the rest."""
    recipients = 10_000
    async with start_gateway() as gw, serving(gw) as server, api(gw) as client:
        reader, writer = await _connect(server)
        commands = b"MAIL FROM:<a@example.com>\r\n" + b"".join(
            b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(recipients)
        )
        writer.write(commands + b"DATA\r\n")
        replies = [await _reply(reader) for _ in range(recipients + 2)]
        writer.write(b"Subject: many\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        accepted = await _reply(reader)
        assert await _reply(reader) == b"221 Bye\r\n"
        writer.close()
        [item] = (await client.get("/inbox")).json()["items"]
    assert replies[0] == b"250 OK\r\n"
    assert set(replies[1:101]) == {b"250 2.1.5 OK\r\n"}
    assert set(replies[101:-1]) == {b"452 4.5.3 Too many recipients\r\n"}
    assert replies[-1].startswith(b"354 ") and accepted.startswith(b"250 2.0.0 OK: queued as")
    assert len(item["envelope"]["to"]) == 100


async def test_a_byte_at_a_time_client_neither_blocks_others_nor_stays_for_ever(
    start_gateway: GatewayFactory,
) -> None:
    """A command line has ``read_timeout`` to arrive whole; one byte now and then does not
    keep the connection. Meanwhile another client sends a message."""
    async with start_gateway() as gw, serving(gw, timeout=1.0) as server:
        slow_reader, slow = await _connect(server, ehlo=False)
        reader, writer = await _connect(server)
        started = time.monotonic()

        async def dribble() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"EHLO a.slow.client.test\r\n":
                    slow.write(bytes([byte]))
                    await slow.drain()
                    await asyncio.sleep(0.15)

        dribbling = asyncio.create_task(dribble())
        writer.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        await _reply(reader), await _reply(reader), await _reply(reader)
        writer.write(b"Subject: quick\r\n\r\nhi\r\n.\r\n")
        assert (await _reply(reader)).startswith(b"250 2.0.0")
        assert time.monotonic() - started < 1.0 and not dribbling.done()
        try:
            assert await _reply(slow_reader) == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
            assert 0.9 <= time.monotonic() - started < 3.0  # not the 3.6 s the line needed
        finally:
            dribbling.cancel()
            writer.close()
            slow.close()


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def test_commands_pipelined_after_starttls_are_dropped(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """RFC 3207 §4: what follows STARTTLS in the same write is not run, and the session
    starts again over TLS (EHLO first, no transaction)."""
    cert, key = self_signed(tmp_path / "tls", "mx.test")
    async with start_gateway() as gw, serving(gw, tls_context=server_context(cert, key)) as server:
        reader, writer = await _connect(server)
        writer.write(b"STARTTLS\r\nMAIL FROM:<smuggled@example.com>\r\n")
        assert await _reply(reader) == b"220 Ready to start TLS\r\n"
        await writer.start_tls(_client_context())
        writer.write(b"MAIL FROM:<a@example.com>\r\n")
        assert await _reply(reader) == b"503 Error: send HELO first\r\n"
        writer.write(b"EHLO client.test\r\n")
        ehlo = await _reply(reader)
        writer.write(b"STARTTLS\r\nMAIL FROM:<a@example.com>\r\n")
        refused, mail = await _reply(reader), await _reply(reader)
        writer.close()
    assert ehlo == b"250 HELP\r\n"
    assert refused == b"554 5.5.1 Error: TLS already active\r\n"
    assert mail == b"250 OK\r\n"  # not 503 nested MAIL: the smuggled one never ran


async def test_clear_text_after_starttls_ends_the_connection(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path / "tls", "mx.test")
    async with start_gateway() as gw, serving(gw, tls_context=server_context(cert, key)) as server:
        reader, writer = await _connect(server)
        writer.write(b"STARTTLS\r\n")
        assert await _reply(reader) == b"220 Ready to start TLS\r\n"
        writer.write(b"MAIL FROM:<not-tls@example.com>\r\n" * 10)
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # no reply: the TLS handshake failed
        writer.close()
        other_reader, other = await _connect(server)  # and the server goes on
        other.write(b"NOOP\r\n")
        assert await _reply(other_reader) == b"250 OK\r\n"
        other.close()
