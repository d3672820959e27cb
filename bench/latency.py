"""First-send latency when idle: from the 202 of ``POST /messages`` to the upstream's 250.

Three processes, as in production: ``mailgate serve --relay`` on SQLite, Postfix's
``smtp-sink`` as the upstream, and this client (httpx, one keep-alive connection). One
message at a time, waiting for each to arrive before the next (so the dispatcher is idle
every time), after a few warm-up sends.

``smtp-sink -c`` counts each message it answers (``mesg=N`` in its log): the client polls
that count every 0.2 ms and takes the time it first sees a message arrive, so a figure
is at most one poll late. Without ``smtp-sink`` (``--upstream aiosmtpd``) the bare sink of
``_harness.py`` is used, whose status file gives the monotonic time of its last DATA.

Prints p50/p90/p99/max of 202 → 250 (the client has its 202 in hand) and of POST → 250.

    .venv/bin/python -m bench.latency [--messages 200] [--fresh-connections]

``--fresh-connections`` sets the pool's idle timeout and maximum age to about zero so
every message opens a new SMTP connection: the ratio to the pooled run is the cost of a
connection per message. Figures are printed, never asserted (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    Server,
    free_port,
    mailgate_argv,
    read_sink,
    sink_argv,
    smtp_sink_argv,
    smtp_sink_path,
    wait_http,
    wait_smtp,
)


class Arrivals:
    """When the upstream answered its n-th message, on the clock ``now()`` reads."""

    def __init__(self, upstream: str, tmp: Path) -> None:
        self.upstream = upstream
        self.status = tmp / "sink.json"
        self.log = tmp / "sink.log"

    def argv(self, port: int) -> list[str]:
        if self.upstream == "smtp-sink":
            return smtp_sink_argv(port)
        return sink_argv(port, self.status)

    def now(self) -> float:
        return time.monotonic()

    async def wait(self, count: int, within: float = 10.0) -> float:
        """smtp-sink: the moment a poll (every 0.2 ms) first saw its ``mesg=N`` counter
        reach ``count`` (so a figure is at most a poll late); the aiosmtpd sink: the time
        of its last DATA from its status file (rewritten at most every 50 ms)."""
        deadline = time.monotonic() + within
        status = self.log if self.upstream == "smtp-sink" else self.status
        while read_sink(status).count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the upstream did not get message {count}")
            await asyncio.sleep(0.0002)
        seen = time.monotonic()
        if self.upstream == "smtp-sink":
            return seen
        await asyncio.sleep(0.06)
        last = read_sink(status).last
        assert last is not None
        return last


async def measure(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-latency-"))
    servers: list[Server] = []
    arrivals = Arrivals(args.upstream, tmp)
    try:
        smtp_port, http_port = free_port(), free_port()
        sink = Server(args.upstream, arrivals.argv(smtp_port), log=arrivals.log, cwd=tmp)
        servers.append(sink.start())
        await wait_smtp(smtp_port, sink)
        env = {"MAILGATE_DELIVERY__POLL_INTERVAL": "2"}
        if args.fresh_connections:  # a pooled connection is never reused
            env |= {"MAILGATE_DELIVERY__POOL_IDLE_TIMEOUT": "0.001",
                    "MAILGATE_DELIVERY__POOL_MAX_AGE": "0.001"}
        mg = Server(
            "mailgate serve",
            mailgate_argv("serve", "--relay", f"smtp://127.0.0.1:{smtp_port}", "--http",
                          f"127.0.0.1:{http_port}", "--db", f"sqlite:///{tmp / 'db.sqlite3'}",
                          "--log-level", "WARNING"),
            log=tmp / "mailgate.log", cwd=tmp, env=env,
        )
        servers.append(mg.start())
        base = f"http://127.0.0.1:{http_port}"
        await wait_http(f"{base}/healthz", mg)
        after_202, after_post, early = [], [], 0
        async with httpx.AsyncClient(base_url=f"{base}/api/v1", timeout=30) as client:
            for i in range(-args.warmup, args.messages):
                body = {"to": "x@example.com", "subject": f"latency {i}", "text": "hello"}
                posted = arrivals.now()
                response = await client.post("/messages", json=body)
                accepted = arrivals.now()
                assert response.status_code == 202, response.text
                arrived = await arrivals.wait(args.warmup + i + 1)
                if i >= 0:
                    early += arrived <= accepted
                    after_202.append(max(arrived - accepted, 0.0))
                    after_post.append(arrived - posted)
                await asyncio.sleep(args.pause)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    mode = "a fresh connection per message" if args.fresh_connections else "pooled connections"
    print(f"{args.messages} messages one at a time, idle in between, {mode}, "
          f"upstream {args.upstream}:")
    print(f"  202 → upstream 250:  {_summary(after_202)}")
    print(f"  POST → upstream 250: {_summary(after_post)}")
    print(f"  upstream had it before the client had read the 202: {early} of {args.messages}")


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
    p.add_argument("--upstream", choices=["smtp-sink", "aiosmtpd"],
                   default="smtp-sink" if smtp_sink_path() else "aiosmtpd")
    asyncio.run(measure(p.parse_args()))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
