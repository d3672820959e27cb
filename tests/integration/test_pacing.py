"""Pacing and fairness end to end: a real dispatcher sending to real aiosmtpd upstreams.

Arrival times are measured at the upstream (with tolerances): 60/min must arrive about
one a second, not in a burst, and one account's backlog must not hold back another
account's first message.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator
from datetime import datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

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
from tests.builders import make_message
from tests.peers import Upstream


class TimedUpstream(Upstream):
    """An upstream that notes when each message arrived (monotonic seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.times.append(time.monotonic())
        return await super().handle_DATA(server, session, envelope)


class Directory:
    """The account directory as the router reads it, holding accounts in memory."""

    def __init__(self, *accounts: Account) -> None:
        self.accounts = {(a.tenant, a.id): a for a in accounts}

    async def get(self, tenant: str, id: str) -> Account | None:
        return self.accounts.get((tenant, id))

    async def for_sender(self, tenant: str, address: str) -> Account | None:
        return None

    async def record_health(
        self, tenant: str, id: str, *, ok_at: datetime | None, error: str | None
    ) -> None:
        return None


def smtp_account(name: str, upstream: Upstream, **limits: object) -> Account:
    return Account(
        name,
        "default",
        AccountTransport.SMTP,
        smtp_host="127.0.0.1",
        smtp_port=upstream.port,
        smtp_security=SmtpSecurity.NONE,
        smtp_auth=SmtpAuth.NONE,
        is_outbound_enabled=True,
        limits=AccountLimits(**limits),  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def dispatching(db_url: str, *accounts: Account) -> AsyncIterator[QueueStore]:
    """A migrated database and a running dispatcher routing to ``accounts``."""
    db = Database(db_url)
    await db.migrate()
    clock = SystemClock()
    settings = DeliverySettings(poll_interval=0.1, smtp_timeout=5.0)
    factory = functools.partial(transport_for, settings=settings, local_hostname="localhost")
    capture = CaptureTransport(Inbox(InboxStore(db), clock))
    router = Router(capture=capture, accounts=Directory(*accounts), factory=factory)
    queue = QueueStore(db)
    dispatcher = Dispatcher(
        queue,
        router,
        retry=RetrySettings().policy(),
        settings=settings,
        clock=clock,
        owner="pacing-test",
        pacer=Pacer(RateLimitStore(db), clock),
    )
    await dispatcher.start()
    try:
        yield queue
    finally:
        await dispatcher.stop()
        await router.aclose()
        await db.aclose()


async def test_sixty_a_minute_arrive_a_second_apart(db_url: str) -> None:
    up = TimedUpstream()
    async with up:
        account = smtp_account("paced", up, per_minute=60)
        async with dispatching(db_url, account) as queue:
            now = SystemClock().now()
            await queue.enqueue([make_message(account="paced") for _ in range(5)], now)
            await up.wait_for(5, limit=15)
    gaps = [b - a for a, b in zip(up.times, up.times[1:], strict=False)]
    assert all(gap >= 0.8 for gap in gaps), gaps
    assert up.times[-1] - up.times[0] < 6.0, gaps  # paced, not stalled


async def test_a_backlog_does_not_delay_another_accounts_first_message(db_url: str) -> None:
    busy, idle = TimedUpstream(), TimedUpstream()
    async with busy, idle:
        paced = smtp_account("paced", busy, per_minute=60)
        other = smtp_account("other", idle)
        async with dispatching(db_url, paced, other) as queue:
            now = SystemClock().now()
            await queue.enqueue([make_message(account="paced") for _ in range(300)], now)
            await busy.wait_for(2, limit=10)  # the backlog is being worked through
            queued_at = time.monotonic()
            await queue.enqueue([make_message(account="other")], SystemClock().now())
            await idle.wait_for(1, limit=10)
    delay = idle.times[0] - queued_at
    assert delay < 1.0, f"the other account's first message took {delay:.2f} s"
    assert len(busy.times) <= 5  # the backlog itself stayed paced meanwhile
