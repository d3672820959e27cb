"""Pure delivery decisions: classify SMTP replies, schedule retries, settle a message.

Nothing here sleeps, sends or reads the clock; callers pass ``now`` and the random
draw used for jitter, which keeps every rule testable with plain values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgate.model import FailureClass, Outcome, RecipientResult, SendResult, State

__all__ = [
    "Decision",
    "RetryPolicy",
    "classify",
    "decide",
    "failure_class",
    "retry_after",
    "split_enhanced",
]

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


#: Reply texts that mean "slow down" whatever their code (Gmail, Microsoft, Yahoo wording).
_THROTTLE_WORDS = re.compile(
    r"rate limit|too many (messages|connections|recipients)|try again later|throttl|slow down",
    re.IGNORECASE,
)


def failure_class(code: int | None, enhanced: str | None, text: str = "") -> FailureClass:
    """The class of a refusal the server *replied* with (RFC 3463 §3, RFC 5321 §4.2.3).

    Failures without a reply (timeout, dropped line, TLS) are classed where they
    happen, by the transport, which knows the stage.
    """
    subject, detail = _subject_detail(enhanced)
    transient = code is not None and code < 500
    if code in _AUTH_CODES:
        return FailureClass.AUTH
    if code == 421 or (transient and _slow_down(subject, detail, text)):
        return FailureClass.THROTTLED
    if subject == 1:
        return FailureClass.INVALID_RECIPIENT
    if (subject, detail) == (2, 2):
        return FailureClass.MAILBOX_FULL
    if subject == 7:
        return FailureClass.POLICY
    if subject == 6 or code == 552:
        return FailureClass.CONTENT
    if subject == 5 or code in _SYNTAX_CODES:
        return FailureClass.PROTOCOL
    return FailureClass.OTHER


#: RFC 4954 §6: 530 authentication required, 534 mechanism too weak, 535 credentials
#: invalid, 538 encryption required for the mechanism: our login, not the message.
_AUTH_CODES = frozenset({530, 534, 535, 538})
_SYNTAX_CODES = frozenset({500, 501, 502, 503, 504})  #: RFC 5321 §4.2.3


def _slow_down(subject: int | None, detail: int | None, text: str) -> bool:
    """4.7.x (policy, often rate or reputation), 4.2.1 (mailbox busy), or rate words."""
    return subject == 7 or (subject, detail) == (2, 1) or bool(_THROTTLE_WORDS.search(text))


def _subject_detail(enhanced: str | None) -> tuple[int | None, int | None]:
    if not enhanced:
        return None, None
    _, subject, detail = enhanced.split(".")
    return int(subject), int(detail)


_RETRY_IN = re.compile(
    r"(?:try|retry|again)[^0-9]{0,30}?(?:in|after)\s+(\d{1,6})\s*"
    r"(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?)\b",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def retry_after(text: str) -> float | None:
    """Seconds a reply asks us to wait ("451 4.7.1 try again in 2 seconds"), if it says."""
    match = _RETRY_IN.search(text)
    if match is None:
        return None
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()])


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, and when to give up.

    A plain value without defaults: the numbers the program runs with live in one
    place, :class:`mailgate.settings.RetrySettings`, with their RFC 5321 §4.5.4.1
    reasons (wait at least 30 minutes between tries, keep trying 4–5 days).
    """

    initial_delay: float  #: seconds before the second attempt
    multiplier: float  #: backoff factor between attempts
    max_delay: float  #: longest wait between attempts, before jitter
    max_age: float  #: give up this long after the message was queued
    jitter: float  #: up to this fraction is added to each delay at random

    def delay(self, attempts: int, draw: float) -> timedelta:
        """The wait after ``attempts`` tries; ``draw`` is a number in [0, 1).

        Jitter only ever lengthens the wait, so ``initial_delay`` stays a floor
        (RFC 5321 §4.5.4.1 asks for at least 30 minutes, not 30 minutes on average).
        """
        delay = min(self.initial_delay * self.multiplier ** max(attempts - 1, 0), self.max_delay)
        delay *= 1 + self.jitter * draw
        return timedelta(seconds=max(delay, 0.0))

    def next_attempt(
        self, attempts: int, created_at: datetime, now: datetime, draw: float
    ) -> datetime | None:
        """When to try again after ``attempts`` tries, or ``None`` to give up."""
        when = now + self.delay(attempts, draw)
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
    #: False: the attempt failed for a reason that is not the message's (a configuration
    #: error): it is recorded, but does not count towards backoff or giving up.
    counted: bool = True


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

    A configuration error (``result.config_error``: our relay credentials refused) is
    not the message's fault: see :func:`_not_the_message`.
    """
    if result.config_error:
        return _not_the_message(pending, delivered_before, now, retry, draw)
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


def _not_the_message(
    pending: tuple[str, ...], delivered: int, now: datetime, retry: RetryPolicy, draw: float
) -> Decision:
    """Defer without counting the attempt, as Postfix's ``smtp_sasl_auth_soft_bounce`` does.

    Nothing was said about the message, so it neither backs off further nor gives up
    (not even past ``max_age``): it is sent once the configuration is fixed. It is
    tried again after the first backoff step, so a fixed configuration is picked up
    soon and a broken one is not hammered.
    """
    return Decision(State.DEFERRED, pending, delivered, now + retry.delay(1, draw), counted=False)
