"""In-process gateways on free ports, each with its own SQLite file and settings."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import threading
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from mailgate.app import Gateway, Mode
from mailgate.settings import Settings
from mailgate.store import Database

GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]


def fast_settings(db_url: str, **overrides: Any) -> Settings:
    """Loopback on port 0, and retry delays short enough for a test."""
    values: dict[str, Any] = {
        "db_url": db_url,
        "http": {"host": "127.0.0.1", "port": 0},
        "smtp": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1.0},
        "retry": {"initial_delay": 0.2, "multiplier": 1.0, "jitter": 0.0},
        "delivery": {"poll_interval": 0.1, "smtp_timeout": 5.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(**values)


@pytest.fixture
def start_gateway(db_url: str) -> GatewayFactory:
    @contextlib.asynccontextmanager
    async def start(mode: Mode = Mode.SERVE, **overrides: Any) -> AsyncIterator[Gateway]:
        async with Gateway(fast_settings(db_url, **overrides), mode=mode) as gateway:
            yield gateway

    return start


async def drop_table(db_url: str, name: str) -> None:
    """Drop the table ``name`` from the store at ``db_url``, under whatever runs on it (a
    store that cannot be read: what answers then)."""
    db = Database(db_url)
    try:
        async with db.write() as conn:
            await conn.execute(text(f'DROP TABLE "{name}"'))
    finally:
        await db.aclose()


async def engine_url(request: pytest.FixtureRequest, db_url: str, name: str) -> str:
    """For a fixture parametrised ``sqlite``/``postgresql``: ``db_url`` (a SQLite file),
    or the new PostgreSQL database ``name`` on the session's cluster."""
    if request.param == "sqlite":
        return db_url
    postgres_url: str = request.getfixturevalue("postgres_url")
    return await fresh_postgres_database(postgres_url, name)


async def fresh_postgres_database(postgres_url: str, name: str) -> str:
    """The URL of a new, empty database ``name`` on the session's PostgreSQL cluster (a
    test's own: dropped first if a run before left it)."""
    import asyncpg

    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def threads_of(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[str]:
    """Where each call of ``module.name`` runs from now on: "loop" or "worker"."""
    calls: list[str] = []
    real = getattr(module, name)

    def watched(*args: Any, **kwargs: Any) -> Any:
        on_loop = threading.current_thread() is threading.main_thread()
        calls.append("loop" if on_loop else "worker")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, watched)
    return calls


async def send_raw(gw: Gateway, raw: bytes) -> None:
    """Send ``raw`` as it is with smtplib, from a@example.com to b@example.com; all taken."""
    assert gw.smtp_address is not None
    address = gw.smtp_address

    def send() -> object:
        with smtplib.SMTP(*address, timeout=20) as client:
            return client.sendmail("a@example.com", ["b@example.com"], raw)

    assert await asyncio.to_thread(send) == {}


@contextlib.asynccontextmanager
async def api(gateway: Gateway, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(
        base_url=f"{gateway.http_url}/api/v1", headers=headers, timeout=30
    ) as client:
        yield client


async def wait_for_message(
    client: httpx.AsyncClient,
    message_id: str,
    done: Callable[[dict[str, Any]], bool],
    limit: float = 10.0,
) -> dict[str, Any]:
    """Poll GET /messages/{id} until ``done`` says so."""
    async with asyncio.timeout(limit):
        while True:
            body: dict[str, Any] = (await client.get(f"/messages/{message_id}")).json()
            if done(body):
                return body
            await asyncio.sleep(0.05)


async def wait_for_state(
    client: httpx.AsyncClient, message_id: str, *states: str, limit: float = 10.0
) -> dict[str, Any]:
    """Poll GET /messages/{id} until its state is one of ``states``."""
    return await wait_for_message(client, message_id, lambda b: b["state"] in states, limit)


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each SSE frame; comments and retry lines are skipped."""
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line == "" and data:
            yield name, data
            name, data = "message", ""


async def capture_peaks(
    start_gateway: GatewayFactory,
    temp_dir: Path,
    raw: bytes,
    send: Callable[[Gateway], Awaitable[None]],
) -> dict[str, int]:
    """The gateway's peak Python allocations while ``send`` (a client in another process,
    whose copy is not counted) delivers ``raw``, in ``tempfile`` and in ``memory`` mode;
    each time the message must have been kept byte for byte."""
    peaks = {}
    for mode in ("tempfile", "memory"):
        storage = {"mode": mode, "temp_dir": str(temp_dir)}
        smtp = {"attachment_storage": storage}
        async with start_gateway(Mode.DEV, smtp=smtp) as gw, api(gw) as client:
            tracemalloc.start()
            try:
                await send(gw)
                peaks[mode] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            [summary] = (await client.get("/inbox")).json()["items"]
            assert (await client.get(f"/inbox/{summary['id']}/raw")).content == raw
            await client.delete("/inbox")
    return peaks
