"""Delivery-report sync: the final outcome of each message POSTed, in batches, to one
endpoint of the operator's application (issue 7, "the genro-mail-proxy style"), for
applications that take their outcomes in batches rather than one webhook at a time.

The sync is the outbox consumer ``report-sync``, registered for the final kinds
(``message.sent``, ``message.failed``, ``message.cancelled``). A round claims up to
``batch`` due reports, POSTs them as one JSON document and, on any 2xx, acknowledges
them: acknowledged is *reported*, never sent again. Anything else (or no answer within
``timeout``) fails every report of the batch with the error; they are tried again after
``interval``, doubling with each failed round (counted in the store, so a restart does
not reset it) up to ``retry_max_delay``, until a report is ``dead_after`` old and
dead-lettered with its last error. Several processes on one database share the work
through the outbox's claims (``SKIP LOCKED``); the outbox hands out one message's
reports in order and never two of them in one batch (a ``failed``, then the ``sent`` of
a manual retry). Delivery is at least once (a process killed mid-POST leaves its claim
to run out): the endpoint dedupes by ``event_id``.

The request::

    POST <sync_url>
    Content-Type: application/json
    Authorization: Basic <user:password> | Bearer <token>

    {"delivery_report": [
      {"id": "<message id>", "event_id": 42, "key": "order-42-receipt",
       "tenant": "default", "state": "sent", "sent_ts": "2026-11-03T10:30:45.120000Z",
       "error_ts": null, "error": null, "reason": null, "code": 250,
       "enhanced_code": "2.0.0", "failure_class": null, "attempt": 1,
       "account": "default", "source": "rest",
       "recipients": {"a@example.com": {"status": "sent", "code": 250, "text": "…"}},
       "metadata": {"order": 42}}]}

``sent_ts`` (sent) or ``error_ts`` (failed, cancelled) is when the message reached its
state; ``error`` is the last reply's text (``"cancelled"`` for a cancelled message).
A 2xx answer may be JSON with ``next_sync_after``: seconds, or an ISO-8601 time; the
next POST waits until then (at most :data:`MAX_WAIT`), even when more reports wait.

The URL is the operator's setting, not a tenant's, so it is not held to the webhooks'
address rule (any host, private ones included) and no SSRF check is made. Credentials
(``password``, ``token``) never reach a log line or an error; logged URLs lose their
query, which may hold one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailgate import __version__
from mailgate.clock import Clock
from mailgate.deliver.fetch import loggable_url, response_head
from mailgate.errors import MailgateError
from mailgate.settings import ReportSettings
from mailgate.store.outbox import EventKind, OutboxEvent, OutboxStore
from mailgate.store.queue import QueueStore

if TYPE_CHECKING:  # imported at start(): with no sync_url, only pause() is used
    import httpx

__all__ = [
    "CONSUMER",
    "KINDS",
    "MAX_WAIT",
    "ReportSync",
    "next_sync_wait",
    "pause",
    "report_body",
    "report_item",
]

log = logging.getLogger(__name__)

CONSUMER = "report-sync"  #: the outbox consumer's name
#: the kinds reported: a message's final states
KINDS = (EventKind.MESSAGE_SENT, EventKind.MESSAGE_FAILED, EventKind.MESSAGE_CANCELLED)
MAX_WAIT = 86400.0  #: the longest ``next_sync_after`` honoured, in seconds
_SNIPPET = 300  #: characters of a refusing endpoint's answer kept as the error
_KEEP = 64 * 1024  #: bytes of an answer read; the rest is not

#: one finished POST: its outcome (``delivered``, ``failed``) and how many reports it held
SyncRecorder = Callable[[str, int], None]

#: a message's client key and metadata, by message id (:meth:`QueueStore.client_refs`)
ClientRefs = dict[str, tuple[str | None, dict[str, Any]]]


def report_item(event: OutboxEvent, refs: ClientRefs) -> dict[str, Any]:
    """One message's report, from its final event (and the client's key and metadata)."""
    p = event.payload
    state = str(p.get("state") or event.kind.removeprefix("message."))
    at = event.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    sent = event.kind == EventKind.MESSAGE_SENT
    key, metadata = refs.get(event.message_id or "", (None, None))
    return {
        "id": event.message_id,
        "event_id": event.id,
        "key": key,
        "tenant": event.tenant,
        "state": state,
        "sent_ts": at if sent else None,
        "error_ts": None if sent else at,
        "error": None if sent else (p.get("text") or p.get("reason") or state),
        "reason": p.get("reason"),
        "code": p.get("code"),
        "enhanced_code": p.get("enhanced_code"),
        "failure_class": p.get("failure_class"),
        "attempt": p.get("attempt"),
        "account": p.get("account"),
        "source": event.source,
        "recipients": p.get("recipients"),
        "metadata": metadata,
    }


def report_body(events: Sequence[OutboxEvent], refs: ClientRefs) -> bytes:
    """The JSON document of one POST."""
    document = {"delivery_report": [report_item(e, refs) for e in events]}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def next_sync_wait(reply: bytes, now: datetime) -> float | None:
    """Seconds the endpoint asked to be left alone (``next_sync_after``: seconds or an
    ISO-8601 time; a time without a zone is UTC), within ``0 … MAX_WAIT``; None when the
    answer asks nothing or cannot be read."""
    try:
        asked = json.loads(reply).get("next_sync_after")
    except (ValueError, AttributeError):
        return None
    if isinstance(asked, bool) or asked is None:
        return None
    if isinstance(asked, int | float):
        try:
            seconds: float | None = float(asked)
        except OverflowError:  # an int past any float (JSON's are unbounded): unreadable
            return None
    elif isinstance(asked, str):
        seconds = _seconds_until(asked.strip(), now)
    else:
        return None
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_WAIT)


def _seconds_until(text: str, now: datetime) -> float | None:
    """``"30"`` or ``"2026-11-03T10:30:45Z"`` as seconds from ``now``."""
    with contextlib.suppress(ValueError):
        return float(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return (when - now).total_seconds()


async def pause(outbox: OutboxStore) -> None:
    """Report sync is off (``sync_url`` unset): pause its consumer if one was registered.

    A paused consumer keeps what it had pending (sent once ``sync_url`` is set again,
    unless retention took it first) but gets no new reports, and holds back no retention.
    Every process sharing a database must therefore agree on ``sync_url``.
    """
    backlogs = await outbox.backlogs()
    if CONSUMER in backlogs:
        await outbox.set_active(CONSUMER, False)
        log.info("report sync off (reports.sync_url unset): %d reports kept, none added",
                 backlogs[CONSUMER])  # fmt: skip


class ReportSync:
    """POSTs finished messages' reports to ``settings.sync_url``; ``start()`` … ``stop()``."""

    def __init__(
        self,
        outbox: OutboxStore,
        queue: QueueStore,
        clock: Clock,
        settings: ReportSettings,
        *,
        on_sync: SyncRecorder | None = None,
    ) -> None:
        assert settings.sync_url is not None, "report sync needs reports.sync_url"
        self.outbox = outbox
        self.queue = queue
        self.clock = clock
        self.settings = settings
        self.url = settings.sync_url
        self.on_sync = on_sync
        self._client: httpx.AsyncClient | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Register (or resume) the consumer: reports of messages finishing from now on."""
        now = self.clock.now()
        await self.outbox.register(CONSUMER, now, kinds=[k.value for k in KINDS])
        await self.outbox.set_active(CONSUMER, True)
        import httpx

        self._client = httpx.AsyncClient(
            auth=_auth(self.settings),
            trust_env=False,  # the operator's endpoint, reached as configured
            follow_redirects=False,  # a redirect is a failure: credentials stay put
            timeout=self.settings.timeout,
            headers={"User-Agent": f"mailgate/{__version__}"},
        )
        self._task = asyncio.create_task(self._run(), name="mailgate-report-sync")
        log.info("report sync to %s", loggable_url(self.url))

    async def stop(self) -> None:
        """Stop after the POST in flight, given ``timeout`` to finish (one cut short is
        sent again once its claim runs out)."""
        self._stopping.set()
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=self.settings.timeout + 5.0)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = await self.sync_once()
            except (MailgateError, OSError):
                log.exception("report sync: reading or recording reports failed; trying again")
                wait = self.settings.interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stopping.wait()

    async def sync_once(self) -> float:
        """One round: claim a batch, POST it, record the outcome. Returns the seconds to
        wait before the next round."""
        s = self.settings
        now = self.clock.now()
        if not await self.outbox.due([CONSUMER], now):  # a read: cheap while idle
            return s.interval
        events = await self.outbox.claim(CONSUMER, now, s.batch, lease_seconds(s))
        if not events:  # another process took them
            return s.interval
        refs = await self.queue.client_refs([e.message_id for e in events if e.message_id])
        status, error, reply = await self._post(report_body(events, refs))
        if status is not None and 200 <= status < 300:
            return await self._delivered(events, reply)
        return await self._failed(events, error or f"HTTP {status}")

    async def _delivered(self, events: Sequence[OutboxEvent], reply: bytes) -> float:
        now = self.clock.now()
        await self.outbox.ack(CONSUMER, [e.id for e in events], now)
        if self.on_sync is not None:
            self.on_sync("delivered", len(events))
        asked = next_sync_wait(reply, now)
        if asked is not None:
            return asked
        return 0.0 if len(events) == self.settings.batch else self.settings.interval

    async def _failed(self, events: Sequence[OutboxEvent], error: str) -> float:
        now = self.clock.now()
        delay = self._delay(max(e.attempts for e in events) + 1)
        retry_at = now + timedelta(seconds=delay)
        dead = 0
        for event in events:
            dead += await self.outbox.fail(CONSUMER, event.id, error, now, retry_at)
        if self.on_sync is not None:
            self.on_sync("failed", len(events))
        log.warning("report sync: %d reports not accepted by %s (%s); retry in %g s%s",
                    len(events), loggable_url(self.url), error, delay,
                    f", {dead} dead-lettered" if dead else "")  # fmt: skip
        return delay

    def _delay(self, failures: int) -> float:
        """Seconds after the ``failures``-th failed round: ``interval``, doubling."""
        s = self.settings
        return min(s.interval * 2.0 ** min(failures - 1, 60), s.retry_max_delay)

    async def _post(self, body: bytes) -> tuple[int | None, str | None, bytes]:
        """The endpoint's status and answer (the start of it as the error when not 2xx),
        or no status and why there was none."""
        assert self._client is not None, "report sync not started"
        import httpx

        timeout = self.settings.timeout
        headers = {"Content-Type": "application/json"}
        try:
            async with asyncio.timeout(timeout):
                response, reply = await self._exchange(body, headers)
        except TimeoutError:
            return None, f"no answer in {timeout:g} s", b""
        except httpx.HTTPError as exc:  # its text names the host, never a secret
            return None, f"{type(exc).__name__}: {exc}".rstrip(": "), b""
        status = response.status_code
        if 200 <= status < 300:
            return status, None, reply
        return status, _refusal(response, reply), b""

    async def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
        """The answer and at most ``_KEEP`` bytes of it: all a ``next_sync_after`` or an
        error needs; a huge one is not held in memory (the connection is closed)."""
        assert self._client is not None
        request = self._client.build_request("POST", self.url, content=body, headers=headers)
        response = await self._client.send(request, stream=True)
        try:
            return response, await response_head(response, _KEEP)
        finally:
            await response.aclose()


def lease_seconds(settings: ReportSettings) -> float:
    """How long a claimed batch stays claimed: its POST times out after ``timeout``; the
    rest is room for recording the outcome."""
    return 2 * settings.timeout + 5.0


def _auth(
    settings: ReportSettings,
) -> httpx.Auth | Callable[[httpx.Request], httpx.Request] | None:
    import httpx

    if settings.token is not None:
        return _bearer(settings.token.get_secret_value())
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else ""
        return httpx.BasicAuth(settings.username, password)
    return None


def _bearer(token: str) -> Callable[[httpx.Request], httpx.Request]:
    """``Authorization: Bearer <token>``, added as the request leaves (never a default
    header, so it is not in the client's repr); httpx calls it for each request."""

    def add(request: httpx.Request) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    return add


def _refusal(response: httpx.Response, reply: bytes) -> str:
    """``HTTP 500 Internal Server Error: <the start of the body>``."""
    text = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    shown = " ".join(reply[:_SNIPPET].decode("utf-8", "replace").split())
    return f"{text}: {shown}" if shown else text
