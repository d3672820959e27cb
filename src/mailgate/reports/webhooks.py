"""Webhook delivery: each outbox event POSTed, signed, to every endpoint that takes it.

Every enabled endpoint is an outbox consumer (:mod:`mailgate.store.webhooks`). The
sender polls which of them have events due (a cheap read), claims up to its room
(``concurrency`` POSTs in flight per endpoint) for a lease, and POSTs each event. The
outbox hands out one message's events in order, so a receiver never sees a message's
``message.sent`` before its ``message.queued`` even when several processes share the
work. A 2xx acknowledges the event for good; anything else (or no answer within
``timeout``) is retried after the next delay of ``retry_delays``, with jitter, until
``dead_after``; 410 Gone also disables the endpoint. A process killed mid-POST leaves
the claim to run out, and the event is sent again (at least once: receivers dedupe by
``Mailgate-Event-Id``).

The request, as Stripe and Svix sign theirs::

    POST <url>
    Content-Type: application/json
    Mailgate-Event-Id: 42
    Mailgate-Event-Kind: message.sent
    Mailgate-Signature: t=1763790000,v1=<hex HMAC-SHA256(secret, "1763790000." + body)>

    {"id": 42, "kind": "message.sent", "created_at": "…Z", "tenant": "default",
     "message_id": "…", "inbox_id": null, "source": "rest", "payload": {…}}

The body is the same bytes on every attempt; ``t`` is the time of the attempt, so a
receiver can refuse old replays (:func:`verify` allows five minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from mailgate import __version__
from mailgate.clock import Clock
from mailgate.deliver.fetch import check_url, loggable_url
from mailgate.deliver.ssrf import AddressRefused, NetGuard, UnresolvableHost
from mailgate.errors import MailgateError
from mailgate.reports.http import Answer, Endpoint, ProtocolFailure
from mailgate.settings import WebhookSettings
from mailgate.store.outbox import OutboxEvent, OutboxStore
from mailgate.store.webhooks import Webhook, WebhookStore, consumer_name

__all__ = ["SIGNATURE_HEADER", "WebhookSender", "event_body", "lease_seconds", "sign", "verify"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Mailgate-Signature"
_REFRESH = 5.0  #: seconds between re-reads of the endpoint list (others may change it)
_SNIPPET = 300  #: characters of a refusing receiver's answer kept with the attempt

#: one finished POST: its outcome (delivered, failed, dead, disabled) and its seconds
AttemptRecorder = Callable[[str, float], None]


def lease_seconds(settings: WebhookSettings) -> float:
    """How long a claimed event stays claimed: its POST times out after ``timeout``; the
    rest is room for recording the outcome. A process killed mid-POST leaves it this
    long, then it is sent again."""
    return 2 * settings.timeout + 5.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Mailgate-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` of
    ``"<t>." + body`` under the endpoint's secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300.0) -> bool:
    """What a receiver runs (README, "Verifying a webhook"): the signature matches the
    raw body and was made less than ``tolerance`` seconds ago."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    fresh = abs(time.time() - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def event_body(event: OutboxEvent) -> bytes:
    """The JSON an endpoint receives for ``event``, the same on every attempt."""
    document = {
        "id": event.id,
        "kind": event.kind,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "tenant": event.tenant,
        "message_id": event.message_id,
        "inbox_id": event.inbox_id,
        "source": event.source,
        "payload": event.payload,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookSender:
    """Delivers the outbox to every enabled endpoint; ``start()`` … ``stop()``."""

    def __init__(
        self,
        store: WebhookStore,
        outbox: OutboxStore,
        clock: Clock,
        settings: WebhookSettings,
        *,
        guard: NetGuard,
        on_attempt: AttemptRecorder | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.settings = settings
        self.guard = guard
        self.on_attempt = on_attempt
        self._hooks: list[Webhook] = []
        self._hooks_read = -_REFRESH
        self._endpoints: dict[str, tuple[str, Endpoint]] = {}  #: id → (url, its connections)
        self._tls = ssl.create_default_context()
        self._in_flight: dict[str, set[asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False  #: the last round claimed something

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailgate-webhooks")

    async def stop(self) -> None:
        """Stop claiming; POSTs in flight get ``timeout`` to finish (an unfinished one is
        sent again once its claim runs out)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks = [t for group in self._in_flight.values() for t in group]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.settings.timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for _, endpoint in self._endpoints.values():
            endpoint.aclose()
        self._endpoints.clear()

    def changed(self) -> None:
        """Endpoints were added, changed or removed: read them again now."""
        self._hooks_read = -_REFRESH
        self._wake.set()

    def wake(self) -> None:
        """Events were written: look for due ones now."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            pause = self.settings.poll_interval
            try:
                await self._round()
            except (MailgateError, OSError):
                log.exception("webhooks: checking for events failed; trying again in 5 s")
                pause = max(pause, _REFRESH)  # a store outage or an unreadable secret
                self._hooks_read = -_REFRESH
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()

    async def _round(self) -> None:
        if time.monotonic() - self._hooks_read >= _REFRESH:
            self._hooks = await self.store.enabled()
            self._hooks_read = time.monotonic()
        now = self.clock.now()
        room = {
            h.id: self.settings.concurrency - len(self._in_flight.get(h.id, ()))
            for h in self._hooks
        }
        wanted = [consumer_name(h.id) for h in self._hooks if room[h.id] > 0]
        if self._busy:  # the last round found work: claiming again finds out just as well
            due = set(wanted)
        else:  # idle: a read is cheaper than a claim (a write) for every endpoint
            due = await self.outbox.due(wanted, now)
        lease = lease_seconds(self.settings)
        self._busy = False
        for hook in self._hooks:
            if consumer_name(hook.id) not in due:
                continue
            events = await self.outbox.claim(consumer_name(hook.id), now, room[hook.id], lease)
            self._busy = self._busy or bool(events)
            for event in events:
                self._spawn(hook, event)

    def _spawn(self, hook: Webhook, event: OutboxEvent) -> None:
        group = self._in_flight.setdefault(hook.id, set())
        task = asyncio.create_task(self._deliver(hook, event), name=f"webhook-{hook.id}")
        group.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            group.discard(finished)
            self._wake.set()  # its endpoint has room, and the message's next event is due

        task.add_done_callback(done)

    async def _deliver(self, hook: Webhook, event: OutboxEvent) -> None:
        assert hook.secret is not None
        body = event_body(event)
        now = self.clock.now()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"mailgate/{__version__}",
            "Mailgate-Event-Id": str(event.id),
            "Mailgate-Event-Kind": event.kind,
            "Mailgate-Webhook-Id": hook.id,
            "Mailgate-Attempt": str(event.attempts + 1),
            SIGNATURE_HEADER: sign(hook.secret, int(now.timestamp()), body),
        }
        started = time.perf_counter()
        status, error = await self._post(hook, headers, body)
        seconds = time.perf_counter() - started
        ms = round(seconds * 1000)
        try:
            if status is not None and 200 <= status < 300:
                await self.store.delivered(hook.id, event.id, event.kind, status, ms, now)
                outcome = "delivered"
            else:
                outcome = await self._failed(hook, event, status, error or "", ms, now)
        except MailgateError:
            log.exception("webhook %s: recording event %d failed; it will be sent again",
                          hook.id, event.id)  # fmt: skip
            return
        if self.on_attempt is not None:
            self.on_attempt(outcome, seconds)

    async def _failed(
        self,
        hook: Webhook,
        event: OutboxEvent,
        status: int | None,
        error: str,
        ms: int,
        now: datetime,
    ) -> str:
        gone = status == 410
        retry_at = now + timedelta(seconds=self._delay(event.attempts + 1))
        dead_before = now - timedelta(seconds=self.settings.dead_after)
        dead = await self.store.failed(
            hook.id, event.id, event.kind, status=status, error=error, ms=ms, now=now,
            retry_at=retry_at, dead_before=dead_before, gone=gone,
        )  # fmt: skip
        if gone:
            log.warning(
                "webhook %s answered 410 Gone: disabled (%s)", hook.id, loggable_url(hook.url)
            )
            self.changed()
            return "disabled"
        if dead:
            log.warning("webhook %s: event %d dead-lettered after %d attempts: %s",
                        hook.id, event.id, event.attempts + 1, error)  # fmt: skip
            return "dead"
        log.info("webhook %s: event %d not delivered (%s); retry at %s",
                 hook.id, event.id, error, retry_at.isoformat(timespec="seconds"))  # fmt: skip
        return "failed"

    def _delay(self, failures: int) -> float:
        """Seconds before the retry after the ``failures``-th failure, jittered."""
        delays = self.settings.retry_delays
        base = delays[min(failures, len(delays)) - 1]
        jitter = self.settings.jitter
        return base * random.uniform(1 - jitter, 1 + jitter)

    async def _post(
        self, hook: Webhook, headers: dict[str, str], body: bytes
    ) -> tuple[int | None, str | None]:
        """The receiver's status (with the start of its answer when not 2xx), or no
        status and why there was none."""
        import httpx  # its URL parser checks the endpoint's URL (deliver.fetch.check_url)

        timeout = self.settings.timeout
        try:
            endpoint = self._endpoint(hook)
            async with asyncio.timeout(timeout):
                answer = await endpoint.post(list(headers.items()), body)
        except TimeoutError:
            return None, f"no answer in {timeout:g} s"
        except (AddressRefused, UnresolvableHost, ValueError, httpx.InvalidURL) as exc:
            return None, str(exc)
        except (OSError, ProtocolFailure) as exc:  # refused, reset, TLS, broken HTTP
            return None, f"{type(exc).__name__}: {exc}".rstrip(": ")
        if 200 <= answer.status < 300:
            return answer.status, None
        return answer.status, _refusal(answer)

    def _endpoint(self, hook: Webhook) -> Endpoint:
        """One per webhook, so a kept-alive connection (made to the checked address) only
        ever carries requests for that endpoint's host name."""
        known = self._endpoints.get(hook.id)
        if known is not None and known[0] == hook.url:
            return known[1]
        if known is not None:
            known[1].aclose()
        endpoint = Endpoint(
            check_url(hook.url), self.guard, self._tls, keep=self.settings.concurrency
        )
        self._endpoints[hook.id] = (hook.url, endpoint)
        return endpoint


def _refusal(answer: Answer) -> str:
    """``HTTP 500 Internal Server Error: <the start of the body>``."""
    text = f"HTTP {answer.status} {answer.reason}".rstrip()
    shown = " ".join(answer.body[:_SNIPPET].decode("utf-8", "replace").split())
    return f"{text}: {shown}" if shown else text
