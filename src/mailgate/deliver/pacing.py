"""Pacing: how fast each account may send, as token buckets, and the service that applies it.

The arithmetic at the top is a pure core (it takes ``now``, reads no clock and touches
no database); :class:`Pacer` applies it per account through a
:class:`~mailgate.store.rate_limits.RateLimitStore`, so every process sharing one
database respects one limit.

Why a token bucket with a tiny capacity: a fixed window ("60 in this minute") lets 60
go at 12:00:59 and 60 more at 12:01:00, a burst of 120 that providers count as abuse.
A bucket refilled at ``limit / window`` tokens per second holding at most ``burst``
tokens (default 1) spaces sends evenly: 60/min is one send a second. Any half-open
window of that length then sees at most ``limit + burst - 1`` sends. Every configured
window (minute, hour, day) is a bucket of its own and all of them must hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailgate.clock import Clock
from mailgate.model import Account, AccountLimits

if TYPE_CHECKING:  # the store imports this module's arithmetic
    from mailgate.store.rate_limits import RateLimitStore

__all__ = [
    "WINDOWS",
    "Bucket",
    "BucketSpec",
    "Grant",
    "Pacer",
    "Throttle",
    "ThrottlePolicy",
    "bucket_specs",
    "observed_rate",
    "refill",
    "slow_down",
    "take",
    "throttled_rate",
]

#: The windows an account may limit, with their length in seconds.
WINDOWS: dict[str, float] = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One limit of one account: a bucket ``key`` refilled at ``rate`` tokens a second."""

    key: str
    rate: float  #: tokens per second
    capacity: float  #: the most tokens it holds: the largest burst


@dataclass(frozen=True, slots=True)
class Bucket:
    """A bucket's stored state: its tokens as of ``updated_at``."""

    tokens: float
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Grant:
    """What :func:`take` decided: the buckets' new state, and when to try again if refused."""

    buckets: tuple[Bucket, ...]
    retry_at: datetime | None  #: None: granted (the tokens are taken)


def refill(spec: BucketSpec, bucket: Bucket | None, now: datetime) -> Bucket:
    """The bucket at ``now``: tokens added since it was stored, capped at its capacity.

    A bucket never seen starts full. A clock that went backwards adds nothing. A lowered
    limit takes effect at once: the cap is the current spec's capacity.
    """
    if bucket is None:
        return Bucket(spec.capacity, now)
    elapsed = max(0.0, (now - bucket.updated_at).total_seconds())
    return Bucket(min(spec.capacity, bucket.tokens + elapsed * spec.rate), now)


def take(
    specs: Sequence[BucketSpec], stored: Sequence[Bucket | None], now: datetime, count: int = 1
) -> Grant:
    """Take ``count`` tokens from every bucket, or from none.

    All or nothing, because all limits must hold: taking the minute's token while the
    day refuses would waste it. Refused, ``retry_at`` is the earliest time every bucket
    holds ``count`` tokens again (never earlier than ``now``; a bucket whose capacity is
    below ``count`` can never grant it, and answers after one full refill).
    """
    current = [refill(s, b, now) for s, b in zip(specs, stored, strict=True)]
    waits = [_wait(s, b, count) for s, b in zip(specs, current, strict=True)]
    longest = max(waits, default=0.0)
    if longest > 0:
        return Grant(tuple(current), now + timedelta(seconds=longest))
    taken = tuple(Bucket(b.tokens - count, now) for b in current)
    return Grant(taken, None)


def _wait(spec: BucketSpec, bucket: Bucket, count: int) -> float:
    """Seconds until ``bucket`` holds ``count`` tokens; 0 when it does now."""
    missing = min(count, spec.capacity) - bucket.tokens
    if missing <= 1e-9:
        return 0.0 if count <= spec.capacity else spec.capacity / spec.rate
    return missing / spec.rate


def bucket_specs(
    tenant: str, account: str, limits: dict[str, int | None], burst: int | None, prefix: str
) -> list[BucketSpec]:
    """The buckets for an account's configured ``limits`` (window name → count or None).

    ``burst`` is capped by the limit itself (a limit of 1/hour holds one token); None
    lets the bucket hold a whole window (admission at submission counts that way).
    """
    specs = []
    for window, count in limits.items():
        if count is None or count <= 0:
            continue
        capacity = float(count if burst is None else min(max(1, burst), count))
        key = bucket_key(prefix, tenant, account, window)
        specs.append(BucketSpec(key, count / WINDOWS[window], capacity))
    return specs


def bucket_key(prefix: str, tenant: str, account: str, window: str) -> str:
    """A row key naming one bucket.

    The tenant's length keeps tenant ``a/b`` + account ``c`` apart from ``a`` + ``b/c``.
    """
    return f"{prefix}:{window}:{len(tenant)}:{tenant}/{account}"


def window_limits(limits: AccountLimits) -> dict[str, int | None]:
    return {"minute": limits.per_minute, "hour": limits.per_hour, "day": limits.per_day}


def base_rate(limits: AccountLimits) -> float | None:
    """The account's sustained rate in sends a second: its slowest window; None if unlimited."""
    rates = [n / WINDOWS[w] for w, n in window_limits(limits).items() if n]
    return min(rates, default=None)


# -- slowing down when the server says so -------------------------------------------


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How a "slow down" reply (421, 4.7.x, 450 4.2.1) changes an account's rate.

    Multiplicative decrease, additive increase (the scheme TCP congestion control uses,
    RFC 5681 §3.1): each throttle halves the rate, which is held for ``hold`` seconds,
    then ``step`` × the rate from before the first throttle comes back every ``every``
    seconds until it is all back.
    """

    hold: float = 60.0
    step: float = 0.1
    every: float = 30.0
    floor: float = 1 / 60  #: never slower than one send a minute


@dataclass(frozen=True, slots=True)
class Throttle:
    rate: float  #: sends a second right after the last slow-down
    base: float  #: the rate before the first one: recovery ends there
    since: datetime  #: when the last slow-down came


def throttled_rate(t: Throttle, policy: ThrottlePolicy, now: datetime) -> float | None:
    """The rate ``t`` allows at ``now``; None once it has recovered fully."""
    elapsed = (now - t.since).total_seconds()
    if elapsed < policy.hold:
        return t.rate
    steps = 1 + math.floor((elapsed - policy.hold) / policy.every)
    rate = t.rate + steps * policy.step * t.base
    return None if rate >= t.base else rate


def slow_down(
    t: Throttle | None, current: float, policy: ThrottlePolicy, now: datetime
) -> Throttle:
    """Halve the rate in force at ``now``: ``t``'s if still throttled, else ``current``."""
    rate = throttled_rate(t, policy, now) if t is not None else None
    if t is None or rate is None:
        return Throttle(max(policy.floor, current / 2), max(current, policy.floor), now)
    return Throttle(max(policy.floor, rate / 2), t.base, now)


def observed_rate(rate: float, last: datetime | None, now: datetime, tau: float = 10.0) -> float:
    """An exponentially weighted estimate of sends a second after one more send at ``now``.

    Halving needs a rate to halve; an account with no configured limit has only the pace
    it was actually sending at.
    """
    if last is None:
        return 1 / tau
    dt = max(0.0, (now - last).total_seconds())
    return rate * math.exp(-dt / tau) + 1 / tau


# -- the service ----------------------------------------------------------------------


@dataclass(slots=True)
class _AccountState:
    """What one process remembers about one account (throttling is per process)."""

    throttle: Throttle | None = None
    bucket: Bucket | None = None  #: the throttle's own bucket
    observed: float = 0.0
    last_send: datetime | None = None


class Pacer:
    """Decides when each account may send next, and whether a submission fits its limits.

    Limits are shared through the database (:class:`RateLimitStore`); the slow-down
    after a throttling reply is kept in memory by each process: every process halves
    its own pace, so together they halve too. An account with no limits and no
    throttle is never delayed and costs no database round trip.
    """

    def __init__(
        self,
        buckets: RateLimitStore,
        clock: Clock,
        *,
        burst: int = 1,
        throttle: ThrottlePolicy | None = None,
    ) -> None:
        self._buckets = buckets
        self._clock = clock
        self.burst = burst  #: a bucket's capacity; changed at run time, used at once
        self._policy = throttle or ThrottlePolicy()
        self._accounts: dict[tuple[str, str], _AccountState] = {}

    async def reserve(self, account: Account, now: datetime) -> datetime | None:
        """Take a send token for ``account``: None means go now; else when to try again.

        A refusal takes nothing, so the caller may simply ask again at that time.
        """
        state = self._state(account)
        held = self._take_throttled(state, now)
        if held is not None:
            return held
        specs = bucket_specs(
            account.tenant, account.id, window_limits(account.limits), self.burst, "send"
        )
        retry = await self._buckets.take(specs, now)
        if retry is not None:
            self._refund(state)
            return retry
        state.observed = observed_rate(state.observed, state.last_send, now)
        state.last_send = now
        return None

    def throttled(self, account: Account, now: datetime) -> None:
        """The server asked ``account`` to slow down: halve its rate for a while."""
        state = self._state(account)
        current = base_rate(account.limits) or max(state.observed, self._policy.floor)
        state.throttle = slow_down(state.throttle, current, self._policy, now)
        state.bucket = Bucket(0.0, now)  # the next send waits one interval at the new pace

    async def would_exceed(self, account: Account, count: int, now: datetime) -> bool:
        """Whether admitting ``count`` more messages would exceed the account's limits.

        For ``limit_behavior: reject``. False admits them (see :meth:`admit`).
        """
        return await self.admit(account, count, now) is not None

    async def admit(self, account: Account, count: int, now: datetime) -> datetime | None:
        """Count ``count`` submitted messages against each window; None if they fit.

        Refused (nothing is counted), the time when they would fit. The buckets hold a
        whole window, refilled smoothly; shared through the database per tenant and
        account, apart from the send buckets.
        """
        limits = window_limits(account.limits)
        specs = bucket_specs(account.tenant, account.id, limits, None, "admit")
        return await self._buckets.take(specs, now, count)

    def current_rate(self, account: Account, now: datetime) -> float | None:
        """The rate a throttle allows ``account`` at ``now``; None when not throttled."""
        state = self._accounts.get((account.tenant, account.id))
        if state is None or state.throttle is None:
            return None
        return throttled_rate(state.throttle, self._policy, now)

    def _state(self, account: Account) -> _AccountState:
        return self._accounts.setdefault((account.tenant, account.id), _AccountState())

    def _take_throttled(self, state: _AccountState, now: datetime) -> datetime | None:
        """Take a token from the throttle's bucket, if the account is throttled."""
        if state.throttle is None:
            return None
        rate = throttled_rate(state.throttle, self._policy, now)
        if rate is None:
            state.throttle = state.bucket = None
            return None
        spec = BucketSpec("throttle", rate, 1.0)
        grant = take([spec], [state.bucket], now)
        state.bucket = grant.buckets[0]
        return grant.retry_at

    def _refund(self, state: _AccountState) -> None:
        """The shared limits refused after the throttle granted: give its token back."""
        if state.throttle is not None and state.bucket is not None:
            b = state.bucket
            state.bucket = Bucket(min(1.0, b.tokens + 1), b.updated_at)
