"""First-send latency when idle: from the 202 of ``POST /messages`` to the upstream's 250.

In-process: a real gateway (``mailgate serve --relay`` on SQLite, its web server on a
real socket) relays to an aiosmtpd upstream on 127.0.0.1 that notes when each message
arrived; the client is httpx over the socket. One message at a time, waiting for each to
arrive before the next (so the dispatcher is idle every time), after a few warm-up sends.
Prints p50/p90/p99/max of POST → 250. (202 → 250 cannot be told apart here: the
upstream usually has the message before the client has read its 202.)

    .venv/bin/python -m bench.latency [--messages 200] [--fresh-connections]

``--fresh-connections`` sets the pool's NOOP threshold and idle timeout to zero-ish so
every message opens a new SMTP connection: the ratio to the pooled run is the cost of a
connection per message. Figures are printed, never asserted (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session
from tests.peers import Upstream

from mailgate.app import Gateway, Mode
from mailgate.settings import Settings


class TimedSink(Upstream):
    """Accepts everything and notes when each message's DATA was answered."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[str, float] = {}
        self.event = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        subject = (envelope.original_content or b"").split(b"Subject: ", 1)[1].split(b"\r\n")[0]
        self.times[subject.decode()] = time.perf_counter()
        self.event.set()
        return "250 2.0.0 OK"


def settings(db: Path, relay: str, fresh: bool) -> Settings:
    delivery: dict[str, object] = {"poll_interval": 2.0}
    if fresh:  # a pooled connection is never reused: closed at once when idle
        delivery |= {"pool_idle_timeout": 0.001, "pool_max_age": 0.001}
    return Settings(
        db_url=f"sqlite:///{db}",
        relay_url=relay,
        http={"host": "127.0.0.1", "port": 0},
        smtp={"enabled": False},
        delivery=delivery,
    )


async def measure(args: argparse.Namespace) -> None:
    sink = TimedSink()
    async with sink:
        with tempfile.TemporaryDirectory(prefix="mailgate-bench-latency-") as tmp:
            conf = settings(Path(tmp) / "db.sqlite3", sink.url, args.fresh_connections)
            async with Gateway(conf, mode=Mode.SERVE) as gw, httpx.AsyncClient(
                base_url=f"{gw.http_url}/api/v1", timeout=30
            ) as client:
                early, after_post = 0, []
                for i in range(-args.warmup, args.messages):
                    subject = f"latency {i}"
                    body = {"to": "x@example.com", "subject": subject, "text": "hello"}
                    sink.event.clear()
                    posted = time.perf_counter()
                    response = await client.post("/messages", json=body)
                    accepted = time.perf_counter()
                    assert response.status_code == 202, response.text
                    while subject not in sink.times:
                        await asyncio.wait_for(sink.event.wait(), 10)
                        sink.event.clear()
                    if i >= 0:
                        early += sink.times[subject] <= accepted
                        after_post.append(sink.times[subject] - posted)
                    await asyncio.sleep(args.pause)
        connections = sink.connections
    mode = "a fresh connection per message" if args.fresh_connections else "pooled connections"
    print(f"{args.messages} messages one at a time, idle in between, {mode}:")
    print(f"  POST → upstream 250: {_summary(after_post)}")
    print(f"  upstream had it before the client had read the 202: {early} of {args.messages}")
    print(f"  SMTP connections opened: {connections}")


def _summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100)
    return f"p50 {q[49]:.2f} ms, p90 {q[89]:.2f} ms, p99 {q[98]:.2f} ms, max {ms[-1]:.2f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--pause", type=float, default=0.02, help="idle seconds between messages")
    p.add_argument("--fresh-connections", action="store_true")
    asyncio.run(measure(p.parse_args()))


if __name__ == "__main__":
    main()
