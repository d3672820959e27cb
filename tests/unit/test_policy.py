import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailgate.model import Outcome, RecipientResult, SendResult, State
from mailgate.policy import Decision, RetryPolicy, classify, decide, split_enhanced
from mailgate.settings import Settings

T0 = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)


def _policy(**overrides: Any) -> RetryPolicy:
    """A policy with round numbers; the program's own defaults are tested in test_settings."""
    values: dict[str, Any] = {
        "initial_delay": 1800.0,
        "multiplier": 2.0,
        "max_delay": 4 * 3600.0,
        "max_age": 5 * 86400.0,
        "jitter": 0.0,
        **overrides,
    }
    return RetryPolicy(**values)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (250, Outcome.SENT),
        (251, Outcome.SENT),
        (421, Outcome.DEFERRED),
        (451, Outcome.DEFERRED),
        (452, Outcome.DEFERRED),
        (550, Outcome.FAILED),
        (554, Outcome.FAILED),
        (None, Outcome.DEFERRED),
    ],
)
def test_classify_follows_rfc5321_reply_classes(code: int | None, outcome: Outcome) -> None:
    assert classify(code) is outcome


def test_split_enhanced_code() -> None:
    assert split_enhanced("5.1.1 <x@example.com>: no such user") == (
        "5.1.1",
        "<x@example.com>: no such user",
    )
    assert split_enhanced("4.7.0 Try later") == ("4.7.0", "Try later")
    assert split_enhanced("OK queued") == (None, "OK queued")
    assert split_enhanced("3.1.1 not a class") == (None, "3.1.1 not a class")


def test_retry_backoff_grows_exponentially_and_caps() -> None:
    policy = RetryPolicy(initial_delay=60, multiplier=2, max_delay=300, max_age=86400, jitter=0)
    delays = [_delay(policy, n) for n in range(1, 6)]
    assert delays == [60, 120, 240, 300, 300]


def _delay(policy: RetryPolicy, attempts: int) -> float:
    when = policy.next_attempt(attempts, T0, T0, 0.5)
    assert when is not None
    return (when - T0).total_seconds()


def test_retry_jitter_only_lengthens_the_delay() -> None:
    """RFC 5321 §4.5.4.1's minimum wait is a floor: jitter never shortens it."""
    policy = RetryPolicy(initial_delay=100, multiplier=2, max_delay=1000, max_age=86400, jitter=0.1)
    low = policy.next_attempt(1, T0, T0, 0.0)
    high = policy.next_attempt(1, T0, T0, 0.999999)
    assert low == T0 + timedelta(seconds=100)
    assert high is not None and T0 + timedelta(seconds=109.99) < high <= T0 + timedelta(seconds=110)


def test_retry_gives_up_after_max_age() -> None:
    policy = _policy(initial_delay=3600, max_age=7200)
    assert policy.next_attempt(1, T0, T0, 0.5) is not None
    assert policy.next_attempt(1, T0, T0 + timedelta(seconds=3599), 0.5) is not None
    assert policy.next_attempt(1, T0, T0 + timedelta(seconds=3601), 0.5) is None


def _decide(result: SendResult, pending: tuple[str, ...], delivered_before: int = 0) -> Decision:
    return decide(
        result,
        pending=pending,
        delivered_before=delivered_before,
        attempts=1,
        created_at=T0,
        now=T0,
        retry=_policy(),
        draw=0.5,
    )


def test_decide_sent_when_all_accepted() -> None:
    ok = RecipientResult(Outcome.SENT, 250, "ok")
    d = _decide(SendResult(Outcome.SENT, 250, "2.0.0", "ok", {"a@x.io": ok}), ("a@x.io",))
    assert d.state is State.SENT and d.pending == () and d.delivered == 1


def test_decide_partial_permanent_refusal_is_sent_for_the_others() -> None:
    result = SendResult(
        Outcome.SENT,
        250,
        None,
        "ok",
        {
            "a@x.io": RecipientResult(Outcome.SENT, 250, "ok"),
            "b@x.io": RecipientResult(Outcome.FAILED, 550, "5.1.1 no such user"),
        },
    )
    d = _decide(result, ("a@x.io", "b@x.io"))
    assert d.state is State.SENT and d.pending == () and d.delivered == 1


def test_decide_transient_recipient_stays_pending() -> None:
    result = SendResult(
        Outcome.SENT,
        250,
        None,
        "ok",
        {
            "a@x.io": RecipientResult(Outcome.SENT, 250, "ok"),
            "b@x.io": RecipientResult(Outcome.DEFERRED, 451, "4.2.1 busy"),
        },
    )
    d = _decide(result, ("a@x.io", "b@x.io"))
    assert d.state is State.DEFERRED
    assert d.pending == ("b@x.io",)
    assert d.next_attempt_at == T0 + timedelta(seconds=1800)


def test_decide_connection_failure_defers_everyone() -> None:
    d = _decide(SendResult(Outcome.DEFERRED, None, None, "refused"), ("a@x.io", "b@x.io"))
    assert d.state is State.DEFERRED and d.pending == ("a@x.io", "b@x.io")


def test_decide_all_refused_permanently_is_failed_unless_earlier_delivery() -> None:
    result = SendResult(Outcome.FAILED, 550, "5.1.1", "no such user")
    failed = _decide(result, ("b@x.io",))
    assert failed.state is State.FAILED and failed.pending == ("b@x.io",)  # for a manual retry
    assert _decide(result, ("b@x.io",), delivered_before=1).state is State.SENT


def test_giving_up_keeps_only_undelivered_recipients_pending() -> None:
    result = SendResult(
        Outcome.SENT,
        250,
        None,
        "ok",
        {
            "a@x.io": RecipientResult(Outcome.SENT, 250, "ok"),
            "b@x.io": RecipientResult(Outcome.DEFERRED, 451, "busy"),
            "c@x.io": RecipientResult(Outcome.FAILED, 550, "no such user"),
        },
    )
    late = T0 + timedelta(days=6)  # past max_age (5 days): retries give up
    d = decide(
        result,
        pending=("a@x.io", "b@x.io", "c@x.io"),
        delivered_before=0,
        attempts=9,
        created_at=T0,
        now=late,
        retry=_policy(),
        draw=0.5,
    )
    assert d.state is State.FAILED and d.pending == ("b@x.io", "c@x.io") and d.delivered == 1


def test_a_configuration_error_defers_without_counting_even_past_max_age() -> None:
    """Our relay credentials refused (535 5.7.8) is not the message's fault (issue 5 item 1)."""
    refused = SendResult(
        Outcome.DEFERRED, 535, "5.7.8", "5.7.8 Authentication credentials invalid", {}, True
    )
    for now in (T0, T0 + timedelta(days=30)):  # long past max_age: still no giving up
        d = decide(
            refused,
            pending=("a@x.io", "b@x.io"),
            delivered_before=1,
            attempts=40,  # a large count must not stretch the wait either
            created_at=T0,
            now=now,
            retry=_policy(),
            draw=0.0,
        )
        assert d == Decision(
            State.DEFERRED, ("a@x.io", "b@x.io"), 1, now + timedelta(seconds=1800), counted=False
        )


def test_a_configuration_error_is_never_final_whatever_its_reply_class() -> None:
    result = SendResult(Outcome.FAILED, 535, "5.7.8", "bad credentials", {}, config_error=True)
    d = _decide(result, ("a@x.io",))
    assert d.state is State.DEFERRED and not d.counted


@pytest.mark.parametrize(
    "result",
    [
        SendResult(Outcome.SENT, 250, "2.0.0", "ok"),
        SendResult(Outcome.DEFERRED, 451, "4.3.0", "later"),
        SendResult(Outcome.DEFERRED, None, None, "connection refused"),
        SendResult(Outcome.FAILED, 550, "5.1.1", "no such user"),
    ],
)
def test_every_other_attempt_counts(result: SendResult) -> None:
    assert _decide(result, ("a@x.io",)).counted


def test_recipients_the_transport_did_not_report_share_its_outcome() -> None:
    result = SendResult(
        Outcome.DEFERRED, 451, "4.3.0", "later", {"a@x.io": RecipientResult(Outcome.SENT, 250, "")}
    )
    d = _decide(result, ("a@x.io", "b@x.io"))
    assert d.state is State.DEFERRED and d.pending == ("b@x.io",) and d.delivered == 1


def test_the_programs_retry_defaults_follow_rfc5321(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 5321 §4.5.4.1: at least 30 minutes between tries, give up after 4–5 days.

    Checked on the policy the program runs with (Settings().retry.policy()), over the
    whole schedule and at both ends of the random draw.
    """
    monkeypatch.chdir(tmp_path)  # no .env
    for name in [n for n in os.environ if n.startswith("MAILGATE_")]:
        monkeypatch.delenv(name)
    policy = Settings().retry.policy()
    for draw in (0.0, 0.999999):
        waits, now, attempts = [], T0, 1
        while (when := policy.next_attempt(attempts, T0, now, draw)) is not None:
            waits.append(when - now)
            now, attempts = when, attempts + 1
        assert min(waits) >= timedelta(minutes=30)
        assert timedelta(days=4) <= now - T0 <= timedelta(days=5)  # the last try
