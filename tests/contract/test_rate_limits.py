"""Buckets shared through the database, and the Pacer on top, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from mailgate.clock import SystemClock
from mailgate.deliver.admission import RateAdmission
from mailgate.deliver.pacing import BucketSpec, Pacer
from mailgate.deliver.router import Route
from mailgate.ingest.submission import Submissions
from mailgate.model import Account, AccountLimits, AccountTransport, Message
from mailgate.settings import LimitSettings
from mailgate.store import Database, QueueStore
from mailgate.store.rate_limits import RateLimitStore
from tests.builders import NOW, submitted


def account(name: str = "a", tenant: str = "t1", **limits: object) -> Account:
    return Account(name, tenant, AccountTransport.SMTP, limits=AccountLimits(**limits))  # type: ignore[arg-type]


async def test_a_bucket_persists_between_reservations(database: Database) -> None:
    store = RateLimitStore(database)
    spec = BucketSpec("k", 1.0, 1.0)
    assert await store.take([spec], NOW) is None
    assert await store.take([spec], NOW + timedelta(seconds=0.25)) == NOW + timedelta(seconds=1)
    bucket = await store.tokens("k")
    assert bucket is not None and bucket.tokens == 0.0 and bucket.updated_at == NOW


async def test_no_specs_means_no_limit(database: Database) -> None:
    assert await RateLimitStore(database).take([], NOW) is None


async def test_pacer_spaces_an_accounts_sends(database: Database) -> None:
    pacer = Pacer(RateLimitStore(database), SystemClock())
    a = account(per_minute=60)
    assert await pacer.reserve(a, NOW) is None
    assert await pacer.reserve(a, NOW) == NOW + timedelta(seconds=1)
    assert await pacer.reserve(a, NOW + timedelta(seconds=1)) is None


async def test_accounts_and_tenants_have_their_own_buckets(database: Database) -> None:
    pacer = Pacer(RateLimitStore(database), SystemClock())
    for a in (
        account("a", per_minute=1),
        account("b", per_minute=1),
        account("a", "t2", per_minute=1),
    ):
        assert await pacer.reserve(a, NOW) is None
    assert await pacer.reserve(account("a", per_minute=1), NOW) is not None


async def test_unlimited_account_is_never_delayed(database: Database) -> None:
    pacer = Pacer(RateLimitStore(database), SystemClock())
    for _ in range(100):
        assert await pacer.reserve(account(), NOW) is None


async def test_two_processes_never_grant_more_than_the_limit(
    database: Database, store_url: str
) -> None:
    """Two engines (as two ``serve`` processes would have) reserve concurrently.

    The clock stands still, so a bucket of 5 can grant exactly 5 in total: a
    read-modify-write that is not atomic grants more.
    """
    other = Database(store_url)
    try:
        pacers = [Pacer(RateLimitStore(db), SystemClock(), burst=5) for db in (database, other)]
        a = account(per_minute=5)
        results = await asyncio.gather(*(pacers[i % 2].reserve(a, NOW) for i in range(40)))
    finally:
        await other.aclose()
    assert sum(r is None for r in results) == 5


async def test_throttled_account_slows_down(database: Database) -> None:
    pacer = Pacer(RateLimitStore(database), SystemClock())
    a = account(per_minute=60)
    assert await pacer.reserve(a, NOW) is None
    pacer.throttled(a, NOW)
    assert pacer.current_rate(a, NOW) == 0.5
    later = NOW + timedelta(seconds=1)
    assert await pacer.reserve(a, later) == NOW + timedelta(seconds=2)
    assert await pacer.reserve(a, NOW + timedelta(seconds=2)) is None


async def test_throttling_an_unlimited_account_halves_its_observed_pace(database: Database) -> None:
    pacer = Pacer(RateLimitStore(database), SystemClock())
    a = account()
    for i in range(300):
        assert await pacer.reserve(a, NOW + timedelta(seconds=i * 0.1)) is None
    pacer.throttled(a, NOW + timedelta(seconds=30))
    rate = pacer.current_rate(a, NOW + timedelta(seconds=30))
    assert rate is not None and 4 < rate < 6  # about 10 a second before


async def test_would_exceed_counts_admitted_messages_per_window(database: Database) -> None:
    pacer = Pacer(RateLimitStore(database), SystemClock())
    a = account(per_hour=3, limit_behavior="reject")
    assert not await pacer.would_exceed(a, 2, NOW)
    assert not await pacer.would_exceed(a, 1, NOW)
    assert await pacer.would_exceed(a, 1, NOW)
    assert not await pacer.would_exceed(a, 1, NOW + timedelta(hours=1 / 3))
    assert not await pacer.would_exceed(account(), 1000, NOW)


class _OneAccount:
    """Routes every message through one account (what the router answers for it)."""

    def __init__(self, account: Account) -> None:
        self.account = account

    async def route(self, message: Message) -> Route:
        return Route(account=self.account)

    def capacity(self, tenant: str, account: str) -> int | None:
        return self.account.limits.pool_size

    async def record_health(
        self, route: Route, *, ok_at: datetime | None = None, error: str | None = None
    ) -> None:
        return None


class _Frozen:
    def now(self) -> datetime:
        return NOW


def _submissions(database: Database, a: Account) -> Submissions:
    pacer = Pacer(RateLimitStore(database), SystemClock())
    return Submissions(
        QueueStore(database),
        _Frozen(),
        default_from="app@example.com",
        limits=LimitSettings(),
        on_queued=lambda: None,
        admission=RateAdmission(_OneAccount(a), pacer),
    )


async def test_reject_behavior_refuses_items_over_the_limit_with_429(database: Database) -> None:
    submissions = _submissions(database, account(per_minute=3, limit_behavior="reject"))
    report = await submissions.submit([submitted(id=f"m{i}") for i in range(5)], "t1")
    assert len(report.ids) == 3
    assert [(r.index, r.id, r.status) for r in report.rejected] == [(3, "m3", 429), (4, "m4", 429)]
    assert "3 per minute" in report.rejected[0].reason
    assert "limit_behavior: reject" in report.rejected[0].reason


async def test_wait_behavior_queues_everything(database: Database) -> None:
    submissions = _submissions(database, account(per_minute=3))
    report = await submissions.submit([submitted() for _ in range(5)], "t1")
    assert len(report.ids) == 5 and report.rejected == []
