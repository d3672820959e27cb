"""The pacing arithmetic: token buckets and the throttle's slow-down and recovery (no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailgate.deliver.pacing import (
    Bucket,
    BucketSpec,
    Throttle,
    ThrottlePolicy,
    bucket_specs,
    observed_rate,
    refill,
    slow_down,
    take,
    throttled_rate,
)

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PER_SECOND = BucketSpec("m", 1.0, 1.0)  # 60/min, burst 1


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(specs: list[BucketSpec], times: list[float]) -> list[float]:
    """Reserve at each time in ``times`` (retrying when told); the times granted."""
    stored: list[Bucket | None] = [None] * len(specs)
    granted = []
    for t in times:
        now = at(t)
        while True:
            grant = take(specs, stored, now)
            if grant.retry_at is None:
                stored = list(grant.buckets)
                granted.append((now - T0).total_seconds())
                break
            assert grant.retry_at > now
            now = grant.retry_at
    return granted


def test_sixty_a_minute_is_one_a_second_not_a_burst() -> None:
    granted = run([PER_SECOND], [0.0] * 5)
    assert granted == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_refused_reservation_takes_nothing() -> None:
    first = take([PER_SECOND], [None], T0)
    refused = take([PER_SECOND], list(first.buckets), at(0.5))
    assert refused.retry_at == at(1.0)
    assert refused.buckets[0].tokens == 0.5  # refilled, not debited


def test_no_burst_across_a_window_boundary() -> None:
    """Idle for an hour, a 60/min account still sends one a second: the bucket holds one."""
    granted = run([PER_SECOND], [0.0, 3600.0, 3600.0, 3600.0])
    assert granted == [0.0, 3600.0, 3601.0, 3602.0]


def test_every_window_must_hold() -> None:
    minute = BucketSpec("m", 1.0, 1.0)
    hour = BucketSpec("h", 2 / 3600, 1.0)  # 2 an hour
    granted = run([minute, hour], [0.0, 0.0, 0.0])
    assert granted == [0.0, 1800.0, 3600.0]


def test_all_or_nothing_across_windows() -> None:
    minute, hour = BucketSpec("m", 1.0, 1.0), BucketSpec("h", 1 / 3600, 1.0)
    stored: list[Bucket | None] = [Bucket(1.0, T0), Bucket(0.0, T0)]
    grant = take([minute, hour], stored, T0)
    assert grant.retry_at == at(3600)
    assert grant.buckets[0].tokens == 1.0  # the minute's token was not spent


def test_burst_allows_that_many_then_paces() -> None:
    granted = run([BucketSpec("m", 1.0, 3.0)], [0.0] * 5)
    assert granted == [0.0, 0.0, 0.0, 1.0, 2.0]


def test_a_lowered_limit_caps_stored_tokens() -> None:
    bucket = refill(BucketSpec("m", 1.0, 2.0), Bucket(50.0, T0), at(10))
    assert bucket.tokens == 2.0


def test_a_clock_going_backwards_adds_nothing() -> None:
    assert refill(PER_SECOND, Bucket(0.25, T0), at(-5)).tokens == 0.25


def test_taking_more_than_the_capacity_is_refused() -> None:
    grant = take([BucketSpec("a", 1.0, 5.0)], [None], T0, count=6)
    assert grant.retry_at is not None


def test_bucket_specs_per_window_and_burst_capped_by_the_limit() -> None:
    limits: dict[str, int | None] = {"minute": 600, "hour": None, "day": 1}
    minute, day = bucket_specs("t", "acct", limits, 5, "send")
    assert (minute.rate, minute.capacity) == (10.0, 5.0)
    assert (day.rate, day.capacity) == (1 / 86400, 1.0)
    [whole] = bucket_specs("t", "acct", {"minute": 60}, None, "admit")
    assert whole.capacity == 60.0
    assert minute.key != bucket_specs("t/acct", "", limits, 5, "send")[0].key


POLICY = ThrottlePolicy(hold=60, step=0.1, every=30, floor=0.01)


def test_throttle_halves_holds_then_recovers_additively() -> None:
    t = slow_down(None, 10.0, POLICY, T0)
    assert t.rate == 5.0
    assert throttled_rate(t, POLICY, at(59)) == 5.0
    assert throttled_rate(t, POLICY, at(60)) == 6.0
    assert throttled_rate(t, POLICY, at(90)) == 7.0
    assert throttled_rate(t, POLICY, at(150)) == 9.0
    assert throttled_rate(t, POLICY, at(180)) is None  # fully recovered


def test_a_second_throttle_halves_the_current_rate_and_keeps_the_original_base() -> None:
    first = slow_down(None, 10.0, POLICY, T0)
    second = slow_down(first, 10.0, POLICY, at(90))  # 7.0 by then
    assert (second.rate, second.base, second.since) == (3.5, 10.0, at(90))


def test_throttle_never_goes_below_the_floor() -> None:
    t = Throttle(0.01, 1.0, T0)
    assert slow_down(t, 1.0, POLICY, at(1)).rate == 0.01


def test_observed_rate_tracks_a_steady_pace() -> None:
    rate, last = 0.0, None
    for i in range(200):
        rate = observed_rate(rate, last, at(i * 0.5))
        last = at(i * 0.5)
    assert 1.9 < rate < 2.1
