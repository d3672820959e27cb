"""The webhook retry schedule with the default settings (issue 7: "≥ 24 h of retries
with backoff and jitter"): ``WebhookSender._delay`` grows, is jittered by ±20 % (a new
draw on every call), and keeps retrying until ``dead_after`` has passed."""

from __future__ import annotations

from itertools import pairwise
from typing import Any, cast

from mailgate.clock import SystemClock
from mailgate.deliver.ssrf import NetGuard
from mailgate.reports.webhooks import WebhookSender
from mailgate.settings import WebhookSettings

DEFAULT_BASES = [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0]  #: 5 s … 4 h
DRAWS = 200  #: per failure count: the chance a ±20 % band shows no draw in its outer
#: tenths at one end is 0.75 ** 200 ≈ 1e-25


def sender() -> WebhookSender:
    """A sender with the default settings; ``_delay`` reads only those."""
    store = cast(Any, None)  # no POST is made: the stores are never touched
    return WebhookSender(store, store, SystemClock(), WebhookSettings(), guard=NetGuard())


def test_the_defaults_grow_from_5_s_to_4_h_with_20_percent_jitter() -> None:
    s = sender()
    assert s.settings.retry_delays == DEFAULT_BASES and s.settings.jitter == 0.2
    previous_most = 0.0
    for failures, base in enumerate([*DEFAULT_BASES, 14400.0, 14400.0], start=1):
        delays = [s._delay(failures) for _ in range(DRAWS)]
        assert all(0.8 * base <= d <= 1.2 * base for d in delays), (failures, base)
        assert min(delays) < 0.9 * base and max(delays) > 1.1 * base  # the whole band
        assert len(set(delays)) > DRAWS // 2  # a new draw each call: no herd of retries
        if base != DEFAULT_BASES[-1]:
            assert min(delays) > previous_most  # even jittered, every delay is longer
        previous_most = max(delays)


def test_retries_go_on_until_dead_after_a_day() -> None:
    """Failures at t = 0, then after each delay; the store dead-letters the first
    failure at least ``dead_after`` after the event. The schedule must not run out
    before that, and the last gap is one 4 h delay at most (+20 %)."""
    s = sender()
    dead_after = s.settings.dead_after
    assert dead_after == 86400.0
    for _ in range(20):  # several jittered schedules
        failed_at = [0.0]
        while failed_at[-1] < dead_after and len(failed_at) < 100:
            failed_at.append(failed_at[-1] + s._delay(len(failed_at)))
        retried_for = failed_at[-1]  # the attempt that is dead-lettered
        assert dead_after <= retried_for <= dead_after + 1.2 * 14400.0
        assert len(failed_at) > len(DEFAULT_BASES) + 1  # the 4 h delay repeats
        assert all(b > a for a, b in pairwise(failed_at))
