"""Capture handlers (issue 9): each captured message handed, as its capture event, to a
webhook and to Python functions; CONTINUE keeps the session, CLOSE ends it after the
250, a crash or a time-out answers 451 and keeps nothing, and with every worker busy a
session waits while the others are served."""

from __future__ import annotations

import asyncio
import base64
import os
import smtplib
import socket
import sys
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from mailgate.app import Mode
from mailgate.blockwise import BLOCK
from mailgate.errors import ConfigError
from mailgate.ingest import handlers
from mailgate.ingest import smtp as smtp_capture
from mailgate.ingest.handlers import (
    EVENT_ON_LOOP,
    HandlerFailed,
    HandlerPool,
    HandlerThreads,
    Verdict,
    load_handlers,
)
from tests.http_peer import Receiver, always
from tests.integration import capture_handlers
from tests.integration.conftest import GatewayFactory, api, send_raw, threads_of
from tests.integration.test_metrics_health import scrape, value

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: %d\r\n\r\nbody\r\n"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    capture_handlers.SEEN.clear()
    capture_handlers.GATE.clear()
    yield
    capture_handlers.GATE.clear()


def _send_twice(address: tuple[str, int]) -> list[Any]:
    """Two messages on one session: what the second got (or how the session ended)."""
    outcomes: list[Any] = []
    with smtplib.SMTP(*address, timeout=20) as smtp:
        for n in (1, 2):
            try:
                outcomes.append(smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE % n))
            except smtplib.SMTPServerDisconnected:
                outcomes.append("disconnected")
                break
            except smtplib.SMTPSenderRefused as exc:  # the 221 read as MAIL FROM's reply
                outcomes.append(exc.smtp_code)
                break
            except smtplib.SMTPDataError as exc:
                outcomes.append(exc.smtp_code)
    return outcomes


async def test_continue_keeps_the_session_and_every_handler_gets_the_event(
    start_gateway: GatewayFactory,
) -> None:
    async with Receiver(always(200), body=lambda n, r: "CONTINUE") as hook:
        handlers = [hook.url + "/capture", "tests.integration.capture_handlers:keep"]
        async with start_gateway(Mode.DEV, smtp={"handlers": handlers}) as gw:
            assert gw.smtp_address is not None
            outcomes = await asyncio.to_thread(_send_twice, gw.smtp_address)
            posted = await hook.wait_for(2)
            metrics = await scrape(gw)
    assert outcomes == [{}, {}]
    assert [r.json()["message"]["subject"] for r in posted] == ["1", "2"]
    assert [e["message"]["subject"] for e in capture_handlers.SEEN] == ["1", "2"]
    envelope = posted[0].json()["envelope"]
    assert (envelope["from"], envelope["to"]) == ("a@example.com", ["b@example.com"])
    calls = "mailgate_smtp_handler_calls_total"
    assert value(metrics, calls, kind="webhook", outcome="continue") == 2
    assert value(metrics, calls, kind="python", outcome="continue") == 2


@pytest.mark.parametrize("handler", ["webhook", "tests.integration.capture_handlers:typo"])
async def test_an_answer_that_is_no_verdict_keeps_the_session_and_is_told_once(
    start_gateway: GatewayFactory, handler: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Receiver(always(200), body=lambda n, r: "STOP") as hook:
        url = hook.url + "/capture"
        spec = _with_secrets(url) + "?token=s3cret" if handler == "webhook" else handler
        async with start_gateway(Mode.DEV, smtp={"handlers": [spec]}) as gw, api(gw) as client:
            assert gw.smtp_address is not None
            outcomes = await asyncio.to_thread(_send_twice, gw.smtp_address)
            kept = (await client.get("/inbox")).json()["items"]
    assert outcomes == [{}, {}]  # taken as CONTINUE
    assert sorted(m["subject"] for m in kept) == ["1", "2"]
    told = [r.getMessage() for r in caplog.records if "neither CLOSE nor CONTINUE" in r.message]
    shown = url if handler == "webhook" else handler
    assert len(told) == 1 and shown in told[0] and ("STOP" in told[0] or "42" in told[0])
    assert "s3cret" not in caplog.text


@pytest.mark.parametrize("handler", ["webhook", "tests.integration.capture_handlers:close"])
async def test_close_ends_the_session_after_the_250(
    start_gateway: GatewayFactory, handler: str
) -> None:
    async with Receiver(always(200), body=lambda n, r: "CLOSE") as hook:
        spec = hook.url + "/capture" if handler == "webhook" else handler
        async with start_gateway(Mode.DEV, smtp={"handlers": [spec]}) as gw, api(gw) as client:
            assert gw.smtp_address is not None
            outcomes = await asyncio.to_thread(_send_twice, gw.smtp_address)
            kept = (await client.get("/inbox")).json()["items"]
    assert outcomes == [{}, 221]  # the first was accepted, then 221 and the line closed
    assert [m["subject"] for m in kept] == ["1"]


_BIG_ANSWER = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            head += conn.recv(65536)
        header, _, body = head.partition(b"\\r\\n\\r\\n")
        length = int(header.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
        while len(body) < length:
            body += conn.recv(65536)
        size = 20_000_000
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % size)
        try:
            for _ in range(size // 100_000):
                conn.sendall(b"x" * 100_000)
        except OSError:
            pass  # the client stopped reading: what it should do
"""


async def test_a_webhook_answer_is_read_no_further_than_a_verdict_needs() -> None:
    """An answer past 1 KiB is no CLOSE, however it goes on: CONTINUE, and the rest of it
    (here 20 MB, from a server in another process) is never read into memory."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _BIG_ANSWER, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = int(await server.stdout.readline())
        async with httpx.AsyncClient() as client:
            with ThreadPoolExecutor(1) as threads:
                url = f"http://127.0.0.1:{port}/capture"
                pool = HandlerPool(load_handlers([url], client, threads), workers=1, timeout=30)
                tracemalloc.start()
                try:
                    verdict = await pool.run({"id": "big-answer"})
                    peak = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                    await pool.aclose()
    finally:
        server.kill()
        await server.wait()
    assert verdict is Verdict.CONTINUE
    assert peak < 5_000_000, f"{peak / 1e6:.1f} MB read"


@pytest.mark.parametrize(
    ("handler", "settings"),
    [
        ("tests.integration.capture_handlers:crash", {}),
        ("tests.integration.capture_handlers:exits", {}),
        ("tests.integration.capture_handlers:exits_async", {}),
        ("tests.integration.capture_handlers:slow", {"pool": {"timeout": 0.3}}),
        ("tests.integration.capture_handlers:late", {"pool": {"timeout": 0.3}}),
        ("webhook-500", {}),
    ],
)
async def test_a_failing_handler_answers_451_and_keeps_nothing(
    start_gateway: GatewayFactory,
    handler: str,
    settings: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Receiver(always(500)) as hook:
        spec = (
            _with_secrets(hook.url) + "/capture?token=s3cret"
            if handler == "webhook-500"
            else handler
        )
        smtp = {"handlers": [spec], **settings}
        async with start_gateway(Mode.DEV, smtp=smtp) as gw, api(gw) as client:
            assert gw.smtp_address is not None
            outcomes = await asyncio.to_thread(_send_twice, gw.smtp_address)
            kept = (await client.get("/inbox")).json()["items"]
    assert outcomes == [451, 451]  # and the session goes on
    assert kept == []
    if handler == "webhook-500":  # the URL logged without its credentials or query
        assert f"{hook.url}/capture answered 500" in caplog.text
        assert "s3cret" not in caplog.text


def _with_secrets(url: str) -> str:
    """``url`` with a user and password in it (``http://user:s3cret@host…``)."""
    return url.replace("://", "://user:s3cret@", 1)


async def test_with_every_worker_busy_a_session_waits_and_the_others_are_served(
    start_gateway: GatewayFactory,
) -> None:
    smtp = {"handlers": ["tests.integration.capture_handlers:gated"], "pool": {"num_workers": 1}}
    async with start_gateway(Mode.DEV, smtp=smtp) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        address = gw.smtp_address

        def send(n: int) -> object:
            with smtplib.SMTP(*address, timeout=20) as smtp:
                return smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE % n)

        first = asyncio.create_task(asyncio.to_thread(send, 1))
        async with asyncio.timeout(10):
            while not capture_handlers.SEEN:  # noqa: ASYNC110 (the handler's list)
                await asyncio.sleep(0.02)
        second = asyncio.create_task(asyncio.to_thread(send, 2))

        def noop() -> int:
            with smtplib.SMTP(*address, timeout=5) as smtp:
                return smtp.noop()[0]

        assert await asyncio.to_thread(noop) == 250  # a third session is served meanwhile
        await asyncio.sleep(0.3)
        assert len(capture_handlers.SEEN) == 1 and not second.done()  # waiting for a worker
        capture_handlers.GATE["open"].set()
        assert await first == {} and await second == {}
        kept = (await client.get("/inbox")).json()["items"]
    assert len(capture_handlers.SEEN) == 2 and len(kept) == 2


async def test_a_handler_that_cannot_be_loaded_stops_the_start(
    start_gateway: GatewayFactory,
) -> None:
    for spec in ("no.such.module:f", "tests.integration.capture_handlers:nothing", "ftp://x"):
        with pytest.raises(ConfigError, match=r"smtp\.handlers"):
            async with start_gateway(Mode.DEV, smtp={"handlers": [spec]}):
                pass


@pytest.mark.parametrize("include_raw", [False, True])
async def test_handlers_get_attachment_content_and_raw_only_when_asked(
    start_gateway: GatewayFactory, include_raw: bool
) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "att"
    message.set_content("see attached")
    payload = bytes(range(256)) * 4
    message.add_attachment(payload, maintype="application", subtype="octet-stream",
                           filename="data.bin")  # fmt: skip
    raw = message.as_bytes(policy=policy.SMTP)
    smtp = {"handlers": ["tests.integration.capture_handlers:keep"], "include_raw": include_raw}
    async with start_gateway(Mode.DEV, smtp=smtp) as gw:
        await send_raw(gw, raw)
    [event] = capture_handlers.SEEN
    [attachment] = event["attachments"]
    assert attachment["filename"] == "data.bin" and attachment["size"] == len(payload)
    assert base64.b64decode(attachment["content"]) == payload
    assert event["message"]["raw"] == (raw.decode() if include_raw else None)
    assert "raw_base64" not in event["message"]  # UTF-8 (here ASCII): raw is exact


async def test_a_big_message_s_event_is_made_and_encoded_off_the_event_loop(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10 MiB attachment's base64 and then its JSON held the event loop 91 ms, 50 MiB
    496 ms (``bench/capture_memory.py --webhook``): a big message's event is made and
    encoded in a worker thread, a block at a time, and POSTed in those blocks with its
    Content-Length; a small one's stays on the loop, cheaper than the hand-off."""
    made = threads_of(monkeypatch, smtp_capture, "capture_event")
    encoded = threads_of(monkeypatch, handlers, "json_blocks")
    payload = os.urandom(3 * BLOCK)  # base64: four blocks
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "big"
    message.set_content("see attached")
    message.add_attachment(payload, maintype="application", subtype="octet-stream",
                           filename="big.bin")  # fmt: skip
    big = message.as_bytes(policy=policy.SMTP)
    assert len(big) > EVENT_ON_LOOP >= len(MESSAGE)
    hook = Receiver(always(200), body=lambda n, r: "CONTINUE")
    async with hook, start_gateway(Mode.DEV, smtp={"handlers": [hook.url]}) as gw:
        await send_raw(gw, MESSAGE % 1)
        await send_raw(gw, big)
        small_post, big_post = await hook.wait_for(2)
    assert made == ["loop", "worker"]
    assert encoded == ["worker"]
    [attachment] = big_post.json()["attachments"]
    assert base64.b64decode(attachment["content"]) == payload
    assert small_post.json()["message"]["subject"] == "1"
    for post in (small_post, big_post):
        assert post.headers["content-length"] == str(len(post.body))
        assert post.headers["content-type"] == "application/json"
        assert "transfer-encoding" not in post.headers


async def test_raw_that_is_not_utf8_reaches_handlers_byte_for_byte(
    start_gateway: GatewayFactory,
) -> None:
    """``message.raw`` is text, so a latin-1 body reached handlers as U+FFFD and could
    not be had back; ``message.raw_base64`` now carries such a message exactly."""
    raw = b"From: a@example.com\r\nSubject: 8 bits\r\n\r\ncaf\xe9 \xff\xfe\r\n"
    smtp = {"handlers": ["tests.integration.capture_handlers:keep"], "include_raw": True}
    async with start_gateway(Mode.DEV, smtp=smtp) as gw:
        await send_raw(gw, raw)
    [event] = capture_handlers.SEEN
    assert base64.b64decode(event["message"]["raw_base64"]) == raw
    assert event["message"]["raw"] == raw.decode("utf-8", "replace")


async def test_stuck_sync_handlers_keep_to_their_own_threads() -> None:
    """A sync handler that timed out still holds its thread until it returns; ten of them
    must not take asyncio's default executor (where messages are parsed and the store
    read): it still answers, and the stuck ones hold ``num_workers`` threads, no more."""
    threads = HandlerThreads(2)
    async with httpx.AsyncClient() as client:
        handlers = load_handlers(["tests.integration.capture_handlers:blocked"], client, threads)
    pool = HandlerPool(handlers, workers=2, timeout=0.2)
    try:
        outcomes = await asyncio.gather(
            *(pool.run({"id": str(i)}) for i in range(10)), return_exceptions=True
        )
        assert all(isinstance(o, HandlerFailed) for o in outcomes), outcomes
        async with asyncio.timeout(5):  # the default executor is free
            assert await asyncio.to_thread(lambda: "free") == "free"
        names = set(capture_handlers.BLOCKED_IN)
        assert len(names) == 2 and all(n.startswith("mailgate-handler") for n in names)
    finally:
        capture_handlers.UNBLOCK.set()
        await pool.aclose()
        threads.shutdown(wait=True)
        capture_handlers.UNBLOCK.clear()
        capture_handlers.BLOCKED_IN.clear()


#: What a client can put in text the store cleans: a Subject whose encoded words
#: decode to a NUL and to a lone surrogate (``unicode-escape`` makes one of
#: ``\udcff``), and a raw NUL in another header.
UNCLEAN = (
    b"From: a@example.com\r\nTo: b@example.com\r\n"
    b"Subject: =?utf-8?Q?nul=00subj?= =?unicode-escape?Q?=5Cudcff?=\r\n"
    b"X-Nul: a\x00b\r\n\r\nbody\r\n"
)
#: ... as the store keeps it: each NUL and lone surrogate U+FFFD
CLEAN_SUBJECT = "nul\ufffdsubj\ufffd"


def send_unclean(address: tuple[str, int], message: bytes = UNCLEAN) -> bytes:
    """One session by a raw socket (smtplib sends no byte that is not ASCII): EHLO
    with a byte that is not UTF-8, which the server keeps as a surrogate escape, then
    ``message``; the reply to its DATA."""
    with socket.create_connection(address, timeout=20) as sock, sock.makefile("rb") as replies:

        def say(line: bytes) -> bytes:
            sock.sendall(line)
            while (reply := replies.readline())[3:4] == b"-":
                pass
            return reply

        replies.readline()  # 220
        for line in (b"EHLO \xff.example\r\n", b"MAIL FROM:<a@example.com>\r\n",
                     b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n"):  # fmt: skip
            assert say(line)[:1] in (b"2", b"3"), line
        reply = say(message + b".\r\n")
        say(b"QUIT\r\n")
        return reply


def assert_cleaned(event: dict[str, Any]) -> None:
    """``event`` (a capture event or GET /inbox/{id}) holds the text as the store keeps it."""
    assert event["envelope"]["helo"] == "\ufffd.example"
    headers = event["message"]["headers"]
    assert event["message"]["subject"] == headers["Subject"] == CLEAN_SUBJECT
    assert headers["X-Nul"] == "a\ufffdb"


async def test_handlers_get_the_text_the_store_keeps(start_gateway: GatewayFactory) -> None:
    """The record handed to handlers carried the client's raw strings: ``EHLO \\xff``
    (a lone surrogate) made the webhook's JSON unencodable, so the client got 451 on
    every retry, and a Python handler saw NUL and surrogates where a read from the
    store shows U+FFFD."""
    async with Receiver(always(200), body=lambda n, r: "CONTINUE") as hook:
        handlers = [hook.url + "/capture", "tests.integration.capture_handlers:keep"]
        async with start_gateway(Mode.DEV, smtp={"handlers": handlers}) as gw, api(gw) as client:
            assert gw.smtp_address is not None
            reply = await asyncio.to_thread(send_unclean, gw.smtp_address)
            assert reply.startswith(b"250 "), reply
            [posted] = await hook.wait_for(1)
            [item] = (await client.get("/inbox")).json()["items"]
            read = (await client.get(f"/inbox/{item['id']}")).json()
    [called] = capture_handlers.SEEN
    for event in (posted.json(), called, read):
        assert_cleaned(event)
