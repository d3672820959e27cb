"""Webhook latency (issue 7): from the upstream's 250 to the ``message.sent`` POST.

Three parties: ``mailgate serve`` as a subprocess on SQLite, relaying to an aiosmtpd
upstream in this process, and a webhook receiver in this process (a bare asyncio
HTTP/1.1 server: keep-alive, TCP_NODELAY, 200 at once; it only splits headers from
bodies, which are read outside the receiving path). The upstream notes, per message, the
monotonic time it answered 250 to the DATA, keyed by the message's ``X-Mailgate-ID``
header; the receiver notes when each POST's body was complete. Both clocks are this
process's ``time.monotonic()``; the interval measured starts at the upstream's reply, so
hosting the upstream here is fair (and Postfix's ``smtp-sink`` could not say when it
answered which message).

Each phase gets a fresh ``mailgate serve`` and database, one webhook created through
``POST /api/v1/webhooks`` (every kind by default; ``--kinds sent`` for ``message.sent``
only, ``queued+sent`` for those two), ``--warmup`` messages whose webhooks are awaited
and not counted, and then N messages:

* ``burst``: batches of ``--batch`` through ``POST /api/v1/messages``, one request after
  another, as fast as the gateway takes them;
* ``paced``: one message per request at ``--rate`` per second, steady.

Per message: webhook arrival minus upstream reply; printed as count, p50, p95, p99, max
and messages lost (reached the upstream but no ``message.sent`` POST within
``--timeout`` seconds of its 250). To say where the time goes it also prints, from the
event's ``created_at`` and both wall clocks, 250 → event stamped (the settle) and event
stamped → POST (the sender); how many messages' ``message.queued`` POST arrived only
after their 250 (their ``message.sent`` had to wait for it: one message's events are
delivered in order); the most messages waiting for their ``message.sent`` at once; the
POST rate; how many POSTs each TCP connection carried; the CPU seconds of mailgate and of
this process; and this process's event-loop lag, which bounds the measuring error. Every
POST's signature is checked with :func:`mailgate.reports.webhooks.verify` (after the
phase, within its five minutes' tolerance).

    .venv/bin/python -m bench.webhooks [--messages 2000] [--batch 100] [--rate 200]
        [--modes burst,paced] [--kinds all|sent|queued+sent]
        [--env MAILGATE_WEBHOOKS__CONCURRENCY=64] [--log-level INFO] [--profile FILE]

``--env`` passes a setting to ``mailgate serve`` (repeatable): the way to time other
``webhooks.poll_interval`` or ``webhooks.concurrency`` values. ``PYTHONPATH=snapshot/src``
measures a snapshot, as the other benchmarks do.

Figures are printed, never asserted; the exit status is 1 when a message was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    LoopLag,
    Server,
    free_port,
    machine_summary,
    mailgate_argv,
    mailgate_origin,
    ms,
    pct,
    run_benchmark,
    start_upstream,
    table,
    wait_http,
)
from mailgate.crypto import generate_key
from mailgate.reports.webhooks import SIGNATURE_HEADER, verify

KINDS: dict[str, list[str] | None] = {
    "all": None,  # the endpoint takes every kind
    "sent": ["message.sent"],
    "queued+sent": ["message.queued", "message.sent"],
}
_MAILGATE_ID = re.compile(rb"^X-Mailgate-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


# --------------------------------------------------------------------------- the upstream


class Upstream:
    """aiosmtpd handler: 250 to every DATA, noting when, by ``X-Mailgate-ID``."""

    def __init__(self) -> None:
        self.replied: dict[str, tuple[float, float]] = {}  #: id → (monotonic, wall)
        self.without_id = 0
        self.again = 0  #: a message delivered a second time (kept: the first)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or b""
        found = _MAILGATE_ID.search(content, 0, max(content.find(b"\r\n\r\n"), 0))
        if found is None:
            self.without_id += 1
        elif (key := found.group(1).decode()) in self.replied:
            self.again += 1
        else:
            self.replied[key] = (time.monotonic(), time.time())
        return "250 2.0.0 OK"


# --------------------------------------------------------------------------- the receiver


@dataclass(frozen=True, slots=True)
class Post:
    at: float  #: monotonic time the request was complete
    wall: float
    headers: dict[str, str]
    body: bytes


class Received:
    """What the receiver got: every POST and how many connections carried them."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.connections = 0
        self._indexed = 0
        self._sent: set[str] = set()

    def sent(self) -> set[str]:
        """Message ids with a ``message.sent`` POST so far (each POST parsed once)."""
        for post in self.posts[self._indexed :]:
            if post.headers.get("mailgate-event-kind") == "message.sent":
                self._sent.add(json.loads(post.body)["message_id"])
        self._indexed = len(self.posts)
        return self._sent


class Receiver(asyncio.Protocol):
    """HTTP/1.1 with Content-Length bodies (what httpx sends), keep-alive, 200 at once."""

    def __init__(self, received: Received) -> None:
        self.received = received
        self.buffer = bytearray()
        self.head: dict[str, str] | None = None
        self.length = 0
        self.transport: asyncio.Transport | None = None
        received.connections += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        now, wall = time.monotonic(), time.time()
        self.buffer += data
        while self._complete():
            assert self.transport is not None and self.head is not None
            body = bytes(self.buffer[: self.length])
            del self.buffer[: self.length]
            self.received.posts.append(Post(now, wall, self.head, body))
            self.head = None
            self.transport.write(_OK)

    def _complete(self) -> bool:
        """Whether a whole request is buffered (its headers parsed into ``head``)."""
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            del self.buffer[: end + 4]
            self.head = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.head[name.strip().lower()] = value.strip()
            if "chunked" in self.head.get("transfer-encoding", ""):
                raise RuntimeError("the receiver reads Content-Length bodies only")
            self.length = int(self.head.get("content-length", "0"))
        return len(self.buffer) >= self.length


# --------------------------------------------------------------------------- one phase


@dataclass
class Phase:
    mode: str  #: burst or paced
    kinds: str
    posted: dict[str, float] = field(default_factory=dict)  #: id → when its 202 came
    warmup: set[str] = field(default_factory=set)
    submit_seconds: float = math.nan
    mailgate_cpu: float = math.nan
    bench_cpu: float = math.nan
    lags: list[float] = field(default_factory=list)
    connections: int = 0  #: TCP connections the receiver accepted, warm-up included
    all_posts: int = 0  #: POSTs it received, warm-up included


async def run_phase(args: argparse.Namespace, mode: str, kinds: str) -> Report:
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-webhooks-"))
    upstream, received = Upstream(), Received()
    loop = asyncio.get_running_loop()
    smtp = await start_upstream(upstream)
    http = await loop.create_server(lambda: Receiver(received), "127.0.0.1", 0, backlog=256)
    mailgate: Server | None = None
    phase = Phase(mode, kinds)
    secret = secrets.token_urlsafe(24)
    try:
        profile = (
            None
            if args.profile is None
            else args.profile.with_name(f"{args.profile.name}.{mode}-{kinds}")
        )
        mailgate = start_mailgate(args, tmp, smtp.sockets[0].getsockname()[1], profile)
        base = f"http://127.0.0.1:{mailgate.env['MAILGATE_HTTP__PORT']}"
        await wait_http(f"{base}/healthz", mailgate)
        async with httpx.AsyncClient(base_url=f"{base}/api/v1", timeout=60) as client:
            hook: dict[str, Any] = {
                "url": f"http://127.0.0.1:{http.sockets[0].getsockname()[1]}/hook",
                "secret": secret,
                "description": "bench",
            }
            if KINDS[kinds] is not None:
                hook["kinds"] = KINDS[kinds]
            created = await client.post("/webhooks", json=hook)
            assert created.status_code == 201, created.text
            await warm_up(args, client, phase, received)
            cpu0, mg0 = time.process_time(), mailgate.cpu_seconds()
            with LoopLag() as lag:
                started = time.monotonic()
                if mode == "burst":
                    await submit_burst(args, client, phase)
                else:
                    await submit_paced(args, client, phase)
                phase.submit_seconds = time.monotonic() - started
                await wait_done(args, phase, upstream, received, mailgate)
            phase.bench_cpu = time.process_time() - cpu0
            phase.mailgate_cpu = mailgate.cpu_seconds() - mg0
            phase.lags = lag.lags
            phase.connections, phase.all_posts = received.connections, len(received.posts)
    finally:
        if mailgate is not None:
            await asyncio.to_thread(mailgate.stop)  # the upstream and receiver serve on meanwhile
        smtp.close()
        http.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return Report.of(phase, upstream, received.posts, secret, args.timeout)


def start_mailgate(
    args: argparse.Namespace, tmp: Path, smtp_port: int, profile: Path | None
) -> Server:
    env = {
        "MAILGATE_RELAY_URL": f"smtp://127.0.0.1:{smtp_port}",
        "MAILGATE_SECRET_KEY": generate_key(),
        "MAILGATE_WEBHOOKS__ALLOW_PRIVATE_NETWORKS": "true",
        "MAILGATE_HTTP__PORT": str(free_port()),
    }
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    argv = mailgate_argv(
        "serve",
        "--db",
        f"sqlite:///{tmp / 'db.sqlite3'}",
        "--log-level",
        args.log_level,
        profile=profile,
    )
    return Server("mailgate serve", argv, log=tmp / "mailgate.log", cwd=tmp, env=env).start()


def message(i: int) -> dict[str, str]:
    return {"to": "x@example.com", "subject": f"webhook bench {i}", "text": "hello"}


async def post_messages(client: httpx.AsyncClient, items: list[dict[str, str]]) -> list[str]:
    response = await client.post("/messages", json=items if len(items) > 1 else items[0])
    assert response.status_code == 202, response.text
    ids: list[str] = response.json()["ids"]
    assert len(ids) == len(items), response.text
    return ids


async def warm_up(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    phase: Phase,
    received: Received,
) -> None:
    """A few messages through the whole path (pools, clients, caches), not counted."""
    ids = await post_messages(client, [message(-1 - i) for i in range(args.warmup)])
    phase.warmup.update(ids)
    deadline = time.monotonic() + 60
    while len(received.sent() & phase.warmup) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError("the warm-up messages' webhooks did not arrive within 60 s")
        await asyncio.sleep(0.05)


async def submit_burst(args: argparse.Namespace, client: httpx.AsyncClient, phase: Phase) -> None:
    for start in range(0, args.messages, args.batch):
        items = [message(i) for i in range(start, min(start + args.batch, args.messages))]
        ids = await post_messages(client, items)
        now = time.monotonic()
        phase.posted.update((i, now) for i in ids)


async def submit_paced(args: argparse.Namespace, client: httpx.AsyncClient, phase: Phase) -> None:
    """One message per request at ``rate``/s on a fixed schedule (late ones are not
    made up by bursts beyond 16 requests in flight)."""
    room = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with room:
            (key,) = await post_messages(client, [message(i)])
            phase.posted[key] = time.monotonic()

    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for i in range(args.messages):
            await asyncio.sleep(max(0.0, started + i / args.rate - time.monotonic()))
            group.create_task(one(i))


async def wait_done(
    args: argparse.Namespace, phase: Phase, upstream: Upstream, received: Received, mg: Server
) -> None:
    """Until every message has its ``message.sent`` POST, or nothing more can come in
    time: ``timeout`` seconds after the last of the upstream's replies and of the 202s."""
    wanted = set(phase.posted)
    while True:
        seen = received.sent()
        if wanted <= seen:
            return
        latest = max([*phase.posted.values(), *(m for m, _ in upstream.replied.values())])
        if time.monotonic() > latest + args.timeout:
            return
        if not mg.alive():
            raise RuntimeError(f"mailgate exited:\n{mg.log_tail()}")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- figures


@dataclass
class Report:
    phase: Phase
    latencies: list[float]  #: upstream 250 → message.sent POST, seconds, per message
    settle: list[float]  #: upstream 250 → the event's created_at (wall clocks)
    sender: list[float]  #: created_at → POST arrival (wall clocks)
    lost: int  #: reached the upstream, no message.sent POST in time
    never_upstream: int  #: queued (202) but never reached the upstream
    queued_late: int  #: message.queued POST arrived after the message's 250
    most_waiting: int  #: messages replied to upstream but without their POST, at most
    posts: int
    post_rate: float  #: POSTs a second, first to last in the phase
    duplicates: int
    bad_signatures: int
    drain: float  #: last message.sent POST after the last 250, seconds

    @classmethod
    def of(
        cls, phase: Phase, upstream: Upstream, posts: list[Post], secret: str, timeout: float
    ) -> Report:
        ids = set(phase.posted)
        bad = sum(
            not verify(secret, p.headers.get(SIGNATURE_HEADER.lower(), ""), p.body) for p in posts
        )
        documents = [(p, json.loads(p.body)) for p in posts]
        mine = [(p, d) for p, d in documents if d["message_id"] in ids]
        first: dict[tuple[str, str], tuple[Post, dict[str, Any]]] = {}
        for p, d in mine:
            first.setdefault((d["kind"], d["message_id"]), (p, d))
        latencies, settle, sender, lost, queued_late = [], [], [], 0, 0
        for key in ids & set(upstream.replied):
            replied, replied_wall = upstream.replied[key]
            sent = first.get(("message.sent", key))
            if sent is None or sent[0].at - replied > timeout:
                lost += 1
                continue
            post, document = sent
            latencies.append(post.at - replied)
            stamped = datetime.fromisoformat(document["created_at"].replace("Z", "+00:00"))
            settle.append(stamped.timestamp() - replied_wall)
            sender.append(post.wall - stamped.timestamp())
            queued = first.get(("message.queued", key))
            queued_late += queued is not None and queued[0].at > replied
        timeline = sorted(
            [(upstream.replied[k][0], 1) for k in ids & set(upstream.replied)]
            + [(first[("message.sent", k)][0].at, -1) for k in ids if ("message.sent", k) in first]
        )
        waiting, most = 0, 0
        for _, step in timeline:
            waiting += step
            most = max(most, waiting)
        span = (mine[-1][0].at - mine[0][0].at) if len(mine) > 1 else math.nan
        sent_at = [first[("message.sent", k)][0].at for k in ids if ("message.sent", k) in first]
        replies = [upstream.replied[k][0] for k in ids & set(upstream.replied)]
        return cls(
            phase,
            latencies,
            settle,
            sender,
            lost,
            len(ids - set(upstream.replied)),
            queued_late,
            most,
            len(mine),
            len(mine) / span if span else math.nan,
            len(mine) - len(first),
            bad,
            max(sent_at) - max(replies) if sent_at and replies else math.nan,
        )


def print_reports(args: argparse.Namespace, reports: list[Report]) -> None:
    print("\nupstream 250 → message.sent POST arrives, ms (target: p95 ≤ 2,000):\n")
    rows = [
        [
            r.phase.mode,
            r.phase.kinds,
            str(len(r.latencies)),
            ms(pct(r.latencies, 50)),
            ms(pct(r.latencies, 95)),
            ms(pct(r.latencies, 99)),
            ms(max(r.latencies, default=math.nan)),
            str(r.lost),
            str(r.never_upstream),
        ]
        for r in reports
    ]
    print(
        table(["mode", "kinds", "count", "p50", "p95", "p99", "max", "lost", "not upstream"], rows)
    )
    print("\nwhere the time goes (ms; wall clocks, so ± a millisecond):\n")
    rows = [
        [
            r.phase.mode,
            r.phase.kinds,
            f"{ms(pct(r.settle, 50))} / {ms(pct(r.settle, 95))}",
            f"{ms(pct(r.sender, 50))} / {ms(pct(r.sender, 95))}",
            str(r.queued_late),
            str(r.most_waiting),
            f"{r.post_rate:,.0f}",
            f"{r.drain:.2f}",
        ]
        for r in reports
    ]
    print(
        table(
            [
                "mode",
                "kinds",
                "250 → stamped p50/p95",
                "stamped → POST p50/p95",
                "queued POST after 250",
                "most waiting",
                "POSTs/s",
                "drain s",
            ],
            rows,
        )
    )
    print("\nthe run:\n")
    rows = [
        [
            r.phase.mode,
            r.phase.kinds,
            f"{len(r.phase.posted) / r.phase.submit_seconds:,.0f}",
            str(r.posts),
            f"{r.phase.all_posts / max(r.phase.connections, 1):,.1f}",
            str(r.duplicates),
            str(r.bad_signatures),
            f"{r.phase.mailgate_cpu:.1f}",
            f"{r.phase.bench_cpu:.1f}",
            f"{ms(pct(r.phase.lags, 99))} / {ms(max(r.phase.lags, default=math.nan))}",
        ]
        for r in reports
    ]
    print(
        table(
            [
                "mode",
                "kinds",
                "submitted msg/s",
                "POSTs",
                "POSTs/connection",
                "duplicates",
                "bad signatures",
                "mailgate CPU s",
                "bench CPU s",
                "bench loop lag p99/max ms",
            ],
            rows,
        )
    )
    print(
        "\n250 → stamped: the settle (the message.sent event's created_at after the 250);"
        "\nstamped → POST: the webhook sender; queued POST after 250: messages whose"
        "\nmessage.queued POST came after their 250, so their message.sent waited for it;"
        "\nmost waiting: messages past their 250 still without their message.sent POST,"
        f"\nat most at once. Lost: no message.sent POST within {args.timeout:g} s of the 250."
    )


async def measure(args: argparse.Namespace) -> int:
    print(mailgate_origin())
    print(machine_summary())
    extra = f", env {' '.join(args.env)}" if args.env else ""
    print(
        f"{args.messages} messages a phase (+{args.warmup} warm-up), burst in batches of "
        f"{args.batch}, paced at {args.rate:g}/s one a request, log level "
        f"{args.log_level}{extra}"
    )
    reports = []
    for kinds in args.kinds:
        for mode in args.modes:
            print(f"  {mode}, kinds {kinds} …", flush=True)
            reports.append(await run_phase(args, mode, kinds))
    print_reports(args, reports)
    return 1 if any(r.lost or r.never_upstream for r in reports) else 0


def _choices(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        unknown = [t for t in items if t not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return items

    return parse


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2000, help="messages a phase")
    p.add_argument("--batch", type=int, default=100, help="messages a request, burst mode")
    p.add_argument("--rate", type=float, default=200.0, help="messages a second, paced mode")
    p.add_argument(
        "--modes",
        type=_choices(["burst", "paced"]),
        default=["burst", "paced"],
        help="comma-separated: burst, paced (default both)",
    )
    p.add_argument(
        "--kinds",
        type=_choices(list(KINDS)),
        default=["all"],
        help="comma-separated: all (default), sent, queued+sent; one phase each",
    )
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds after its 250 a message's webhook may take before it is lost",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="MAILGATE_X=V",
        help="a setting for mailgate serve (repeatable)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run mailgate under cProfile: one stats file a phase, FILE.<mode>-<kinds>",
    )
    args = p.parse_args()
    if args.profile is not None:
        args.profile = args.profile.resolve()
    if min(args.messages, args.batch, args.warmup) < 1 or args.rate <= 0:
        p.error("--messages, --batch, --warmup and --rate must be positive")
    if bad := [e for e in args.env if not e.startswith("MAILGATE_") or "=" not in e]:
        p.error(f"--env takes MAILGATE_NAME=VALUE, not {bad[0]}")
    return run_benchmark(measure(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
