"""Pure delivery decisions: classify SMTP replies, schedule retries, settle a message.

Nothing here sleeps, sends or reads the clock; callers pass ``now`` and the random
draw used for jitter, which keeps every rule testable with plain values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgate.model import Outcome, RecipientResult, SendResult, State

__all__ = ["Decision", "RetryPolicy", "classify", "decide", "split_enhanced"]

# RFC 3463 §2: class "." subject "." detail; class is 2, 4 or 5.
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


def classify(code: int | None) -> Outcome:
    """RFC 5321 §4.2.1: 2yz is success, 4yz transient, 5yz permanent.

    ``None`` stands for "no reply at all" (timeout, refused or dropped connection),
    which RFC 5321 §4.5.4.1 treats as transient.
    """
    if code is None:
        return Outcome.DEFERRED
    if 200 <= code < 400:
        return Outcome.SENT
    if 500 <= code < 600:
        return Outcome.FAILED
    return Outcome.DEFERRED


def split_enhanced(text: str) -> tuple[str | None, str]:
    """Split a reply text into its RFC 3463 enhanced status code and the rest."""
    match = _ENHANCED.match(text)
    if not match:
        return None, text
    return ".".join(match.groups()), text[match.end() :]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    Defaults follow RFC 5321 §4.5.4.1: wait at least 30 minutes between tries and
    keep trying for at least 4–5 days before giving up.
    """

    initial_delay: float = 1800.0  #: seconds before the second attempt
    multiplier: float = 2.0
    max_delay: float = 4 * 3600.0
    max_age: float = 5 * 86400.0  #: give up this long after the message was queued
    jitter: float = 0.1  #: ± fraction of the delay drawn at random

    def next_attempt(
        self, attempts: int, created_at: datetime, now: datetime, draw: float
    ) -> datetime | None:
        """When to try again after ``attempts`` tries, or ``None`` to give up.

        ``draw`` is a number in [0, 1) from the caller's random source.
        """
        delay = min(self.initial_delay * self.multiplier ** max(attempts - 1, 0), self.max_delay)
        delay *= 1 + self.jitter * (2 * draw - 1)
        when = now + timedelta(seconds=max(delay, 0.0))
        if when > created_at + timedelta(seconds=self.max_age):
            return None
        return when


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a message goes after an attempt."""

    state: State
    pending: tuple[str, ...]  #: recipients still to be tried
    delivered: int  #: recipients accepted so far, this attempt included
    next_attempt_at: datetime | None


def recipient_outcomes(result: SendResult, recipients: Iterable[str]) -> dict[str, RecipientResult]:
    """Per-recipient results; recipients the transport did not report share its outcome."""
    fallback = RecipientResult(result.status, result.code, result.detail)
    return {rcpt: result.recipients.get(rcpt, fallback) for rcpt in recipients}


def decide(
    result: SendResult,
    *,
    pending: tuple[str, ...],
    delivered_before: int,
    attempts: int,
    created_at: datetime,
    now: datetime,
    retry: RetryPolicy,
    draw: float,
) -> Decision:
    """Settle a message after its ``attempts``-th try.

    Recipients accepted or refused for good leave the pending list; those that failed
    transiently stay for the next try. The message is ``sent`` once nothing is pending
    and at least one recipient was accepted, ``failed`` if none ever was or retries gave
    up. A failed message keeps its undelivered recipients as pending, so a manual retry
    goes to them and never again to those who already have it.
    """
    outcomes = recipient_outcomes(result, pending)
    delivered = delivered_before + sum(r.status is Outcome.SENT for r in outcomes.values())
    still = tuple(rcpt for rcpt, r in outcomes.items() if r.status is Outcome.DEFERRED)
    undelivered = tuple(rcpt for rcpt, r in outcomes.items() if r.status is not Outcome.SENT)
    if still:
        when = retry.next_attempt(attempts, created_at, now, draw)
        if when is not None:
            return Decision(State.DEFERRED, still, delivered, when)
        return Decision(State.FAILED, undelivered, delivered, None)
    if delivered:
        return Decision(State.SENT, (), delivered, None)
    return Decision(State.FAILED, undelivered, delivered, None)
