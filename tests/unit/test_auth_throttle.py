"""The failed-AUTH arithmetic on values: when an address may try again."""

from __future__ import annotations

from datetime import datetime, timedelta

from mailgate.ingest.auth_throttle import blocked_until
from tests.builders import NOW

WINDOW = timedelta(minutes=5)


def _at(*seconds: int) -> list[datetime]:
    return [NOW + timedelta(seconds=s) for s in seconds]


def test_under_the_limit_it_may_try_now() -> None:
    assert blocked_until([], 3, WINDOW) is None
    assert blocked_until(_at(20, 10), 3, WINDOW) is None


def test_at_the_limit_until_the_oldest_counted_failure_ages_out() -> None:
    assert blocked_until(_at(20, 10, 0), 3, WINDOW) == NOW + WINDOW


def test_a_failure_past_the_limit_only_makes_the_block_last_longer() -> None:
    # newest first: the third newest (10 s) decides, not the oldest one read (0 s)
    assert blocked_until(_at(30, 20, 10, 0), 3, WINDOW) == NOW + timedelta(seconds=10) + WINDOW
