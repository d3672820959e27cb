"""Where the time goes: in-process costs of the pieces every message passes through.

Not a throughput benchmark: it times mailgate's own functions one at a time, in this
process, on a temporary SQLite file, to explain the figures of ``capture_ingest.py`` and
``relay.py`` (wall time and CPU time of this process, including the database threads).

    .venv/bin/python bench/components.py [--ops 300] [--depths 100,2000,10000]

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from _harness import body_text, machine_summary, mailgate_origin, make_message, run_benchmark, table
from mailgate.clock import SystemClock
from mailgate.inbox import CaptureMeta, Inbox
from mailgate.ingest.submission import Submissions, parse_message_json
from mailgate.mime import build_message, parse_message
from mailgate.settings import LimitSettings
from mailgate.store import Database, InboxStore, QueueStore

Row = list[str]


def message_json(index: int, size: int) -> dict[str, Any]:
    return {"to": "x@example.com", "from": "bench@example.com", "subject": f"bench {index}",
            "text": body_text(size)}


def timed_sync(label: str, ops: int, fn: Callable[[], object]) -> Row:
    fn()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(ops):
        fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return [label, f"{1000 * wall / ops:.3f}", f"{1000 * cpu / ops:.3f}"]


async def timed(label: str, ops: int, fn: Callable[[], Awaitable[object]], per: int = 1) -> Row:
    await fn()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(ops):
        await fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return [label, f"{1000 * wall / (ops * per):.3f}", f"{1000 * cpu / (ops * per):.3f}"]


async def main_async(args: argparse.Namespace) -> int:
    print(f"machine: {machine_summary()}")
    print(f"measuring: {mailgate_origin()} (in process)")
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-components-"))
    ops: int = args.ops
    clock = SystemClock()
    limits = LimitSettings()
    raw = make_message(1, args.size)
    item = message_json(1, args.size)
    now = datetime.now(UTC)
    message = parse_message_json(item, tenant="default", default_from="a@example.com",
                                 limits=limits, now=now)
    rows: list[Row] = [
        timed_sync("mime.parse_message (1 KB, as SMTP capture does)", ops,
                   lambda: parse_message(raw)),
        timed_sync("ingest.parse_message_json (REST validation)", ops,
                   lambda: parse_message_json(item, tenant="default",
                                              default_from="a@example.com", limits=limits,
                                              now=now)),
        timed_sync("mime.build_message (before each delivery)", ops,
                   lambda: build_message(message)),
    ]
    db = Database(f"sqlite:///{tmp / 'c.sqlite3'}")
    try:
        await db.migrate()

        async def select_one() -> None:
            async with db.write() as conn:
                await conn.execute(text("SELECT 1"))

        rows.append(await timed("store: empty write transaction (SELECT 1)", ops, select_one))
        async def read_one() -> None:
            async with db.read() as conn:
                await conn.execute(text("SELECT 1"))

        rows.append(await timed("store: read (SELECT 1)", ops, read_one))
        inbox = Inbox(InboxStore(db), clock)
        meta = CaptureMeta(mail_from="bench@example.com", rcpt_to=("x@example.com",))
        rows.append(await timed("inbox.capture: parse + insert, one per transaction", ops,
                                lambda: inbox.capture(raw, meta)))
        newest = (await inbox.list("default", limit=1))[0][0]
        rows.append(await timed("inbox.list: newest 50 (the web UI's and API's list)", ops,
                                lambda: inbox.list("default", limit=50)))
        rows.append(await timed("inbox.get: one message", ops,
                                lambda: inbox.get(newest.id, "default")))

        async def many_reads() -> None:  # what a busy UI and API clients do at once
            await asyncio.gather(*(inbox.list("default", limit=50) for _ in range(16)))

        rows.append(await timed("inbox.list x16 at once (per list)", max(ops // 16, 2),
                                many_reads, per=16))
        queue = QueueStore(db)
        submissions = Submissions(queue, clock, default_from="a@example.com", limits=limits,
                                  on_queued=lambda: None)
        rows.append(await timed("Submissions.submit: 1 message per call", ops,
                                lambda: submissions.submit([item])))
        batch = [message_json(i, args.size) for i in range(100)]
        rows.append(await timed("Submissions.submit: 100 per call (per message)", max(ops // 50, 2),
                                lambda: submissions.submit(batch), per=100))
        print(table(["component", "wall ms/op", "CPU ms/op"], rows))
        print()
        print(await lease_by_depth(db, submissions, queue, args))
    finally:
        await db.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


async def lease_by_depth(
    db: Database, submissions: Submissions, queue: QueueStore, args: argparse.Namespace
) -> str:
    """QueueStore.lease(16) with more and more messages due."""
    rows: list[Row] = []
    batch = [message_json(i, args.size) for i in range(100)]
    counts = await queue.count_by_state()
    depth = counts.get("queued", 0)
    for target in args.depths:
        while depth < target:
            await submissions.submit(batch[: min(100, target - depth)])
            depth = (await queue.count_by_state()).get("queued", 0)
        walls: list[float] = []
        for _ in range(5):
            t0 = time.perf_counter()
            await queue.lease("bench", datetime.now(UTC), 16, 300.0)
            walls.append(time.perf_counter() - t0)
        depth = (await queue.count_by_state()).get("queued", 0)
        rows.append([str(target), f"{1000 * statistics.median(walls):.2f}"])
    return table(["messages due", "QueueStore.lease(16) wall ms (median of 5)"], rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ops", type=int, default=300, help="operations per component (default 300)")
    p.add_argument("--size", type=int, default=1024, help="message/body size (default 1024)")
    p.add_argument("--depths", default="100,2000,10000", help="queue depths for the lease "
                   "timing (default 100,2000,10000)")
    args = p.parse_args(argv)
    args.depths = sorted(int(x) for x in args.depths.split(",") if x.strip())
    if args.ops < 1 or any(d < 1 for d in args.depths):
        p.error("--ops and every depth must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
