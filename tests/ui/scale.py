"""The admin UI's pages with 100,000 rows in the store: filling it fast, timing a page."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Table, insert

from mailgate.store import Database

TOTAL = 100_000
BATCH = 10_000

#: one row of ``n`` (0 the oldest) written ``now``
Row = Callable[[int, datetime], dict[str, Any]]


def fill(db_url: str, table: Table, row: Row, total: int = TOTAL) -> None:
    """Migrate the store and write ``total`` rows of ``table``, ``BATCH`` per insert. In
    a thread of its own: Playwright's loop may be marked running in this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _fill(db_url, table, row, total)).result()


async def _fill(db_url: str, table: Table, row: Row, total: int) -> None:
    db = Database(db_url)
    await db.migrate()
    now = datetime.now(UTC)
    try:
        async with db.write() as conn:
            for start in range(0, total, BATCH):
                rows = [row(start + i, now) for i in range(min(BATCH, total - start))]
                await conn.execute(insert(table), rows)
    finally:
        await db.aclose()


def best_of_ten(http: httpx.Client, path: str) -> float:
    """The fastest of ten GETs of ``path``, in seconds: what the page costs, not how busy
    the machine is (each must answer 200)."""
    timings = []
    for _ in range(10):
        began = time.perf_counter()
        assert http.get(path).status_code == 200
        timings.append(time.perf_counter() - began)
    return min(timings)
