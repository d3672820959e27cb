"""Pure delivery decisions: classify SMTP replies, schedule retries, settle a message.

Nothing here sleeps, sends or reads the clock; callers pass ``now`` and the random
draw used for jitter, which keeps every rule testable with plain values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from mailgate.model import FailureClass, Outcome, RecipientResult, SendResult, State

__all__ = [
    "ACCOUNT_PROBLEMS",
    "Decision",
    "RetryPolicy",
    "attempt_class",
    "classify",
    "decide",
    "failure_class",
    "recipient_outcomes",
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
    place, :class:`mailgate.settings.RetrySettings` (issue 6: base 60 s, ×2, ±20 %,
    cap 1 h; give up after 10 attempts or 3 days). An account may override any of
    them (:meth:`overridden`).
    """

    initial_delay: float  #: seconds before the second attempt
    multiplier: float  #: backoff factor between attempts
    max_delay: float  #: longest wait between attempts, before jitter
    max_age: float  #: give up this long after the message was queued
    jitter: float  #: each delay is moved by up to ± this fraction, at random
    max_attempts: int  #: give up after this many counted attempts

    def delay(self, attempts: int, draw: float) -> timedelta:
        """The wait after ``attempts`` tries; ``draw`` is a number in [0, 1).

        Jitter spreads retries both ways (``draw`` 0.5 is the plain backoff), so a
        burst deferred together does not come back together.
        """
        try:
            grown = self.initial_delay * self.multiplier ** max(attempts - 1, 0)
        except OverflowError:  # a big multiplier many attempts in: far past max_delay
            grown = math.inf
        delay = min(grown, self.max_delay)
        delay *= 1 + self.jitter * (2 * draw - 1)
        return timedelta(seconds=max(delay, 0.0))

    def next_attempt(
        self,
        attempts: int,
        created_at: datetime,
        now: datetime,
        draw: float,
        *,
        at_least: float | None = None,
    ) -> datetime | None:
        """When to try again after ``attempts`` tries, or ``None`` to give up.

        ``at_least``: seconds the server asked us to wait ("try again in 2 seconds");
        the backoff is never shorter than that.
        """
        if attempts >= self.max_attempts:
            return None
        if at_least is not None and at_least > self.max_age:
            return None  # past max_age whenever it is asked; a timedelta may not hold it
        delay = max(self.delay(attempts, draw), timedelta(seconds=at_least or 0.0))
        when = now + delay
        if when > created_at + timedelta(seconds=self.max_age):
            return None
        return when

    def overridden(self, overrides: Mapping[str, float]) -> RetryPolicy:
        """This policy with an account's own numbers (unknown names are ignored)."""
        known: dict[str, Any] = {k: v for k, v in overrides.items() if k in _RETRY_FIELDS}
        if "max_attempts" in known:
            known["max_attempts"] = int(known["max_attempts"])
        return replace(self, **known) if known else self


_RETRY_FIELDS = frozenset(f.name for f in fields(RetryPolicy))


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a message goes after an attempt."""

    state: State
    pending: tuple[str, ...]  #: recipients still to be tried
    delivered: int  #: recipients accepted so far, this attempt included
    next_attempt_at: datetime | None
    #: False: the attempt failed for a reason that is not the message's (a configuration
    #: error, the account's login or TLS): it is recorded, but does not count towards
    #: backoff or giving up.
    counted: bool = True
    reason: str | None = None  #: why it ended this way, when not the reply itself: "expired"
    last_error: str | None = None  #: what the message shows instead of the attempt's text
    wait_reason: str | None = None  #: why it is held though due (the account's problem)


#: Failure classes that are the account's problem, not the message's: its messages wait
#: without spending attempts, and go once the account works again (issue 6).
ACCOUNT_PROBLEMS = frozenset({FailureClass.AUTH, FailureClass.TLS})


def recipient_outcomes(result: SendResult, recipients: Iterable[str]) -> dict[str, RecipientResult]:
    """Per-recipient results; recipients the transport did not report share its outcome."""
    fallback = RecipientResult(result.status, result.code, result.detail)
    return {rcpt: result.recipients.get(rcpt, fallback) for rcpt in recipients}


def attempt_class(result: SendResult, pending: Iterable[str]) -> FailureClass | None:
    """The class of an attempt: ``None`` if every recipient was accepted.

    A transport that knows the stage (no reply, TLS, our login) sets the class
    itself; otherwise it comes from the reply: the attempt's own when it failed
    as a whole, else the first recipient refused (RFC 5321 §3.3: RCPT replies
    are per recipient).
    """
    if result.failure_class is not None:
        return result.failure_class
    if result.status is not Outcome.SENT:
        return failure_class(result.code, result.enhanced_code, result.detail)
    for r in recipient_outcomes(result, pending).values():
        if r.status is not Outcome.SENT:
            return failure_class(r.code, split_enhanced(r.text)[0], r.text)
    return None


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
    failure: FailureClass | None = None,
) -> Decision:
    """Settle a message after its ``attempts``-th try.

    Recipients accepted or refused for good leave the pending list; those that failed
    transiently stay for the next try, no sooner than the server asked ("try again in
    N seconds"). The message is ``sent`` once nothing is pending and at least one
    recipient was accepted, ``failed`` if none ever was, or ``failed`` with reason
    ``expired`` when retries give up. A failed message keeps its undelivered recipients
    as pending, so a manual retry goes to them and never again to those who already
    have it.

    A configuration error (``result.config_error``) or an account problem (``failure``
    in :data:`ACCOUNT_PROBLEMS`) is not the message's fault: see :func:`_not_the_message`.
    """
    if result.config_error or failure in ACCOUNT_PROBLEMS:
        return _not_the_message(pending, delivered_before, now, retry, draw)
    outcomes = recipient_outcomes(result, pending)
    delivered = delivered_before + sum(r.status is Outcome.SENT for r in outcomes.values())
    still = tuple(rcpt for rcpt, r in outcomes.items() if r.status is Outcome.DEFERRED)
    undelivered = tuple(rcpt for rcpt, r in outcomes.items() if r.status is not Outcome.SENT)
    if still:
        asked = _asked_wait(result, [outcomes[r] for r in still])
        when = retry.next_attempt(attempts, created_at, now, draw, at_least=asked)
        if when is not None:
            return Decision(State.DEFERRED, still, delivered, when)
        last = f"expired after {attempts} attempts: {outcomes[still[0]].text}"
        return Decision(
            State.FAILED, undelivered, delivered, None, reason="expired", last_error=last
        )
    if delivered:
        return Decision(State.SENT, (), delivered, None)
    return Decision(State.FAILED, undelivered, delivered, None)


def _asked_wait(result: SendResult, deferred: Iterable[RecipientResult]) -> float | None:
    """The longest wait the server asked for, in the reply or a recipient's reply."""
    asked = [
        result.retry_after,
        retry_after(result.detail),
        *(retry_after(r.text) for r in deferred),
    ]
    found = [a for a in asked if a is not None]
    return max(found) if found else None


def _not_the_message(
    pending: tuple[str, ...], delivered: int, now: datetime, retry: RetryPolicy, draw: float
) -> Decision:
    """Defer without counting the attempt, as Postfix's ``smtp_sasl_auth_soft_bounce`` does.

    Nothing was said about the message, so it neither backs off further nor gives up
    (not even past ``max_age`` or ``max_attempts``): it is sent once the account is
    fixed. It is tried again after the first backoff step, so a fixed account is
    picked up soon and a broken one is not hammered.
    """
    return Decision(State.DEFERRED, pending, delivered, now + retry.delay(1, draw), counted=False)
