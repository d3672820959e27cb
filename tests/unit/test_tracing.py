"""One OpenTelemetry span per attempt, recorded by a real (minimal) implementation of the API.

``opentelemetry-sdk`` is not installed; :class:`RecordingProvider` implements the API's
``TracerProvider``/``Tracer``/``Span`` and keeps what it is given, the way the SDK's
in-memory exporter would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue

from mailgate.deliver.tracing import SPAN_NAME, attempt_span
from mailgate.deliver.transport import Envelope, Outgoing
from mailgate.mime import build_message
from mailgate.model import (
    Account,
    AccountTransport,
    FailureClass,
    Outcome,
    SendResult,
    SmtpSecurity,
)
from tests.builders import make_message

PASSWORD = "pa55-w0rd-never-traced"


class RecordingSpan(trace.Span):
    def __init__(self, name: str, kind: SpanKind, attributes: Attributes) -> None:
        self.name = name
        self.kind = kind
        self.attributes: dict[str, Any] = dict(attributes or {})
        self.status = Status(StatusCode.UNSET)
        self.exceptions: list[BaseException] = []
        self.ended = False

    def end(self, end_time: int | None = None) -> None:
        self.ended = True

    def get_span_context(self) -> SpanContext:
        return trace.INVALID_SPAN_CONTEXT

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        self.attributes.update(attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        pass

    def update_name(self, name: str) -> None:
        self.name = name

    def is_recording(self) -> bool:
        return not self.ended

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self.exceptions.append(exception)


class RecordingTracer(trace.Tracer):
    def __init__(self) -> None:
        self.spans: list[RecordingSpan] = []

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> RecordingSpan:
        span = RecordingSpan(name, kind, attributes)
        self.spans.append(span)
        return span

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception):
            yield span


class RecordingProvider(trace.TracerProvider):
    def __init__(self) -> None:
        self.tracer = RecordingTracer()

    def get_tracer(self, *args: Any, **kwargs: Any) -> RecordingTracer:
        return self.tracer


class SmtpLike:
    """A transport described like the SMTP one: an account with credentials."""

    name = "smtp://mail.example.com:587"

    def __init__(self) -> None:
        self.account = Account(
            "shop",
            "default",
            AccountTransport.SMTP,
            smtp_host="mail.example.com",
            smtp_port=587,
            smtp_security=SmtpSecurity.STARTTLS,
            smtp_username="user",
            smtp_password=PASSWORD,
            dkim_domain="example.com",
            dkim_selector="s1",
            dkim_private_key=PASSWORD,
        )

    async def send(self, outgoing: Outgoing) -> SendResult:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def outgoing() -> Outgoing:
    message = make_message(
        sender="Shop <shop@example.com>", to=("a@x.com", "b@x.com"), cc=("c@x.com",)
    )
    envelope = Envelope("shop@example.com", ("a@x.com", "b@x.com", "c@x.com"), message.id)
    return Outgoing(message, envelope, build_message)


@pytest.fixture(scope="module")
def provider() -> RecordingProvider:
    """The process's global provider (the API lets it be set once), as a deployment would."""
    current = trace.get_tracer_provider()
    if isinstance(current, RecordingProvider):
        return current
    recording = RecordingProvider()
    trace.set_tracer_provider(recording)
    return recording


def test_a_failed_attempt_is_one_span_with_its_endpoint_and_outcome(
    provider: RecordingProvider,
) -> None:
    before = len(provider.tracer.spans)
    out = outgoing()
    failed = SendResult(
        Outcome.FAILED, 550, "5.1.1", "no such user", failure_class=FailureClass.INVALID_RECIPIENT
    )
    with attempt_span(SmtpLike(), out) as span:
        span.record(failed)
    [recorded] = provider.tracer.spans[before:]
    assert (recorded.name, recorded.kind, recorded.ended) == (SPAN_NAME, SpanKind.CLIENT, True)
    assert recorded.attributes == {
        "smtp.host": "mail.example.com",
        "smtp.port": 587,
        "smtp.security": "starttls",
        "from": "shop@example.com",
        "to_count": 2,
        "cc_count": 1,
        "bcc_count": 0,
        "mailgate.message_id": out.message.id,
        "mailgate.transport": "smtp://mail.example.com:587",
        "mailgate.tenant": "default",
        "mailgate.account": "default",
        "mailgate.outcome": "failed",
        "smtp.response.code": 550,
        "smtp.response.enhanced_code": "5.1.1",
        "mailgate.failure_class": "invalid_recipient",
    }
    assert recorded.status.status_code is StatusCode.ERROR


def test_a_sent_attempt_has_no_error_status() -> None:
    tracer = RecordingTracer()
    with attempt_span(SmtpLike(), outgoing(), tracer) as span:
        span.record(SendResult(Outcome.SENT, 250, "2.0.0", "ok"))
    [recorded] = tracer.spans
    assert recorded.attributes["mailgate.outcome"] == "sent"
    assert recorded.status.status_code is StatusCode.UNSET


def test_credentials_never_reach_the_span() -> None:
    tracer = RecordingTracer()
    with pytest.raises(RuntimeError), attempt_span(SmtpLike(), outgoing(), tracer) as span:
        span.record(SendResult(Outcome.DEFERRED, 535, "5.7.8", "auth failed"))
        raise RuntimeError("transport bug")
    [recorded] = tracer.spans
    assert PASSWORD not in repr(recorded.attributes) and "user" not in recorded.attributes.values()
    assert [type(e) for e in recorded.exceptions] == [RuntimeError] and recorded.ended
