"""Several real OS processes on one database (issue 5, item 11), on SQLite and PostgreSQL.

Every round gets a fresh database: on PostgreSQL a new one created in the
session's cluster, on SQLite a new file.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text

from mailgate.store import Database
from mailgate.store.auth_failures import AuthFailureStore
from mailgate.store.database import alembic_config
from mailgate.store.schema import messages

ROUNDS = 3

# The scripts connect first, then wait for the go-file so the processes race for real
# (Python's start-up alone would otherwise keep them a second apart).
STARTED = """
async def started(url, ready, go):
    db = Database(url)
    async with db.read() as conn:
        await conn.execute(text("SELECT 1"))
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.002)
    return db
"""

MIGRATE = (
    """
import asyncio, os, sys, time
from sqlalchemy import text
from mailgate.store import Database
"""
    + STARTED
    + """
async def main():
    url, ready, go = sys.argv[1:4]
    db = await started(url, ready, go)
    try:
        await db.migrate()
    finally:
        await db.aclose()

asyncio.run(main())
"""
)

ENQUEUE = (
    """
import asyncio, json, os, sys, time
from datetime import UTC, datetime
from sqlalchemy import text
from mailgate.ids import new_id
from mailgate.model import Message
from mailgate.store import Database, QueueStore
"""
    + STARTED
    + """
async def main():
    url, ready, go, keys = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    db = await started(url, ready, go)
    queue, now, results = QueueStore(db), datetime.now(UTC), []
    for i in range(keys):
        message = Message(
            id=new_id(), sender="app@example.com", to=("a@example.com",), subject="s",
            text="t", message_id=f"<{new_id()}@example.com>", created_at=now, key=f"k{i}",
        )
        [done] = await queue.enqueue([message], now)
        results.append([done.id, done.duplicate])
    await db.aclose()
    print(json.dumps(results))

asyncio.run(main())
"""
)

# Each process counts ``failures`` failed AUTHs of one address against a limit of twice
# that (alone, it stays under it), then waits for the other to be done, and asks
# whether a password may be checked.
AUTH_FAILURES = (
    """
import asyncio, json, os, sys, time
from sqlalchemy import text
from mailgate.clock import SystemClock
from mailgate.ingest.auth_throttle import SharedAuthThrottle
from mailgate.store import Database
from mailgate.store.auth_failures import AuthFailureStore
"""
    + STARTED
    + """
async def main():
    url, ready, go, failures, both = sys.argv[1:6]
    db = await started(url, ready, go)
    throttle = SharedAuthThrottle(AuthFailureStore(db), SystemClock(), 2 * int(failures), 300.0)
    for _ in range(int(failures)):
        await throttle.failed("192.0.2.9")
    open(ready + ".done", "w").close()
    while not all(os.path.exists(done) for done in both.split(",")):
        time.sleep(0.002)
    admitted = await throttle.admit("192.0.2.9")
    await db.aclose()
    print(json.dumps(admitted))

asyncio.run(main())
"""
)

#: makes a fresh, empty database and returns its URL
Fresh = Callable[[], Awaitable[str]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Fresh]:
    """A factory of fresh, empty databases of the parametrised engine."""
    created: list[str] = []
    admin_url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""

    async def fresh() -> str:
        name = f"mg_{secrets.token_hex(6)}"
        if not admin_url:
            return f"sqlite:///{tmp_path / name}.sqlite3"
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        created.append(name)
        return admin_url.rsplit("/", 1)[0] + f"/{name}"

    yield fresh
    if created:
        admin = await asyncpg.connect(admin_url)
        try:
            for name in created:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return out


def _race(script: str, url: str, workdir: Path, *args: str) -> list[str]:
    """Run ``script`` in two processes released at the same moment; their outputs."""
    workdir.mkdir(exist_ok=True)
    go, ready = workdir / "go", [workdir / f"ready{i}" for i in range(2)]
    procs = [_spawn(script, url, str(r), str(go), *args) for r in ready]
    try:
        _wait_for(ready)
        go.touch()
        return [_finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _wait_for(paths: list[Path]) -> None:
    deadline = time.monotonic() + 60
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, "the child processes never got ready"
        time.sleep(0.01)


async def _revision(url: str) -> str | None:
    db = Database(url)
    try:
        async with db.read() as conn:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    finally:
        await db.aclose()


async def test_two_processes_migrating_a_fresh_database_at_once(
    fresh_url: Fresh, tmp_path: Path
) -> None:
    """Item 11b: without the advisory lock the loser died of ``UniqueViolation``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    for round_ in range(ROUNDS):
        url = await fresh_url()
        await asyncio.to_thread(_race, MIGRATE, url, tmp_path / str(round_))
        assert await _revision(url) == head


async def test_two_processes_enqueueing_the_same_keys_get_one_message_each(
    fresh_url: Fresh, tmp_path: Path
) -> None:
    """Item 11a across real processes: same id for both, exactly one not a duplicate."""
    keys = 30
    url = await fresh_url()
    db = Database(url)
    try:
        await db.migrate()
        outputs = await asyncio.to_thread(_race, ENQUEUE, url, tmp_path, str(keys))
        async with db.read() as conn:
            rows = (await conn.execute(select(func.count()).select_from(messages))).scalar()
    finally:
        await db.aclose()
    first, second = [json.loads(out) for out in outputs]
    assert rows == keys
    for (id_a, dup_a), (id_b, dup_b) in zip(first, second, strict=True):
        assert id_a == id_b and sorted([dup_a, dup_b]) == [False, True]


async def test_two_processes_failing_auth_share_one_limit(fresh_url: Fresh, tmp_path: Path) -> None:
    """Each process's failed AUTHs were kept in its own memory: two processes with 10
    failures each, against a limit of 20, each still checked passwords. Now every
    failure is a row in the store, none lost to the race, and both refuse."""
    failures = 10
    url = await fresh_url()
    db = Database(url)
    try:
        await db.migrate()
        done = ",".join(str(tmp_path / f"ready{i}.done") for i in range(2))
        outputs = await asyncio.to_thread(_race, AUTH_FAILURES, url, tmp_path, str(failures), done)
        counted = await AuthFailureStore(db).count()
    finally:
        await db.aclose()
    assert [json.loads(out) for out in outputs] == [False, False]
    assert counted == 2 * failures
