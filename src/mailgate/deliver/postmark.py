"""Postmark transport: ``POST {base_url}/email`` with the message's fields, never its MIME.

Postmark's API answers (postmarkapp.com/developer/api/overview, "HTTP response
codes" and "API error codes"):

* ``200`` with ``ErrorCode`` 0: accepted; ``MessageID`` is its id (``remote_id``).
  ``Message`` may say "Message OK, but will not deliver to these inactive
  addresses: …": those recipients failed, the others were sent.
* ``401``: missing or wrong server token: the account's problem (class ``auth``).
* ``422`` with an ``ErrorCode``: 300 invalid email request and 406 inactive
  recipient (hard bounce, spam complaint, manual suppression) fail the recipients
  (``invalid_recipient``); 10 bad token and 400/401 sender signature not found or
  not confirmed, 405 not allowed to send, 412 account pending, 413 account may not
  send are the account's problems (``auth``/``policy``: retried, not counted); 411
  forbidden attachment type and other content errors fail the message (``content``).
* ``429``: rate limit: deferred ``throttled``, honouring ``Retry-After``.
* ``5xx`` (500 internal error, 503 maintenance), time-outs, refused connections:
  deferred, like an SMTP 4xx.

The whole POST is bounded by ``timeout`` (httpx's own is per read, so an answer
dripped a byte at a time would hold the message, and a dispatcher slot, for ever),
and at most 64 KiB of the answer is read: Postmark's are a few hundred bytes, and a
huge one must not be held in memory.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from mailgate.deliver.fetch import response_head
from mailgate.deliver.outcomes import no_reply_class
from mailgate.deliver.postmark_request import email_fields
from mailgate.deliver.transport import Outgoing
from mailgate.model import FailureClass, Outcome, RecipientResult, SendResult

__all__ = ["PostmarkTransport"]

#: Postmark ErrorCodes that refuse the recipients (invalid email request, inactive recipient)
_RECIPIENT_CODES = frozenset({300, 406})
#: ErrorCodes that are the account's setup: bad token, sender signature, not allowed to send
_ACCOUNT_CODES = {10: FailureClass.AUTH, 400: FailureClass.AUTH, 401: FailureClass.AUTH}
_ACCOUNT_CODES |= {405: FailureClass.POLICY, 412: FailureClass.POLICY, 413: FailureClass.POLICY}
_KEEP = 64 * 1024  #: answer bytes read; the rest is not
_INACTIVE = re.compile(r"(?:inactive addresses|Found inactive addresses):\s*(.+?)(?:\.\s|\.?$)")


class PostmarkTransport:
    """One Postmark server (its token); ``aclose()`` closes the HTTP client."""

    name = "postmark"

    def __init__(self, token: str, *, base_url: str, timeout: float) -> None:
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            headers={"Accept": "application/json", "X-Postmark-Server-Token": token},
        )

    async def send(self, outgoing: Outgoing) -> SendResult:
        # url/path attachments resolved; UnbuildableMessage goes through to the dispatcher
        prepared = await outgoing.content()
        body = email_fields(prepared.message, outgoing.envelope.recipients)
        try:
            async with asyncio.timeout(self._timeout):
                response, content = await self._post(body)
        except httpx.HTTPError as exc:  # refused, reset, timed out, TLS
            return _no_answer(exc)
        except TimeoutError:
            text = f"no answer in {self._timeout:g} s"
            return SendResult(
                Outcome.DEFERRED, None, None, text, {}, failure_class=FailureClass.TIMEOUT
            )
        return _answer(response, content, outgoing.envelope.recipients)

    async def _post(self, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
        """The answer and at most ``_KEEP`` bytes of its body (the connection is closed
        if there was more)."""
        async with self._client.stream("POST", "/email", json=body) as response:
            return response, await response_head(response, _KEEP)

    async def aclose(self) -> None:
        await self._client.aclose()


def _no_answer(exc: httpx.HTTPError) -> SendResult:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    timeout = isinstance(exc, httpx.TimeoutException)
    cls = FailureClass.TIMEOUT if timeout else no_reply_class(exc)
    config = cls is FailureClass.TLS
    return SendResult(
        Outcome.DEFERRED, None, None, detail, {}, config_error=config, failure_class=cls
    )


def _answer(response: httpx.Response, content: bytes, recipients: tuple[str, ...]) -> SendResult:
    body = _json(content)
    error_code = int(body.get("ErrorCode", -1)) if str(body.get("ErrorCode", "")).isdigit() else -1
    text = f"Postmark {response.status_code}: {body.get('Message') or response.reason_phrase}"
    if response.status_code == 200 and error_code == 0:
        return _sent(body, text, recipients)
    if response.status_code == 401:
        return _deferred(text, recipients, FailureClass.AUTH, config=True)
    if response.status_code == 429:
        return _deferred(text, recipients, FailureClass.THROTTLED, after=_retry_after(response))
    if response.status_code == 422:
        return _refused(error_code, text, recipients)
    return _deferred(text, recipients, FailureClass.OTHER)


def _sent(body: Mapping[str, Any], text: str, recipients: tuple[str, ...]) -> SendResult:
    inactive = _inactive(str(body.get("Message", "")))
    results = {
        r: RecipientResult(Outcome.FAILED if r.lower() in inactive else Outcome.SENT, None, text)
        for r in recipients
    }
    remote_id = str(body["MessageID"]) if body.get("MessageID") else None
    return SendResult(Outcome.SENT, None, None, text, results, remote_id=remote_id)


def _refused(error_code: int, text: str, recipients: tuple[str, ...]) -> SendResult:
    text = f"{text} (ErrorCode {error_code})"
    if error_code in _ACCOUNT_CODES:
        return _deferred(text, recipients, _ACCOUNT_CODES[error_code], config=True)
    cls = FailureClass.INVALID_RECIPIENT if error_code in _RECIPIENT_CODES else FailureClass.CONTENT
    failed = RecipientResult(Outcome.FAILED, None, text)
    return SendResult(
        Outcome.FAILED, None, None, text, dict.fromkeys(recipients, failed), failure_class=cls
    )


def _deferred(
    text: str,
    recipients: tuple[str, ...],
    cls: FailureClass,
    *,
    config: bool = False,
    after: float | None = None,
) -> SendResult:
    waiting = RecipientResult(Outcome.DEFERRED, None, text)
    return SendResult(
        Outcome.DEFERRED,
        None,
        None,
        text,
        dict.fromkeys(recipients, waiting),
        config_error=config,
        failure_class=cls,
        retry_after=after,
    )


def _json(content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _inactive(message: str) -> set[str]:
    """Addresses Postmark names as inactive ("… inactive addresses: a@x, b@y.")."""
    match = _INACTIVE.search(message)
    if match is None:
        return set()
    return {a.strip().lower() for a in match.group(1).split(",") if a.strip()}


def _retry_after(response: httpx.Response) -> float | None:
    """RFC 9110 §10.2.3 ``Retry-After`` in seconds (the HTTP-date form is not used here)."""
    value = response.headers.get("retry-after", "")
    return float(value) if value.strip().isdigit() else None
