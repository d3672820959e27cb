"""Pacing accuracy: N accounts × M messages, each account limited to R per minute.

In-process: a real dispatcher (router, per-account SMTP pools, the Pacer on the
database's ``rate_buckets``, fair leasing) sends to one aiosmtpd sink that notes each
arrival's time and account. Prints, per account, the achieved rate against the limit
(pacing error) and the total time against the ideal ``(M - 1) / (R / 60)``.

    .venv/bin/python bench/pacing.py [--accounts 10] [--messages 200] [--per-minute 600]
                                     [--db sqlite|URL]

Figures are printed, never asserted (docs/benchmarks.md records them).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session
from tests.builders import make_message
from tests.integration.test_pacing import Directory
from tests.peers import Upstream

from mailgate.clock import SystemClock
from mailgate.deliver import CaptureTransport, Dispatcher
from mailgate.deliver.pacing import Pacer
from mailgate.deliver.router import Router
from mailgate.deliver.transports import transport_for
from mailgate.inbox import Inbox
from mailgate.model import Account, AccountLimits, AccountTransport, SmtpAuth, SmtpSecurity
from mailgate.settings import DeliverySettings, RetrySettings
from mailgate.store import Database, InboxStore, QueueStore
from mailgate.store.rate_limits import RateLimitStore


class Sink(Upstream):
    """The tests' aiosmtpd upstream, noting when each message arrived for which account."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[str, list[float]] = defaultdict(list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        account = envelope.rcpt_tos[0].partition("@")[0]
        self.arrivals[account].append(time.monotonic())
        return "250 OK"


def account(name: str, port: int, per_minute: int) -> Account:
    return Account(
        name,
        "default",
        AccountTransport.SMTP,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security=SmtpSecurity.NONE,
        smtp_auth=SmtpAuth.NONE,
        is_outbound_enabled=True,
        limits=AccountLimits(per_minute=per_minute),
    )


async def run(args: argparse.Namespace) -> None:
    sink = Sink()
    async with sink:
        await measure(args, sink)


async def measure(args: argparse.Namespace, sink: Sink) -> None:
    port = sink.port
    url = args.db if args.db != "sqlite" else f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    db = Database(url)
    await db.migrate()
    names = [f"acct{i}" for i in range(args.accounts)]
    accounts = [account(n, port, args.per_minute) for n in names]
    clock = SystemClock()
    settings = DeliverySettings(poll_interval=0.1, smtp_timeout=10.0)
    factory = functools.partial(transport_for, settings=settings, local_hostname="localhost")
    capture = CaptureTransport(Inbox(InboxStore(db), clock))
    router = Router(capture=capture, accounts=Directory(*accounts), factory=factory)
    queue = QueueStore(db)
    batch = [
        make_message(account=n, to=(f"{n}@example.com",), created_at=clock.now())
        for _ in range(args.messages)
        for n in names
    ]
    await queue.enqueue(batch, clock.now())
    pacer = Pacer(RateLimitStore(db), clock, burst=args.burst)
    dispatcher = Dispatcher(
        queue,
        router,
        retry=RetrySettings().policy(),
        settings=settings,
        clock=clock,
        owner="bench",
        pacer=pacer,
    )
    began = time.monotonic()
    await dispatcher.start()
    total = args.accounts * args.messages
    while sum(len(v) for v in sink.arrivals.values()) < total:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - began
    await dispatcher.stop()
    await router.aclose()
    await db.aclose()
    report(args, sink, elapsed)


def report(args: argparse.Namespace, sink: Sink, elapsed: float) -> None:
    rate = args.per_minute / 60
    ideal = (args.messages - 1) / rate
    errors, gaps_all = [], []
    for times in sink.arrivals.values():
        achieved = (len(times) - 1) / (times[-1] - times[0])
        errors.append(100 * (achieved - rate) / rate)
        gaps_all += [b - a for a, b in itertools.pairwise(times)]
    print(f"mailgate {Path(__file__).resolve().parent.parent}")
    print(
        f"{args.accounts} accounts x {args.messages} messages,"
        f" {args.per_minute}/min each, burst {args.burst}"
    )
    print(f"pacing error per account: min {min(errors):+.1f} %, max {max(errors):+.1f} %")
    gaps = sorted(gaps_all)
    p1, p99 = gaps[len(gaps) // 100], gaps[len(gaps) * 99 // 100]
    print(
        f"gaps: median {statistics.median(gaps) * 1000:.0f} ms, "
        f"p1 {p1 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    print(
        f"total {elapsed:.2f} s vs ideal {ideal:.2f} s ({100 * (elapsed - ideal) / ideal:+.1f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--per-minute", type=int, default=600)
    parser.add_argument("--burst", type=int, default=DeliverySettings().pace_burst)
    parser.add_argument("--db", default="sqlite")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
