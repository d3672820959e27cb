"""Live inbox events (issue 10): from the SMTP ``250`` after DATA to Mailpit's WebSocket
``new`` frame for that message.

Two parties: ``mailgate dev`` as a subprocess on SQLite, and this process, which sends
mail with aiosmtplib over the real SMTP port and reads ``/mailpit/api/events`` with the
``websockets`` client. Each message's subject names it; the client notes the
``time.monotonic()`` at which its DATA got 250, the reader when its ``new`` frame was
parsed. Latency = frame − 250. The gateway publishes before it answers 250, so on an idle
machine a frame may beat the client's own read of the reply: a latency below zero.

* ``paced``: one connection, ``--rate`` messages per second, ``--messages`` of them;
* ``burst``: ``--messages`` over ``--connections`` connections as fast as they go.

Printed per phase: count, p50, p95, max, frames missing after ``--timeout`` seconds,
the reader's event-loop lag (the measuring error) and mailgate's CPU seconds.

    .venv/bin/python bench/inbox_events.py [--messages 500] [--rate 50] [--connections 4]

``PYTHONPATH=snapshot/src`` measures a snapshot, as the other benchmarks do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
from websockets.asyncio.client import ClientConnection, connect

from _harness import (
    RECIPIENT,
    SENDER,
    LoopLag,
    Server,
    free_port,
    machine_summary,
    mailgate_argv,
    mailgate_origin,
    ms,
    pct,
    run_benchmark,
    shares,
    table,
    wait_http,
    wait_smtp,
)


@dataclass
class Phase:
    name: str
    accepted: dict[str, float] = field(default_factory=dict)  #: subject → 250 time
    heard: dict[str, float] = field(default_factory=dict)  #: subject → frame time
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0


def message(subject: str) -> bytes:
    return (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: {subject}\r\n\r\nhello\r\n").encode()


async def listen(ws: ClientConnection, phases: dict[str, Phase]) -> None:
    async for raw in ws:
        frame = json.loads(raw)
        if frame["Type"] != "new":
            continue
        subject = frame["Data"]["Subject"]
        phase = phases.get(subject.partition(" ")[0])
        if phase is not None:
            phase.heard[subject] = time.monotonic()
            if len(phase.heard) >= phase.expected:
                phase.done.set()


async def send_all(port: int, phase: Phase, subjects: list[str], rate: float | None) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False)
    async with client as smtp:
        started = time.monotonic()
        for i, subject in enumerate(subjects):
            if rate is not None:
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            await smtp.sendmail(SENDER, [RECIPIENT], message(subject))
            phase.accepted[subject] = time.monotonic()


async def run_phase(
    args: argparse.Namespace, port: int, phases: dict[str, Phase], name: str, server: Server
) -> list[str]:
    phase = phases[name] = Phase(name, expected=args.messages)
    subjects = [f"{name} {i}" for i in range(args.messages)]
    cpu = server.cpu_seconds()
    with LoopLag() as lag:
        if name == "paced":
            await send_all(port, phase, subjects, args.rate)
        else:
            parts = shares(subjects, args.connections)
            await asyncio.gather(*(send_all(port, phase, part, None) for part in parts))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(phase.done.wait(), args.timeout)
    latencies = [phase.heard[s] - phase.accepted[s] for s in phase.accepted if s in phase.heard]
    return [
        name,
        str(len(latencies)),
        ms(pct(latencies, 50)),
        ms(pct(latencies, 95)),
        ms(max(latencies, default=float("nan"))),
        str(len(phase.accepted) - len(latencies)),
        ms(max(lag.lags, default=0.0)),
        f"{server.cpu_seconds() - cpu:.1f}",
    ]


async def measure(args: argparse.Namespace) -> int:
    print(mailgate_origin())
    print(machine_summary())
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-") as tmp:
        smtp_port, http_port = free_port(), free_port()
        argv = mailgate_argv(
            "dev",
            "--smtp", f"127.0.0.1:{smtp_port}",
            "--http", f"127.0.0.1:{http_port}",
            "--db", f"sqlite:///{Path(tmp) / 'bench.sqlite3'}",
        )  # fmt: skip
        with Server("mailgate dev", argv, log=Path(tmp) / "mailgate.log", cwd=Path(tmp)) as srv:
            await wait_http(f"http://127.0.0.1:{http_port}/healthz", srv)
            await wait_smtp(smtp_port, srv)
            url = f"ws://127.0.0.1:{http_port}/mailpit/api/events"
            phases: dict[str, Phase] = {}
            async with connect(url, max_queue=None) as ws:
                reader = asyncio.create_task(listen(ws, phases))
                await send_all(smtp_port, Phase("warmup"), ["warmup 0"], None)
                rows = [
                    await run_phase(args, smtp_port, phases, name, srv)
                    for name in args.modes.split(",")
                ]
                reader.cancel()
    headers = ["phase", "heard", "p50 ms", "p95 ms", "max ms", "missing", "lag ms", "CPU s"]
    print(table(headers, rows))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="paced: messages per second")
    parser.add_argument("--connections", type=int, default=4, help="burst: SMTP connections")
    parser.add_argument("--modes", default="paced,burst")
    parser.add_argument("--timeout", type=float, default=30.0)
    return run_benchmark(measure(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
