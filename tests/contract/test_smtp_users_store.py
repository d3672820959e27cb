"""SMTP submission users (issue 9) on SQLite and a real PostgreSQL: hashes only at rest,
usernames unique across tenants (also when two processes add one at once), tenants
kept apart, and raw submitted messages queued and leased back byte for byte."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from mailgate.errors import Conflict, NotFound
from mailgate.model import Message
from mailgate.services.smtp_users import SmtpUserIn, SmtpUserPatch, SmtpUsersService
from mailgate.store import Database, QueueStore
from mailgate.store.schema import smtp_users
from mailgate.store.smtp_users import SmtpUserStore

PASSWORD = "submission-Pa55-91x"


class StepClock:
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


def spec(username: str = "app", **fields: object) -> SmtpUserIn:
    return SmtpUserIn.model_validate(
        {"username": username, "password": SecretStr(PASSWORD), **fields}
    )


async def test_a_user_is_kept_with_a_hash_and_found_by_its_password(database: Database) -> None:
    users = SmtpUsersService(SmtpUserStore(database), StepClock())
    made = await users.create("t1", spec(senders=["App@Example.com", "@Example.org"]))
    assert made.senders == ("app@example.com", "@example.org")
    async with database.read() as conn:
        stored = (await conn.execute(select(smtp_users.c.password_hash))).scalar_one()
    assert PASSWORD not in stored and stored.startswith("scrypt$")
    assert await users.authenticate("app", PASSWORD) == made
    assert await users.authenticate("app", PASSWORD + "x") is None
    assert await users.authenticate("nobody", PASSWORD) is None


async def test_usernames_are_unique_across_tenants_and_tenants_apart(database: Database) -> None:
    users = SmtpUsersService(SmtpUserStore(database), StepClock())
    await users.create("t1", spec())
    with pytest.raises(Conflict, match="taken"):
        await users.create("t2", spec())
    await users.create("t2", spec("other"))
    assert [u.username for u in await users.list("t1")] == ["app"]
    with pytest.raises(NotFound):
        await users.get("t2", "app")
    with pytest.raises(NotFound):
        await users.delete("t2", "app")
    with pytest.raises(NotFound):
        await users.update("t2", "app", SmtpUserPatch(account="x"))


async def test_a_new_password_replaces_the_old_at_once(database: Database) -> None:
    users = SmtpUsersService(SmtpUserStore(database), StepClock())
    await users.create("t1", spec())
    assert await users.authenticate("app", PASSWORD) is not None  # now remembered
    patch = SmtpUserPatch(password=SecretStr("another-Pa55"), account="billing")
    changed = await users.update("t1", "app", patch)
    assert changed.account == "billing"
    assert await users.authenticate("app", PASSWORD) is None
    assert await users.authenticate("app", "another-Pa55") == changed
    await users.delete("t1", "app")
    assert await users.authenticate("app", "another-Pa55") is None


async def test_two_processes_adding_one_username_give_one_user_and_one_conflict(
    store_url: str, database: Database
) -> None:
    other = Database(store_url)  # a second engine: another process's connections
    try:
        first = SmtpUsersService(SmtpUserStore(database), StepClock())
        second = SmtpUsersService(SmtpUserStore(other), StepClock())
        results = await asyncio.gather(
            first.create("t1", spec()), second.create("t2", spec()), return_exceptions=True
        )
    finally:
        await other.aclose()
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "SmtpUser"]


async def test_a_raw_message_and_its_return_path_come_back_as_queued(database: Database) -> None:
    queue = QueueStore(database)
    raw = b"Received: from x\r\nFrom: a@example.com\r\n\r\n\x00binary\xff\r\n..dot\r\n"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    message = Message(
        id="0190d6a8-0000-7000-8000-000000000001",
        sender="a@example.com",
        to=("b@example.org",),
        subject="s",
        message_id="<m@example.com>",
        created_at=now,
        source="smtp",
        raw=raw,
        return_path="bounces@example.com",
    )
    await queue.enqueue([message], now)
    [job] = await queue.lease("owner", now=now + timedelta(seconds=1), limit=10, lease_for=30)
    assert job.message.raw == raw
    assert job.message.return_path == "bounces@example.com"
    assert job.pending == ("b@example.org",)
