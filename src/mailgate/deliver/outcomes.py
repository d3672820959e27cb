"""How transports turn what they saw into :class:`SendResult` values, with a failure class.

A reply is classed by :func:`mailgate.policy.failure_class` (RFC 3463 enhanced
codes); a failure *without* a reply is classed here, where the exception still
says what went wrong: the TLS handshake (``tls``), silence (``timeout``) or the
line itself (``network``). ``auth`` and ``tls`` are account problems: they come
back as ``config_error`` results, retried without spending the message's attempts.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from mailgate.model import FailureClass, Outcome, RecipientResult, SendResult
from mailgate.policy import classify, failure_class, retry_after, split_enhanced

__all__ = [
    "all_refused",
    "config_error",
    "no_reply",
    "no_reply_class",
    "out_of_step",
    "reply_result",
    "setup_reply",
    "summary",
]

#: Classes that say nothing about the message: our login or our TLS policy.
ACCOUNT_PROBLEMS = frozenset({FailureClass.AUTH, FailureClass.TLS})


def summary(
    status: Outcome, code: int | None, text: str, recipients: Mapping[str, RecipientResult]
) -> SendResult:
    """A result from a reply: its enhanced code, class and "try again in N" (if it says)."""
    enhanced, _ = split_enhanced(text)
    if status is Outcome.SENT:
        return SendResult(status, code, enhanced, text, recipients)
    return SendResult(
        status,
        code,
        enhanced,
        text,
        recipients,
        failure_class=failure_class(code, enhanced, text),
        retry_after=retry_after(text),
    )


def reply_result(code: int, text: str) -> SendResult:
    return summary(classify(code), code, text, {})


def out_of_step(code: int, text: str) -> SendResult:
    """A reply that is not a refusal where aiosmtplib expected another (``250`` to DATA
    instead of ``354``, ``252`` to RCPT, ``354`` to MAIL): a server that answered a
    command twice, or a reply left over on a reused connection, puts every reply after
    it one command late (RFC 5321 §4.2: one reply per command). Nothing this server said
    in the transaction can be trusted, so it is never taken as "sent" (which would lose
    the message): transient for every recipient, on a new connection.
    """
    text = f"reply out of sequence: {code} {text}"
    return SendResult(Outcome.DEFERRED, code, None, text, {}, failure_class=FailureClass.PROTOCOL)


def setup_reply(code: int, text: str) -> SendResult:
    """A reply while setting up the session (greeting, EHLO, STARTTLS): never final.

    It is about the server, not the message; as Postfix's ``smtp_skip_5xx_greeting``
    does, even a 5xx here defers (RFC 5321 §3.1 lets a server answer 554 at the
    greeting while it refuses service for now). It still counts, so a relay that
    never comes back makes messages give up after ``max_age``.
    """
    return summary(Outcome.DEFERRED, code, text, {})


def config_error(code: int | None, text: str, cls: FailureClass = FailureClass.AUTH) -> SendResult:
    """Our side of the conversation failed (login refused, TLS required but impossible)."""
    enhanced, _ = split_enhanced(text)
    return SendResult(
        Outcome.DEFERRED, code, enhanced, text, {}, config_error=True, failure_class=cls
    )


def all_refused(results: Mapping[str, RecipientResult]) -> SendResult:
    """Every recipient refused: transient if any refusal was, so those get retried."""
    worst = next((r for r in results.values() if r.status is Outcome.DEFERRED), None)
    pick = worst or next(iter(results.values()))
    return summary(pick.status, pick.code, pick.text, results)


def no_reply_class(exc: BaseException) -> FailureClass:
    """``tls`` if a TLS error is anywhere in the chain, ``timeout``, else ``network``."""
    seen: BaseException | None = exc
    chain: list[BaseException] = []
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return FailureClass.TLS
    if any(isinstance(e, TimeoutError) for e in chain):
        return FailureClass.TIMEOUT
    return FailureClass.NETWORK


def no_reply(exc: BaseException) -> SendResult:
    """RFC 5321 §4.5.4.1: no answer at all is a transient failure.

    A failed TLS handshake or certificate check is an account problem (the
    configured server cannot be reached securely): retried, not counted.
    """
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cls = no_reply_class(exc)
    if cls is FailureClass.TLS:
        return config_error(None, detail, FailureClass.TLS)
    return SendResult(Outcome.DEFERRED, None, None, detail, {}, failure_class=cls)
