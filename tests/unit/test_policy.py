import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailgate.model import FailureClass, Outcome, RecipientResult, SendResult, State
from mailgate.policy import (
    Decision,
    RetryPolicy,
    attempt_class,
    classify,
    decide,
    split_enhanced,
)
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
        "max_attempts": 100,
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
    policy = _policy(initial_delay=60, multiplier=2, max_delay=300, max_age=86400)
    delays = [_delay(policy, n) for n in range(1, 6)]
    assert delays == [60, 120, 240, 300, 300]


def _delay(policy: RetryPolicy, attempts: int) -> float:
    when = policy.next_attempt(attempts, T0, T0, 0.5)
    assert when is not None
    return (when - T0).total_seconds()


def test_retry_jitter_spreads_the_delay_both_ways() -> None:
    """±20 %: a burst deferred together does not come back together (issue 6)."""
    policy = _policy(initial_delay=100, max_delay=1000, max_age=86400, jitter=0.2)
    low = policy.next_attempt(1, T0, T0, 0.0)
    middle = policy.next_attempt(1, T0, T0, 0.5)
    high = policy.next_attempt(1, T0, T0, 0.999999)
    assert low == T0 + timedelta(seconds=80)
    assert middle == T0 + timedelta(seconds=100)
    assert high is not None and T0 + timedelta(seconds=119.99) < high <= T0 + timedelta(seconds=120)


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


def test_the_programs_retry_defaults_are_the_issues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 6: base 60 s, ×2, ±20 % jitter, cap 1 h; give up after 10 attempts.

    Checked on the policy the program runs with (Settings().retry.policy()), over the
    whole schedule and at both ends of the random draw.
    """
    monkeypatch.chdir(tmp_path)  # no .env
    for name in [n for n in os.environ if n.startswith("MAILGATE_")]:
        monkeypatch.delenv(name)
    policy = Settings().retry.policy()
    plain = [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    for draw, factor in ((0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)):
        waits, now, attempts = [], T0, 1
        while (when := policy.next_attempt(attempts, T0, now, draw)) is not None:
            waits.append((when - now).total_seconds())
            now, attempts = when, attempts + 1
        assert waits == pytest.approx([w * factor for w in plain], rel=1e-5)
        assert attempts == 10  # the tenth attempt is the last
    assert policy.max_age == 3 * 86400


def test_giving_up_on_age_comes_first_when_it_is_shorter() -> None:
    policy = _policy(initial_delay=3600, multiplier=1, max_age=3 * 86400)
    assert policy.next_attempt(1, T0, T0 + timedelta(days=2, hours=22), 0.5) is not None
    assert policy.next_attempt(1, T0, T0 + timedelta(days=2, hours=23, minutes=1), 0.5) is None


def test_retry_gives_up_after_max_attempts() -> None:
    policy = _policy(initial_delay=60, max_attempts=3)
    assert policy.next_attempt(2, T0, T0, 0.5) is not None
    assert policy.next_attempt(3, T0, T0, 0.5) is None


def test_expired_is_failed_with_the_reason_and_the_last_reply() -> None:
    busy = SendResult(Outcome.DEFERRED, 451, "4.3.0", "4.3.0 mailbox busy")
    d = decide(
        busy,
        pending=("a@x.io",),
        delivered_before=0,
        attempts=10,
        created_at=T0,
        now=T0,
        retry=_policy(max_attempts=10),
        draw=0.5,
    )
    assert d.state is State.FAILED and d.reason == "expired" and d.pending == ("a@x.io",)
    assert d.last_error == "expired after 10 attempts: 4.3.0 mailbox busy"


def test_a_reply_asking_for_a_longer_wait_is_honoured() -> None:
    """451 "try again in 2 seconds" waits at least 2 s even when the backoff is shorter."""
    retry = _policy(initial_delay=0.2)
    asked = SendResult(Outcome.DEFERRED, 451, "4.7.1", "4.7.1 try again in 2 seconds")
    assert _decide_with(asked, retry).next_attempt_at == T0 + timedelta(seconds=2)
    told = replace(asked, detail="later", retry_after=5.0)  # a transport that parsed it
    assert _decide_with(told, retry).next_attempt_at == T0 + timedelta(seconds=5)
    short = SendResult(Outcome.DEFERRED, 451, "4.7.1", "4.7.1 try again in 2 seconds")
    longer = _decide_with(short, _policy(initial_delay=60)).next_attempt_at
    assert longer == T0 + timedelta(seconds=60)  # never shorter than the backoff


def test_a_recipients_reply_asking_for_a_wait_is_honoured() -> None:
    result = SendResult(
        Outcome.SENT,
        250,
        None,
        "ok",
        {
            "a@x.io": RecipientResult(Outcome.SENT, 250, "ok"),
            "b@x.io": RecipientResult(Outcome.DEFERRED, 450, "4.2.1 retry in 3 minutes"),
        },
    )
    d = decide(
        result,
        pending=("a@x.io", "b@x.io"),
        delivered_before=0,
        attempts=1,
        created_at=T0,
        now=T0,
        retry=_policy(initial_delay=1),
        draw=0.5,
    )
    assert d.next_attempt_at == T0 + timedelta(minutes=3)


def _decide_with(result: SendResult, retry: RetryPolicy) -> Decision:
    return decide(
        result,
        pending=("a@x.io",),
        delivered_before=0,
        attempts=1,
        created_at=T0,
        now=T0,
        retry=retry,
        draw=0.5,
    )


@pytest.mark.parametrize("failure", [FailureClass.AUTH, FailureClass.TLS])
def test_an_account_problem_waits_uncounted_even_at_max_attempts(failure: FailureClass) -> None:
    refused = SendResult(Outcome.DEFERRED, 535, "5.7.8", "5.7.8 bad credentials")
    d = decide(
        refused,
        pending=("a@x.io",),
        delivered_before=0,
        attempts=50,
        created_at=T0,
        now=T0 + timedelta(days=9),
        retry=_policy(max_attempts=3, max_age=60),
        draw=0.5,
        failure=failure,
    )
    assert d.state is State.DEFERRED and not d.counted
    assert d.next_attempt_at == T0 + timedelta(days=9, seconds=1800)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (SendResult(Outcome.SENT, 250, "2.0.0", "ok"), None),
        (SendResult(Outcome.FAILED, 550, "5.1.1", "5.1.1 no such user"), "invalid_recipient"),
        (SendResult(Outcome.DEFERRED, 452, "4.2.2", "4.2.2 mailbox full"), "mailbox_full"),
        (SendResult(Outcome.DEFERRED, 535, "5.7.8", "bad credentials"), "auth"),
        (SendResult(Outcome.DEFERRED, 421, "4.7.0", "slow down"), "throttled"),
        (
            SendResult(Outcome.DEFERRED, None, None, "reset", failure_class=FailureClass.NETWORK),
            "network",
        ),
        (
            SendResult(
                Outcome.SENT,
                250,
                None,
                "ok",
                {
                    "a@x.io": RecipientResult(Outcome.SENT, 250, "ok"),
                    "b@x.io": RecipientResult(Outcome.FAILED, 550, "5.1.1 no such user"),
                },
            ),
            "invalid_recipient",
        ),
    ],
)
def test_every_failed_attempt_gets_a_class(result: SendResult, expected: str | None) -> None:
    """From the transport when it knows the stage, else from the reply (per recipient)."""
    assert attempt_class(result, ("a@x.io", "b@x.io")) == expected


def test_an_account_overrides_the_retry_numbers() -> None:
    policy = _policy(initial_delay=60, max_attempts=10)
    mine = policy.overridden({"max_attempts": 3.0, "initial_delay": 5, "colour": 1})
    assert mine.max_attempts == 3 and isinstance(mine.max_attempts, int)
    assert mine.initial_delay == 5 and mine.multiplier == policy.multiplier
    assert policy.overridden({}) is policy
