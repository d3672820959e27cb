"""Benchmark (b): REST enqueue and end-to-end relay through ``mailgate serve`` to a local sink.

Starts Postfix's ``smtp-sink`` as the upstream (``--upstream aiosmtpd``: the bare Python
sink of ``_harness.py`` instead) and, for each mode, a fresh ``mailgate serve --relay
smtp://127.0.0.1:SINK --http … --db sqlite:///TMP/….sqlite3``. Then it POSTs N messages
to ``/api/v1/messages`` from C concurrent requests (one httpx.AsyncClient), either one
message per request or in batches of B, and measures

* enqueue: from the first POST until the last 202 (the dispatcher is delivering meanwhile);
* end-to-end: from the first POST until the sink has accepted all N (the sink's own clock);

then checks through ``GET /api/v1/messages?state=sent`` (paging with ``next_cursor``) that
every message is recorded as sent. The same two modes are also run with the dispatcher
switched off (``MAILGATE_DELIVERY__ENABLED=false``) to show enqueue alone.

Reference, in the same run: the same number of ~1 KB messages sent straight to the sink
with aiosmtplib over P pooled connections (no gateway).

    .venv/bin/python bench/relay.py [--messages 2000] [--concurrency 8] [--batch 100]

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _harness import (
    Server,
    body_text,
    count_pages,
    free_port,
    machine_summary,
    mailgate_argv,
    mailgate_origin,
    make_message,
    read_sink,
    run_benchmark,
    sink_argv,
    smtp_blast,
    smtp_sink_argv,
    smtp_sink_path,
    spread,
    table,
    wait_http,
    wait_sink,
    wait_smtp,
)


@dataclass
class Phase:
    name: str
    batch: int
    deliver: bool
    messages: int
    round: int = 0
    requests: int = 0
    enqueue_s: float = float("nan")  #: first POST → last 202
    e2e_s: float | None = None  #: first POST → the sink accepted the last message
    sent_recorded: int | None = None  #: GET /messages?state=sent after the run
    queued_recorded: int | None = None
    cpu_enqueue: float = float("nan")  #: mailgate CPU seconds, first POST → last 202
    cpu_total: float = float("nan")  #: … first POST → last delivery (or last 202)
    sink_cpu: float = float("nan")
    errors: list[str] = field(default_factory=list)

    @property
    def enqueue_rate(self) -> float:
        return self.messages / self.enqueue_s if self.enqueue_s > 0 else float("nan")

    @property
    def e2e_rate(self) -> float | None:
        return self.messages / self.e2e_s if self.e2e_s else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=2000, help="messages per phase (default 2000)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--batch", type=int, default=100, help="messages per batch request "
                   "(default 100)")
    p.add_argument("--pool", type=int, default=8, help="connections of the direct reference "
                   "(default 8, as mailgate's delivery.pool_size)")
    p.add_argument("--size", type=int, default=1024, help="text body size (default 1024)")
    p.add_argument("--rounds", type=int, default=1, help="repeat everything; medians are "
                   "reported (default 1)")
    p.add_argument("--warmup", type=int, default=20, help="messages relayed before each "
                   "measured phase (default 20)")
    p.add_argument("--no-enqueue-only", action="store_true", help="skip the phases with the "
                   "dispatcher switched off")
    p.add_argument("--upstream", choices=["smtp-sink", "aiosmtpd"],
                   default="smtp-sink" if smtp_sink_path() else "aiosmtpd",
                   help="the sink mailgate relays to (default smtp-sink when installed)")
    p.add_argument("--concurrency-mailgate", type=int, help="MAILGATE_DELIVERY__CONCURRENCY "
                   "(default: mailgate's own)")
    p.add_argument("--log-level", default="INFO", help="mailgate --log-level (default INFO)")
    p.add_argument("--profile", type=Path, help="run mailgate under cProfile; one stats file "
                   "per phase, named PROFILE.<phase>")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--timeout", type=float, default=300.0, help="limit per phase, seconds")
    args = p.parse_args(argv)
    if min(args.messages, args.concurrency, args.batch, args.pool, args.rounds) < 1:
        p.error("--messages, --concurrency, --batch, --pool and --rounds must be at least 1")
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.parent.mkdir(parents=True, exist_ok=True)
    return args


def message_json(index: int, text: str) -> dict[str, Any]:
    return {"to": "x@example.com", "from": "bench@example.com", "subject": f"bench {index}",
            "text": text}


@dataclass
class Reference:
    round: int
    messages: int
    rate: float
    seconds: float
    sink_cpu: float
    errors: list[str]


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-relay-"))
    servers: list[Server] = []
    phases: list[Phase] = []
    refs: list[Reference] = []
    try:
        sink_port = free_port()
        if args.upstream == "smtp-sink":
            status = tmp / "smtp-sink.log"  # its msg=N counter is the status
            sink = Server("smtp-sink", smtp_sink_argv(sink_port), log=status, cwd=tmp)
        else:
            status = tmp / "sink.json"
            sink = Server("aiosmtpd sink", sink_argv(sink_port, status), log=tmp / "sink.log",
                          cwd=tmp)
        servers.append(sink.start())
        await wait_smtp(sink_port, sink)
        print(f"machine: {machine_summary()}")
        print(f"measuring: {mailgate_origin()}")
        print(f"upstream: {args.upstream}")
        print(f"{args.messages} messages, {args.concurrency} concurrent requests, "
              f"batches of {args.batch}, reference over {args.pool} connections, "
              f"rounds {args.rounds}", flush=True)
        raw = [make_message(i, args.size) for i in range(args.messages)]
        warm = await smtp_blast(sink_port, raw[: args.warmup], 1, within=args.timeout)
        await wait_sink(status, warm.accepted, sink, within=10)
        text = body_text(args.size)
        plan = [("single", 1, True), ("batch", args.batch, True)]
        if not args.no_enqueue_only:
            plan += [("single, dispatcher off", 1, False),
                     ("batch, dispatcher off", args.batch, False)]
        for rnd in range(args.rounds):
            ref = await reference(args, sink, sink_port, status, raw, rnd)
            refs.append(ref)
            print(f"  round {rnd}: reference {ref.rate:.1f} msg/s direct to the sink over "
                  f"{args.pool} connections ({ref.seconds:.2f} s)"
                  + (f"  ERRORS {ref.errors[:3]}" if ref.errors else ""), flush=True)
            for index, (name, batch, deliver) in enumerate(plan):
                phase = Phase(name, batch, deliver, args.messages, rnd)
                profile = (
                    args.profile.with_name(f"{args.profile.name}.{rnd}.{index}")
                    if args.profile else None
                )
                await run_phase(args, tmp, f"{rnd}-{index}", phase, sink, sink_port, status,
                                text, profile, servers)
                phases.append(phase)
                print(f"  round {rnd}: {phase.name:>22}: enqueue {phase.enqueue_rate:7.1f} msg/s"
                      + (f", end-to-end {phase.e2e_rate:6.1f} msg/s ({phase.e2e_s:.2f} s)"
                         if phase.e2e_rate else "")
                      + f", sent {phase.sent_recorded}, queued {phase.queued_recorded}"
                      + (f"  ERRORS {len(phase.errors)}: {phase.errors[:3]}"
                         if phase.errors else ""),
                      flush=True)
        load_after = machine_summary()
    finally:
        for s in reversed(servers):
            s.stop()
        if args.profile is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"profile: {args.profile}*; logs and databases kept in {tmp}")

    print()
    print(f"after: {load_after}")
    print(report(args, phases, refs))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(
            {"reference": [asdict(r) for r in refs],
             "phases": [asdict(p) | {"enqueue_rate": p.enqueue_rate, "e2e_rate": p.e2e_rate}
                        for p in phases]},
            indent=2))
    failed = any(r.errors for r in refs) or any(p.errors for p in phases)
    return 1 if failed else 0


async def reference(
    args: argparse.Namespace, sink: Server, port: int, status: Path, raw: list[bytes], rnd: int
) -> Reference:
    """The same messages straight to the sink over ``--pool`` connections, no gateway."""
    before = read_sink(status).count
    result = await smtp_blast(port, raw, args.pool, within=args.timeout,
                              server_cpu=sink.cpu_seconds)
    counted = (await wait_sink(status, before + len(raw), sink, within=10)).count - before
    errors = result.errors + ([f"sink counted {counted}"] if counted != len(raw) else [])
    return Reference(rnd, len(raw), result.rate, result.seconds, result.server_cpu, errors)


async def run_phase(
    args: argparse.Namespace,
    tmp: Path,
    index: str,
    phase: Phase,
    sink: Server,
    sink_port: int,
    status: Path,
    text: str,
    profile: Path | None,
    servers: list[Server],
) -> None:
    http_port = free_port()
    mg = Server(
        f"mailgate serve ({phase.name})",
        mailgate_argv(
            "serve",
            "--relay", f"smtp://127.0.0.1:{sink_port}",
            "--http", f"127.0.0.1:{http_port}",
            "--db", f"sqlite:///{tmp / f'relay-{index}.sqlite3'}",
            "--log-level", args.log_level,
            profile=profile,
        ),
        log=tmp / f"mailgate-{index}.log",
        cwd=tmp,
        env={
            **({} if phase.deliver else {"MAILGATE_DELIVERY__ENABLED": "false"}),
            **({"MAILGATE_DELIVERY__CONCURRENCY": str(args.concurrency_mailgate)}
               if args.concurrency_mailgate else {}),
        },
    )
    servers.append(mg.start())
    base_url = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{base_url}/healthz", mg)
        limits = httpx.Limits(
            max_connections=args.concurrency, max_keepalive_connections=args.concurrency
        )
        async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as api:
            # Submit (and relay) a few first, so every code path has run once and the
            # upstream connections are open.
            before = read_sink(status).count
            for i in range(args.warmup):
                (await api.post("/api/v1/messages", json=message_json(-1 - i, text))
                 ).raise_for_status()
            if phase.deliver:
                await wait_sink(status, before + args.warmup, mg, within=60)
            warm = args.warmup
            items = [message_json(i, text) for i in range(args.messages)]
            bodies: list[Any] = (
                items if phase.batch == 1
                else [items[i : i + phase.batch] for i in range(0, len(items), phase.batch)]
            )
            phase.requests = len(bodies)
            before = read_sink(status).count
            cpu0, sink_cpu0 = mg.cpu_seconds(), sink.cpu_seconds()
            t0 = time.monotonic()
            async with asyncio.timeout(args.timeout):
                await post_all(api, bodies, args.concurrency, phase)
            phase.enqueue_s = time.monotonic() - t0
            phase.cpu_enqueue = mg.cpu_seconds() - cpu0
            if phase.deliver:
                done = await wait_sink(status, before + args.messages, mg, within=args.timeout)
                if done.count >= before + args.messages and done.last is not None:
                    phase.e2e_s = done.last - t0
                else:
                    phase.errors.append(f"sink got {done.count - before} of {args.messages} "
                                        f"within {args.timeout:.0f}s")
            phase.cpu_total = mg.cpu_seconds() - cpu0
            phase.sink_cpu = sink.cpu_seconds() - sink_cpu0
            await verify(api, phase, warm)
    finally:
        code = mg.stop()
        if code != 0:
            phase.errors.append(f"mailgate exited with {code}: {mg.log_tail(5)}")


async def post_all(
    api: httpx.AsyncClient, bodies: list[Any], workers: int, phase: Phase
) -> None:
    """POST every body, ``workers`` requests in flight; check each 202."""
    pending = iter(bodies)

    async def worker() -> None:
        for body in pending:
            response = await api.post("/api/v1/messages", json=body)
            expected = len(body) if isinstance(body, list) else 1
            if response.status_code != 202:
                phase.errors.append(f"POST: {response.status_code} {response.text[:200]}")
                continue
            data = response.json()
            if data["queued"] != expected or data["rejected"] or data["duplicates"]:
                phase.errors.append(f"POST: unexpected {str(data)[:200]}")

    await asyncio.gather(*(worker() for _ in range(workers)))


async def verify(api: httpx.AsyncClient, phase: Phase, warm: int) -> None:
    """Every message is recorded: sent when delivering, else still queued."""
    deadline = time.monotonic() + 30
    expected_sent = phase.messages + warm if phase.deliver else 0
    while True:  # the sink's 250 comes a moment before the attempt is committed
        phase.sent_recorded = await count_pages(
            api, "/api/v1/messages", {"state": "sent", "limit": 500}
        )
        if phase.sent_recorded >= expected_sent or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    phase.queued_recorded = await count_pages(
        api, "/api/v1/messages", {"state": "queued", "limit": 500}
    )
    expected_queued = 0 if phase.deliver else phase.messages + warm
    if phase.sent_recorded != expected_sent or phase.queued_recorded != expected_queued:
        phase.errors.append(
            f"recorded sent={phase.sent_recorded} queued={phase.queued_recorded}, expected "
            f"sent={expected_sent} queued={expected_queued}"
        )


def report(args: argparse.Namespace, phases: list[Phase], refs: list[Reference]) -> str:
    ref_rate = {r.round: r.rate for r in refs}

    headers = ["phase", "requests", "enqueue msg/s", "end-to-end msg/s", "end-to-end s",
               "e2e / reference", "mailgate CPU ms/msg", "verified"]
    rows: list[list[str]] = []
    for name in dict.fromkeys(p.name for p in phases):
        group = [p for p in phases if p.name == name]
        e2e = [p for p in group if p.e2e_rate and p.e2e_s]
        rows.append([
            name,
            str(group[0].requests),
            spread([p.enqueue_rate for p in group], ".0f"),
            spread([p.e2e_rate for p in e2e if p.e2e_rate], ".0f") if e2e else "–",
            spread([p.e2e_s for p in e2e if p.e2e_s], ".2f") if e2e else "–",
            spread([p.e2e_rate / ref_rate[p.round] for p in e2e if p.e2e_rate], ".3f")
            if e2e else "–",
            spread([1000 * p.cpu_total / p.messages for p in group], ".2f"),
            "no" if any(p.errors for p in group) else "yes",
        ])
    rates = [r.rate for r in refs]
    rows.append([
        f"reference: direct, {args.pool} conns", "–", "–", spread(rates, ".0f"),
        spread([args.messages / r for r in rates], ".2f"), "1",
        "(sink " + spread([1000 * r.sink_cpu / r.messages for r in refs], ".2f") + ")",
        "no" if any(r.errors for r in refs) else "yes",
    ])
    return table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
