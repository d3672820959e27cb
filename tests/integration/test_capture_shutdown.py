"""Graceful shutdown of the capture server with handlers running (issue 9): a message
whose handler runs when shutdown begins gets its verdict and its 250 within
``smtp.shutdown_grace`` and is kept; past the grace the handler is cancelled, its client
hears 421 and the message is not kept (the client sends it again); idle sessions hear
421 at once; and once the gateway has stopped no handler runs."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Iterator
from typing import Any

import pytest

from mailgate.app import Gateway, Mode
from mailgate.ingest.handlers import HandlerFailed, HandlerPool, Verdict
from tests.integration import capture_handlers
from tests.integration.conftest import GatewayFactory, api

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: during shutdown\r\n\r\nbody\r\n"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    capture_handlers.SEEN.clear()
    capture_handlers.CANCELLED.clear()
    capture_handlers.GATE.clear()
    yield
    capture_handlers.GATE.clear()


def _send(address: tuple[str, int]) -> tuple[int, int | None]:
    """One message; the reply to its DATA and the next thing the server says (None: it
    closed the connection without a word)."""
    with smtplib.SMTP(*address, timeout=20) as smtp:
        smtp.ehlo()
        smtp.mail("a@example.com")
        smtp.rcpt("b@example.com")
        code, _ = smtp.data(MESSAGE)
        try:
            after, _ = smtp.getreply()
        except smtplib.SMTPServerDisconnected:
            return code, None
        smtp.close()  # no QUIT: the server has hung up
        return code, after


async def _until_handed_over() -> None:
    async with asyncio.timeout(10):
        while not capture_handlers.SEEN:  # noqa: ASYNC110 (the handler's list)
            await asyncio.sleep(0.02)


async def _idle_session(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert gw.smtp_address is not None
    reader, writer = await asyncio.open_connection(*gw.smtp_address)
    assert (await reader.readline()).startswith(b"220 ")
    return reader, writer


async def _kept(start_gateway: GatewayFactory) -> list[str]:
    """The inbox's subjects, read by a gateway started again on the same database."""
    async with start_gateway(Mode.DEV) as again, api(again) as client:
        return [m["subject"] for m in (await client.get("/inbox")).json()["items"]]


async def test_a_running_handler_finishes_and_its_client_hears_250(
    start_gateway: GatewayFactory,
) -> None:
    smtp = {"handlers": ["tests.integration.capture_handlers:gated"], "shutdown_grace": 10}
    async with start_gateway(Mode.DEV, smtp=smtp) as gw:
        assert gw.smtp_address is not None
        idle, idle_writer = await _idle_session(gw)
        sending = asyncio.create_task(asyncio.to_thread(_send, gw.smtp_address))
        await _until_handed_over()

        async def told_to_go() -> bytes:
            line = await idle.readline()  # shutdown has begun: only now may the handler end
            capture_handlers.GATE["open"].set()
            return line

        idle_heard = asyncio.create_task(told_to_go())
    # leaving the block stopped the gateway while the handler was waiting at its gate
    assert await idle_heard == b"421 4.3.2 Service shutting down\r\n"
    assert await sending == (250, 421)  # the handler's verdict, then the goodbye
    idle_writer.close()
    assert await _kept(start_gateway) == ["during shutdown"]


async def test_past_the_grace_the_handler_is_cancelled_and_nothing_kept(
    start_gateway: GatewayFactory,
) -> None:
    smtp = {"handlers": ["tests.integration.capture_handlers:stuck"], "shutdown_grace": 0.3}
    loop = asyncio.get_running_loop()
    async with start_gateway(Mode.DEV, smtp=smtp) as gw:
        assert gw.smtp_address is not None
        sending = asyncio.create_task(asyncio.to_thread(_send, gw.smtp_address))
        await _until_handed_over()
        stopping = loop.time()
    assert loop.time() - stopping < 5  # the grace, not the handler's 60 s
    [event] = capture_handlers.SEEN
    [cancelled] = capture_handlers.CANCELLED  # the handler ended before the gateway did
    assert cancelled == event["id"]
    assert await sending == (421, None)  # and the server hung up
    assert await _kept(start_gateway) == []  # not accepted: the client's retry is no duplicate


async def test_a_closed_pool_cancels_what_runs_and_takes_nothing_more() -> None:
    started = asyncio.Event()

    async def forever(event: dict[str, Any]) -> Verdict:
        started.set()
        await asyncio.sleep(60)
        return Verdict.CONTINUE

    pool = HandlerPool([("python", forever)], workers=2, timeout=60)
    running = asyncio.create_task(pool.run({"id": "m1"}))
    await started.wait()
    await pool.aclose()
    assert running.done()
    with pytest.raises(HandlerFailed, match="shut"):
        await pool.run({"id": "m2"})
    with pytest.raises(asyncio.CancelledError):
        await running
