"""One OpenTelemetry span per delivery attempt, with the OpenTelemetry API only.

Without an SDK configured the API's tracer does nothing and costs next to nothing; a
deployment that installs ``opentelemetry-sdk`` and sets a tracer provider gets a
``mailgate.deliver`` span (kind CLIENT) for every attempt: where it went
(``smtp.host``, ``smtp.port``, ``smtp.security``), the envelope sender (``from``),
how many recipients (``to_count``, ``cc_count``), mailgate's id
(``mailgate.message_id``) and how it ended (``mailgate.outcome``, the SMTP code, the
failure class). Never a credential: only the fields named here are read, and a
transport's endpoint comes from its account's host, port and security fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from mailgate.deliver.transport import Outgoing, Transport
from mailgate.model import Account, AccountTransport, Outcome, SendResult

__all__ = ["SPAN_NAME", "AttemptSpan", "attempt_span"]

SPAN_NAME = "mailgate.deliver"
_TRACER_NAME = "mailgate"

Attributes = Mapping[str, str | int]


@dataclass(frozen=True, slots=True)
class AttemptSpan:
    """The attempt's span; :meth:`record` adds the outcome."""

    span: trace.Span

    def record(self, result: SendResult) -> SendResult:
        """Write the outcome on the span (ERROR unless sent) and hand the result back."""
        self.span.set_attribute("mailgate.outcome", result.status.value)
        if result.code is not None:
            self.span.set_attribute("smtp.response.code", result.code)
        if result.enhanced_code:
            self.span.set_attribute("smtp.response.enhanced_code", result.enhanced_code)
        if result.failure_class is not None:
            self.span.set_attribute("mailgate.failure_class", result.failure_class.value)
        if result.status is not Outcome.SENT:
            self.span.set_status(Status(StatusCode.ERROR, result.detail[:200]))
        return result


@contextmanager
def attempt_span(
    transport: Transport, outgoing: Outgoing, tracer: trace.Tracer | None = None
) -> Iterator[AttemptSpan]:
    """``with attempt_span(transport, outgoing) as span: span.record(await send())``.

    The tracer is the global provider's unless one is given; an exception escaping the
    block is recorded on the span (and re-raised) by the API.
    """
    tracer = tracer or trace.get_tracer(_TRACER_NAME)
    attributes = {**_message_attributes(outgoing), **endpoint_attributes(transport)}
    with tracer.start_as_current_span(
        SPAN_NAME, kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield AttemptSpan(span)


def _message_attributes(outgoing: Outgoing) -> Attributes:
    message = outgoing.message
    return {
        "mailgate.message_id": outgoing.envelope.message_id,
        "mailgate.tenant": outgoing.envelope.tenant,
        "mailgate.account": message.account,
        "from": outgoing.envelope.sender,
        "to_count": len(message.to),
        "cc_count": len(message.cc),
        "bcc_count": len(message.bcc),
    }


def endpoint_attributes(transport: Transport) -> Attributes:
    """``smtp.host``/``smtp.port``/``smtp.security`` and the transport's name.

    A transport may describe its endpoint with ``span_attributes()``; an SMTP transport
    of an account (``.account``) is read from the account's host, port and security
    fields only. Nothing else of the transport or the account is looked at.
    """
    described = getattr(transport, "span_attributes", None)
    found: dict[str, str | int] = {"mailgate.transport": transport.name}
    if callable(described):
        found.update(described())
        return found
    account = getattr(transport, "account", None)
    if isinstance(account, Account) and account.transport is AccountTransport.SMTP:
        if account.smtp_host:
            found["smtp.host"] = account.smtp_host
        if account.smtp_port:
            found["smtp.port"] = account.smtp_port
        found["smtp.security"] = account.smtp_security.value
    return found
