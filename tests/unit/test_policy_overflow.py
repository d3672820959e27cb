"""The retry schedule never overflows: a multiplier of 100 a thousand attempts in
waits max_delay (a runtime-settable schedule must not crash the dispatcher)."""

from __future__ import annotations

from datetime import timedelta

from mailgate.settings import RetrySettings


def test_a_huge_backoff_is_capped_instead_of_overflowing() -> None:
    policy = RetrySettings(multiplier=100, max_delay=600, jitter=0).policy()
    assert policy.delay(1000, 0.5) == timedelta(seconds=600)
    assert policy.delay(2, 0.5) == timedelta(seconds=600)  # 60 x 100 capped
    assert policy.delay(1, 0.5) == timedelta(seconds=60)
