"""The web app built on the first request (mailgate.web.lazy): under ``dev`` the first
HTTP request or WebSocket builds it, in a worker thread while SMTP goes on being served,
once however many requests arrive meanwhile; under ``serve`` it is built at start. The
shim itself is served by a real uvicorn here too, with an app whose lifespan is watched."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

import mailgate.web.app as web_app
from mailgate.app import Mode
from mailgate.web.lazy import LazyApp
from tests.integration.conftest import GatewayFactory, api
from tests.integration.test_mailpit_api import plain, send, smtp_send
from tests.integration.test_mailpit_events import events, frame


class Builds:
    """Stands in for ``create_app``: counts the builds and where they ran; each waits
    for :attr:`release` (set at once unless the test holds it)."""

    def __init__(self, real: Callable[..., FastAPI]) -> None:
        self.real = real
        self.threads: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, *args: Any, **kwargs: Any) -> FastAPI:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        assert self.release.wait(10), "the test never let the build go on"
        return self.real(*args, **kwargs)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Builds:
    counting = Builds(web_app.create_app)
    monkeypatch.setattr(web_app, "create_app", counting)
    return counting


async def test_first_requests_wait_for_one_build_while_smtp_is_served(
    start_gateway: GatewayFactory, builds: Builds
) -> None:
    builds.release.clear()
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        assert builds.threads == []  # nothing built at start
        first = [asyncio.create_task(client.get("/inbox")) for _ in range(10)]
        assert await asyncio.to_thread(builds.started.wait, 10)
        # the build holds a worker thread, not the loop: a whole SMTP session is served
        await send(gw, plain("sent during the build"))
        assert not any(task.done() for task in first)
        builds.release.set()
        answers = await asyncio.gather(*first)
        again = await client.get("/inbox")
    [thread] = builds.threads  # one build, in a worker thread
    assert thread != threading.current_thread().name
    for answer in [*answers, again]:
        assert answer.status_code == 200, answer.text
        # lifespan state reached the requests: the routes found the inbox service
        assert [item["subject"] for item in answer.json()["items"]] == ["sent during the build"]


async def test_a_websocket_can_be_the_first_request(
    start_gateway: GatewayFactory, builds: Builds
) -> None:
    async with start_gateway(Mode.DEV) as gw, events(gw) as ws:
        await send(gw, plain("live"))
        new = await frame(ws)
    assert new["Type"] == "new" and new["Data"]["Subject"] == "live"
    assert len(builds.threads) == 1


async def test_serve_builds_the_app_at_start(start_gateway: GatewayFactory, builds: Builds) -> None:
    async with start_gateway(Mode.SERVE) as gw:
        assert len(builds.threads) == 1
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok", "mode": "serve"}
    assert len(builds.threads) == 1


async def test_dev_without_a_request_builds_nothing(
    start_gateway: GatewayFactory, builds: Builds
) -> None:
    async with start_gateway(Mode.DEV) as gw:
        await asyncio.to_thread(smtp_send, gw, plain("no one looks"))
    assert builds.threads == []


@contextlib.asynccontextmanager
async def served(app: LazyApp) -> AsyncIterator[str]:
    """``app`` served by uvicorn with its lifespan, as the gateway serves it; the URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def watched_app(lifespan_log: list[str]) -> FastAPI:
    """An app whose lifespan writes to ``lifespan_log`` and hands out ``greeting``."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        lifespan_log.append("enter")
        yield {"greeting": "hello"}
        lifespan_log.append("exit")

    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    async def greet(request: Request) -> str:
        greeting: str = request.state.greeting
        return greeting

    return app


def _seen(response: httpx.Response) -> tuple[int, str, str, bytes]:
    return (response.status_code, response.headers["content-type"],
            response.headers["content-length"], response.content)  # fmt: skip


async def test_health_probes_and_scrapes_build_nothing_and_answer_as_the_app_does(
    start_gateway: GatewayFactory, builds: Builds
) -> None:
    """A compose healthcheck or a Prometheus scrape every few seconds must not build the
    web app of an idle capture server (mailgate.web.probes); what they get is what the
    app answers once built."""
    async with start_gateway(Mode.DEV, http={"metrics_port": 0}) as gw:
        assert gw.metrics_address is not None
        metrics_url = "http://{}:{}".format(*gw.metrics_address)
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as http:
            before = {p: _seen(await http.get(p)) for p in ("/healthz", "/readyz")}
            scraped = await http.get(f"{metrics_url}/metrics")
            listener = {p: _seen(await http.get(metrics_url + p)) for p in ("/healthz", "/readyz")}
            assert builds.threads == []  # answered without the web app
            # a Host the DNS-rebinding check refuses is the app's to answer: built now
            refused = await http.get("/healthz", headers={"Host": "evil.example"})
            assert refused.status_code == 421 and len(builds.threads) == 1
            after = {p: _seen(await http.get(p)) for p in ("/healthz", "/readyz")}
            posted = await http.post("/healthz")
    assert before == after == listener
    assert before["/healthz"][::3] == (200, b'{"status":"ok","mode":"dev"}')
    assert before["/readyz"][0] == 200 and before["/readyz"][3].startswith(b'{"status":"ready"')
    assert scraped.status_code == 200 and "mailgate_queue_depth" in scraped.text
    assert posted.status_code == 405 and len(builds.threads) == 1


async def test_with_an_api_token_a_probe_from_any_host_builds_nothing_but_metrics_do(
    start_gateway: GatewayFactory, builds: Builds
) -> None:
    """With a token the app serves any Host, so the probes do too; its /metrics wants the
    token, which only the app checks: that request builds it."""
    async with (
        start_gateway(Mode.DEV, api_token="probe-token-1") as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=10) as http,
    ):
        probed = await http.get("/healthz", headers={"Host": "mail.internal:8025"})
        assert probed.status_code == 200 and builds.threads == []
        assert (await http.get("/metrics")).status_code == 401
        assert len(builds.threads) == 1


async def test_the_real_lifespan_runs_from_the_first_request_to_shutdown() -> None:
    lifespan_log: list[str] = []
    lazy = LazyApp(lambda: watched_app(lifespan_log))
    async with served(lazy) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        assert lifespan_log == [] and not lazy.loaded  # uvicorn's start-up was answered
        assert (await http.get("/")).json() == "hello"
        assert (await http.get("/")).json() == "hello"
        assert lifespan_log == ["enter"]
    assert lifespan_log == ["enter", "exit"]


async def test_a_failed_build_is_tried_again_by_the_next_request() -> None:
    lifespan_log: list[str] = []
    tries: list[int] = []

    def build() -> FastAPI:
        tries.append(len(tries))
        if len(tries) == 1:
            raise RuntimeError("broken on purpose")
        return watched_app(lifespan_log)

    async with served(LazyApp(build)) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        assert (await http.get("/")).status_code == 500
        assert (await http.get("/")).json() == "hello"
    assert tries == [0, 1] and lifespan_log == ["enter", "exit"]
