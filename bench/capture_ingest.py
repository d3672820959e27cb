"""Benchmark (a): SMTP capture ingest of ``mailgate dev``, against a bare aiosmtpd reference.

Starts the real CLI (``mailgate dev --smtp … --http … --db sqlite:///TMP/x.sqlite3``) and a
bare aiosmtpd server that accepts and discards (``_harness.py sink``), each in its own
subprocess, and drives both with the same client harness: C concurrent aiosmtplib
connections, each sending its share of N ~1 KB messages sequentially. For each level it
prints messages/s, the ratio mailgate/reference, and the server CPU per message; after each
mailgate run the inbox is counted through ``GET /api/v1/inbox`` and emptied with
``DELETE /api/v1/inbox``. If ``smtp-sink`` (Debian package postfix) is on PATH it is measured
as a second reference.

    .venv/bin/python bench/capture_ingest.py [--messages 2000] [--levels 1,20,100] [--rounds 1]

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from _harness import (
    BlastResult,
    Server,
    count_pages,
    free_port,
    machine_summary,
    mailgate_argv,
    mailgate_origin,
    make_message,
    median,
    read_sink,
    run_benchmark,
    sink_argv,
    smtp_blast,
    spread,
    table,
    wait_http,
    wait_sink,
    wait_smtp,
)


@dataclass
class Run:
    target: str
    level: int
    round: int
    messages: int
    accepted: int
    seconds: float
    rate: float
    server_cpu: float  #: CPU seconds the server process used during the timed interval
    client_cpu: float
    stored: int | None  #: what the target says it kept (inbox count / sink count)
    errors: list[str]


@dataclass
class Target:
    name: str
    server: Server
    port: int
    kind: str  #: "mailgate" | "sink" | "smtp-sink"
    status: Path | None = None  #: the aiosmtpd sink's status file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=2000, help="messages per level (default 2000)")
    p.add_argument("--levels", default="1,20,100", help="concurrent clients (default 1,20,100)")
    p.add_argument("--size", type=int, default=1024, help="message size in bytes (default 1024)")
    p.add_argument("--rounds", type=int, default=1, help="runs per level and target; the median "
                   "is reported (default 1)")
    p.add_argument("--warmup", type=int, default=50, help="messages sent to each server before "
                   "measuring (default 50)")
    p.add_argument("--no-smtp-sink", action="store_true", help="skip postfix smtp-sink even if "
                   "installed")
    p.add_argument("--log-level", default="INFO", help="mailgate --log-level (default INFO)")
    p.add_argument("--profile", type=Path, help="run mailgate under cProfile, write stats here")
    p.add_argument("--json", type=Path, help="also write every run as JSON here")
    p.add_argument("--timeout", type=float, default=300.0, help="limit per run, seconds")
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if args.messages < 1 or args.rounds < 1 or any(c < 1 for c in args.levels):
        p.error("--messages, --rounds and every level must be at least 1")
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.parent.mkdir(parents=True, exist_ok=True)
    return args


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-capture-"))
    servers: list[Server] = []
    runs: list[Run] = []
    try:
        targets, http_url = start_servers(args, tmp, servers)
        for t in targets:
            if t.kind == "mailgate":
                await wait_http(f"{http_url}/healthz", t.server)
            await wait_smtp(t.port, t.server)
        print(f"machine: {machine_summary()}")
        print(f"measuring: {mailgate_origin()}")
        print(f"{args.messages} messages of {args.size} bytes per level; "
              f"levels {args.levels}; rounds {args.rounds}")
        messages = [make_message(i, args.size) for i in range(args.messages)]
        async with httpx.AsyncClient(base_url=http_url, timeout=60) as api:
            if args.warmup:
                warm = messages[: args.warmup]
                for t in targets:
                    result = await smtp_blast(t.port, warm, 1, within=args.timeout)
                    if t.status is not None:  # let the sink's count settle before measuring
                        await wait_sink(t.status, result.accepted, t.server, within=10)
                await api.delete("/api/v1/inbox")
            for level in args.levels:
                for rnd in range(args.rounds):
                    for t in targets:
                        run = await measure(t, api, messages, level, rnd, args.timeout)
                        runs.append(run)
                        print(f"  {t.name:>17} clients={level:<4} {run.rate:9.1f} msg/s  "
                              f"server CPU {1000 * run.server_cpu / max(run.accepted, 1):.3f} "
                              f"ms/msg  stored {run.stored}/{run.messages}"
                              + (f"  ERRORS {len(run.errors)}: {run.errors[:3]}"
                                 if run.errors else ""), flush=True)
        load_after = machine_summary()
    finally:
        for s in reversed(servers):
            started = time.monotonic()
            code = s.stop()
            took = time.monotonic() - started
            if code not in (0, None, -signal.SIGTERM) or took > 5:
                print(f"note: {s.name} exited with {code} {took:.1f}s after SIGTERM",
                      file=sys.stderr)
        if args.profile is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"profile: {args.profile}*; logs and databases kept in {tmp}")
    print()
    print(f"after: {load_after}")
    print(report([t.name for t in targets], runs, args.levels))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    return 1 if any(r.errors or r.stored != r.messages for r in runs) else 0


def start_servers(
    args: argparse.Namespace, tmp: Path, servers: list[Server]
) -> tuple[list[Target], str]:
    smtp_port, http_port = free_port(), free_port()
    mg = Server(
        "mailgate dev",
        mailgate_argv(
            "dev",
            "--smtp", f"127.0.0.1:{smtp_port}",
            "--http", f"127.0.0.1:{http_port}",
            "--db", f"sqlite:///{tmp / 'x.sqlite3'}",
            "--log-level", args.log_level,
            profile=args.profile,
        ),
        log=tmp / "mailgate.log",
        cwd=tmp,
        # every message must stay countable: no inbox bound during the run
        env={"MAILGATE_INBOX__MAX_MESSAGES": "0"},
    )
    servers.append(mg.start())
    targets = [Target("mailgate dev", mg, smtp_port, "mailgate")]
    ref_port, status = free_port(), tmp / "sink.json"
    ref = Server("aiosmtpd sink", sink_argv(ref_port, status), log=tmp / "sink.log", cwd=tmp)
    servers.append(ref.start())
    targets.append(Target("aiosmtpd sink", ref, ref_port, "sink", status))
    binary = shutil.which("smtp-sink")
    if binary and not args.no_smtp_sink:
        port = free_port()
        # As root, smtp-sink insists on dropping privileges after binding (-u).
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        ss = Server("smtp-sink", [binary, *user, f"127.0.0.1:{port}", "256"],
                    log=tmp / "ss.log", cwd=tmp)
        servers.append(ss.start())
        targets.append(Target("postfix smtp-sink", ss, port, "smtp-sink"))
    return targets, f"http://127.0.0.1:{http_port}"


async def measure(
    t: Target, api: httpx.AsyncClient, messages: list[bytes], level: int, rnd: int, within: float
) -> Run:
    before = read_sink(t.status).count if t.status else 0
    result: BlastResult = await smtp_blast(
        t.port, messages, level, within=within, server_cpu=t.server.cpu_seconds
    )
    stored: int | None
    if t.kind == "mailgate":
        stored = await count_pages(api, "/api/v1/inbox", {"limit": 500})
        (await api.delete("/api/v1/inbox")).raise_for_status()
    elif t.status is not None:
        status = await wait_sink(t.status, before + len(messages), t.server, within=10)
        stored = status.count - before
    else:
        stored = result.accepted  # smtp-sink keeps no count we can read; trust the 250s
    return Run(
        target=t.name,
        level=level,
        round=rnd,
        messages=len(messages),
        accepted=result.accepted,
        seconds=result.seconds,
        rate=result.rate,
        server_cpu=result.server_cpu,
        client_cpu=result.client_cpu,
        stored=stored,
        errors=result.errors,
    )


def report(names: list[str], runs: list[Run], levels: list[int]) -> str:
    """Throughput and ratios per level, then where the CPU went, per target and level."""

    def pick(name: str, level: int) -> list[Run]:
        return [r for r in runs if r.target == name and r.level == level]

    mg, ref = names[0], names[1]
    extra = names[2:]
    headers = ["clients", "mailgate msg/s", "aiosmtpd ref msg/s", "mailgate/ref"]
    for name in extra:
        headers += [f"{name} msg/s", f"mailgate/{name}"]
    headers += ["verified"]
    rows: list[list[str]] = []
    for level in levels:
        m, r = pick(mg, level), pick(ref, level)
        if not m or not r:
            continue
        # Ratios pair the runs of one round, which ran back to back.
        row = [str(level), spread([x.rate for x in m], ".0f"), spread([x.rate for x in r], ".0f"),
               spread([a.rate / b.rate for a, b in zip(m, r, strict=True)], ".2f")]
        for name in extra:
            e = pick(name, level)
            row += [spread([x.rate for x in e], ".0f"),
                    spread([a.rate / b.rate for a, b in zip(m, e, strict=True)], ".2f")]
        ok = all(x.stored == x.messages and not x.errors for x in runs if x.level == level)
        rows.append([*row, "yes" if ok else "NO"])
    cpu_rows: list[list[str]] = []
    for name in names:
        for level in levels:
            g = pick(name, level)
            if g:
                cpu_rows.append([
                    name,
                    str(level),
                    spread([x.rate for x in g], ".0f"),
                    f"{median([1000 * x.server_cpu / max(x.accepted, 1) for x in g]):.2f}",
                    f"{median([100 * x.server_cpu / x.seconds for x in g]):.0f}%",
                    f"{median([100 * x.client_cpu / x.seconds for x in g]):.0f}%",
                ])
    cpu_headers = ["server", "clients", "msg/s", "server CPU ms/msg", "server CPU, % of a core",
                   "bench client CPU, % of a core"]
    return table(headers, rows) + "\n\n" + table(cpu_headers, cpu_rows)


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
