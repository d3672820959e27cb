"""``/healthz``, ``/readyz`` and ``/metrics`` as plain ASGI: no FastAPI for a probe.

Most of the HTTP an idle capture server sees is a health probe (a compose file's
healthcheck, Kubernetes) or a Prometheus scrape. Answered by the FastAPI app, the first
one builds it (:mod:`mailgate.web.lazy`): about 25 MiB of memory for one line of JSON,
every idle ``mailgate dev`` with a probe paying it (docs/benchmarks.md). So:

* :class:`~mailgate.web.lazy.LazyApp` asks :class:`Probes` first while the web app is not
  built. Only a request the web app would answer the same way is taken: ``GET`` of
  ``/healthz`` or ``/readyz`` from a Host its DNS-rebinding check lets in
  (:mod:`mailgate.web.hosts`); anything else builds the app, which answers as ever. Once
  built, the app answers everything.
* The separate metrics listener (``--metrics HOST:PORT``) is :class:`MetricsListener`, this
  module alone: ``/metrics``, ``/healthz`` and ``/readyz``, 404 and 405 for the rest, as its
  FastAPI app used to answer.

The bodies are those of FastAPI's ``JSONResponse``: compact JSON, UTF-8, and the headers
``content-length`` and ``content-type``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from mailgate.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mailgate.web.hosts import admitted

__all__ = ["MetricsListener", "MetricsSource", "Probes", "Readiness", "ready_report"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Answer = Callable[[Send], Awaitable[None]]

#: the Prometheus exposition of the gateway's metrics, gathered at scrape time
MetricsSource = Callable[[], Awaitable[bytes]]
#: each part that must work to take mail (store, dispatcher, smtp): "ok", or why not
Readiness = Callable[[], Awaitable[dict[str, str]]]


def ready_report(checks: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """``/readyz``'s status and body: 200 when every part is ``ok``, else 503."""
    ready = all(state == "ok" for state in checks.values())
    return (200 if ready else 503), {"status": "ready" if ready else "not ready", "checks": checks}


class Probes:
    """The answers to ``GET /healthz``, ``/readyz`` and (with ``metrics``) ``/metrics``."""

    def __init__(
        self,
        mode: str,
        readiness: Readiness | None,
        *,
        metrics: MetricsSource | None = None,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        """``allowed_hosts``: answer only a Host the web app's check lets in
        (:func:`~mailgate.web.hosts.admitted`, when it has no API token); None: any."""
        self.mode = mode
        self.readiness = readiness
        self.metrics = metrics
        self.allowed_hosts = None if allowed_hosts is None else tuple(allowed_hosts)
        self.paths: dict[str, Answer] = {"/healthz": self._healthz, "/readyz": self._readyz}
        if metrics is not None:
            self.paths["/metrics"] = self._metrics

    def answer(self, scope: Scope) -> Answer | None:
        """The answer to this request, or None when it is not one of these probes."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        answer = self.paths.get(scope["path"])
        if answer is None or (
            self.allowed_hosts is not None and not admitted(scope, self.allowed_hosts)
        ):
            return None
        return answer

    async def _healthz(self, send: Send) -> None:
        await send_json(send, 200, {"status": "ok", "mode": self.mode})

    async def _readyz(self, send: Send) -> None:
        checks = await self.readiness() if self.readiness is not None else {}
        await send_json(send, *ready_report(checks))

    async def _metrics(self, send: Send) -> None:
        assert self.metrics is not None
        await send_body(send, 200, await self.metrics(), METRICS_CONTENT_TYPE)


class MetricsListener:
    """ASGI app of the separate metrics listener: the probes, and nothing else."""

    def __init__(self, probes: Probes) -> None:
        self.probes = probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":  # a WebSocket: refused
            await send({"type": "websocket.close", "code": 1000})
            return
        answer = self.probes.answer(scope)
        if answer is not None:
            await answer(send)
        elif scope["path"] in self.probes.paths:
            await send_json(send, 405, {"detail": "Method Not Allowed"}, [(b"allow", b"GET")])
        else:
            await send_json(send, 404, {"detail": "Not Found"})


async def lifespan(receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol for an app that needs nothing at start-up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_json(
    send: Send, status: int, content: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """As FastAPI's ``JSONResponse`` renders ``content``."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    await send_body(send, status, body.encode(), "application/json", headers)


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    start = [(b"content-length", str(len(body)).encode()), (b"content-type", content_type.encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": start + (headers or [])}
    )
    await send({"type": "http.response.body", "body": body})
