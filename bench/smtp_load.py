"""SMTP capture under load (issue 9, "Speed and size"): ``mailgate dev`` against Postfix's
``smtp-sink`` (the ceiling) and MailDev, in one run, with Postfix's ``smtp-source`` as the
load generator.

Each server runs as its own subprocess (own process group) on 127.0.0.1 with free ports:

- ``mailgate dev --smtp … --http …`` with ``XDG_DATA_HOME`` in a temporary directory (its
  SQLite inbox and self-signed certificate land there) and ``MAILGATE_INBOX__MAX_MESSAGES=0``
  so nothing is pruned while counting;
- ``smtp-sink -c`` (Debian package ``postfix``; accepts and discards);
- MailDev (npm package ``maildev``, looked for under ``--maildev``, default /tmp/maildev)
  with ``--mail-directory`` in the temporary directory; skipped, and said so, when absent.

First the idle resident memory of each server after start-up (mailgate's twice: on its
first start in a new data directory, which makes its certificate and migrates a new store,
then restarted there, as on any later day; the loads run against the restarted one), then
for every load, round and server one ``smtp-source`` run, timed from its start to its exit:

- ``new20`` / ``new100``: a new connection per message (smtp-source's default), 20 / 100
  sessions in parallel;
- ``keep20``: one connection per session (``-d``), 20 sessions;
- ``big``: 50 messages of 10 MB (10,000,000 bytes of payload: with smtp-source's line ends
  and headers just under mailgate's default ``smtp.max_message_size`` of 10 MiB), 10
  sessions, new connection per message; the server's peak RSS (``VmHWM`` after resetting
  it through ``/proc/PID/clear_refs``, and VmRSS of its process group polled every 50 ms)
  and its RSS once the load is over, as smtp-source exits and 2 s later (mailgate gives a
  big message's heap back within a second: mailgate.heap).

After each run the server's count is checked (mailgate ``DELETE /api/v1/inbox``, MailDev's
``/api/email/summary`` then ``DELETE /api/email/all``, smtp-sink's ``mesg=N`` counter) and
emptied. It prints msg/s per server, the ratios and the issue's targets.

    .venv/bin/python bench/smtp_load.py [--messages 5000] [--rounds 1] [--maildev /tmp/maildev]
    .venv/bin/python bench/smtp_load.py --cases new100 --servers mailgate --messages 20000 \\
        --py-spy /tmp/profile.txt          # profile mailgate under py-spy (raw, --threads)

Figures are printed, never asserted; the exit status is 1 only when a message went missing
or smtp-source failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    RECIPIENT,
    SENDER,
    Server,
    free_port,
    machine_summary,
    mailgate_argv,
    mailgate_origin,
    median,
    read_sink,
    run_benchmark,
    smtp_sink_argv,
    smtp_sink_path,
    spread,
    table,
    wait_http,
    wait_smtp,
)

MB = 1_000_000


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    sessions: int
    keep: bool  #: smtp-source -d: all of a session's messages over one connection
    size: int  #: smtp-source -l: payload bytes (headers come on top)
    messages: int


@dataclass
class Target:
    name: str
    kind: str  #: "mailgate" | "maildev" | "smtp-sink"
    server: Server
    port: int
    http: str | None = None  #: base URL of its API (mailgate, MailDev)
    counted: int = 0  #: smtp-sink's counter at the last reset
    idle_rss: int = 0
    #: mailgate's on its first start in a new data directory (it makes its certificate and
    #: migrates a new store); ``idle_rss`` is then that of a restart, as on any later day
    first_rss: int | None = None
    web_rss: int | None = None  #: mailgate's, once its first HTTP request built the web app


@dataclass
class Run:
    case: str
    target: str
    round: int
    messages: int
    stored: int
    seconds: float
    rate: float
    server_cpu: float  #: CPU seconds of the server's process group during the run
    client_cpu: float  #: smtp-source's CPU seconds
    peak_rss: int | None = None  #: bytes; only for the large-message case
    rss_after: int | None = None  #: as smtp-source exits
    #: 2 s later (``AFTER_SETTLED``): mailgate gives a big message's heap back within 1 s
    rss_settled: int | None = None
    errors: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- /proc


def group_pids(pgid: int) -> list[int]:
    """Every live process of the process group ``pgid`` (the server and anything it forked)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def status_bytes(pid: int, key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of one process from /proc/PID/status, in bytes (0 if gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss(pids: list[int]) -> int:
    return sum(status_bytes(p, "VmRSS") for p in pids)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def reset_peak(pids: list[int]) -> None:
    """Reset VmHWM to the current RSS (proc(5), clear_refs value 5)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


class RssPoller:
    """The largest summed VmRSS of ``pids`` seen, sampled every 50 ms while entered."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            self.peak = max(self.peak, rss(self.pids))
            await asyncio.sleep(0.05)

    def __enter__(self) -> RssPoller:
        self._task = asyncio.get_running_loop().create_task(self._poll())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.peak = max(self.peak, rss(self.pids))


# --------------------------------------------------------------------------- servers


def maildev_script(prefix: Path) -> Path | None:
    """MailDev's CLI entry point under an ``npm install --prefix PREFIX maildev``."""
    for candidate in (
        prefix / "node_modules/maildev/dist/bin/maildev.js",
        prefix / "node_modules/.bin/maildev",
        prefix / "bin/maildev.js",
    ):
        if candidate.exists():
            return candidate.resolve()
    return None


def start_servers(args: argparse.Namespace, tmp: Path, servers: list[Server]) -> list[Target]:
    starters: dict[str, Callable[[argparse.Namespace, Path], Target | None]] = {
        "mailgate": start_mailgate,
        "maildev": start_maildev,
        "smtp-sink": start_smtp_sink,
    }
    targets = []
    for name in args.servers:
        target = starters[name](args, tmp)
        if target is not None:
            servers.append(target.server)
            targets.append(target)
    return targets


def start_mailgate(args: argparse.Namespace, tmp: Path) -> Target:
    smtp_port, http_port = free_port(), free_port()
    extra = ["--log-level", args.log_level] if args.log_level else []
    argv = mailgate_argv(
        "dev", "--smtp", f"127.0.0.1:{smtp_port}", "--http", f"127.0.0.1:{http_port}", *extra
    )
    env = {
        "XDG_DATA_HOME": str(tmp / "xdg-data"),
        "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
        "MAILGATE_INBOX__MAX_MESSAGES": "0",
        # memory (the default) or tempfile: big messages spooled to disk as they arrive
        "MAILGATE_SMTP__ATTACHMENT_STORAGE__MODE": args.storage,
        "MAILGATE_SMTP__ATTACHMENT_STORAGE__TEMP_DIR": str(tmp / "attachments"),
    }  # every message must stay countable
    server = Server("mailgate dev", argv, log=tmp / "mailgate.log", cwd=tmp, env=env).start()
    return Target("mailgate dev", "mailgate", server, smtp_port, f"http://127.0.0.1:{http_port}")


def start_maildev(args: argparse.Namespace, tmp: Path) -> Target | None:
    script, node = maildev_script(args.maildev), shutil.which("node")
    if script is None or node is None:
        print(
            f"MailDev: not found under {args.maildev} (npm install --prefix {args.maildev} "
            "maildev) or no node: its column is skipped"
        )
        return None
    smtp_port, web_port = free_port(), free_port()
    (tmp / "maildev-mail").mkdir()
    argv = [
        node,
        str(script),
        "--smtp",
        str(smtp_port),
        "--ip",
        "127.0.0.1",
        "--web",
        str(web_port),
        "--web-ip",
        "127.0.0.1",
        "--mail-directory",
        str(tmp / "maildev-mail"),
        "--silent",
    ]
    server = Server("MailDev", argv, log=tmp / "maildev.log", cwd=tmp).start()
    return Target("MailDev", "maildev", server, smtp_port, f"http://127.0.0.1:{web_port}")


def start_smtp_sink(args: argparse.Namespace, tmp: Path) -> Target | None:
    if smtp_sink_path() is None:
        print("smtp-sink: not found (apt-get install postfix): its column is skipped")
        return None
    port = free_port()
    server = Server("smtp-sink", smtp_sink_argv(port), log=tmp / "smtp-sink.log", cwd=tmp)
    return Target("smtp-sink", "smtp-sink", server.start(), port)


async def wait_ready(t: Target) -> None:
    # mailgate: SMTP only (it listens after the web server), as its first HTTP request
    # builds the web app (mailgate.web.lazy), which an idle capture server has not
    if t.kind == "maildev":
        await wait_http(f"{t.http}/api/healthz", t.server)
    await wait_smtp(t.port, t.server)


def stop_group(server: Server) -> None:
    """SIGTERM (then SIGKILL) the server, then kill whatever is left in its process group."""
    if server.proc is None:
        return
    code = server.stop()
    if code not in (0, None, -signal.SIGTERM):
        print(f"note: {server.name} exited with {code}", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.pid, signal.SIGKILL)


async def take_count(t: Target, api: httpx.AsyncClient, expected: int) -> int:
    """How many messages the target kept since the last call; empties it."""
    if t.kind == "mailgate":
        response = await api.delete(f"{t.http}/api/v1/inbox")
        response.raise_for_status()
        return int(response.json()["deleted"])
    if t.kind == "maildev":
        total, deadline = 0, time.monotonic() + 10
        while total < expected and time.monotonic() < deadline:
            response = await api.get(f"{t.http}/api/email/summary", params={"limit": 1})
            total = int(response.raise_for_status().json()["total"])
            await asyncio.sleep(0.0 if total >= expected else 0.05)
        (await api.delete(f"{t.http}/api/email/all")).raise_for_status()
        return total
    count, deadline = read_sink(t.server.log).count, time.monotonic() + 5
    while count - t.counted < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        count = read_sink(t.server.log).count
    stored, t.counted = count - t.counted, count
    return stored


# --------------------------------------------------------------------------- load


def source_argv(exe: str, case: Case, port: int) -> list[str]:
    keep = ["-d"] if case.keep else []
    return [
        exe,
        *keep,
        "-s",
        str(case.sessions),
        "-m",
        str(case.messages),
        "-l",
        str(case.size),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        "-M",
        "bench.local",
        "-S",
        "smtp-load",
        f"127.0.0.1:{port}",
    ]


async def run_source(argv: list[str], within: float) -> tuple[float, float, list[str]]:
    """Run smtp-source to its end: (seconds, its CPU seconds, errors)."""
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), within)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    seconds = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    errors = (
        []
        if proc.returncode == 0
        else [f"smtp-source exit {proc.returncode}: {err.decode(errors='replace').strip()[-300:]}"]
    )
    return seconds, cpu, errors


async def measure(
    args: argparse.Namespace, t: Target, case: Case, rnd: int, api: httpx.AsyncClient
) -> Run:
    pids = group_pids(t.server.pid)
    big = case.key == "big"
    if big:
        reset_peak(pids)
    cpu0 = cpu_seconds(pids)
    with RssPoller(pids) as poller:
        seconds, client_cpu, errors = await run_source(
            source_argv(args.smtp_source, case, t.port), args.timeout
        )
    server_cpu = cpu_seconds(pids) - cpu0
    peak = max(poller.peak, *(status_bytes(p, "VmHWM") for p in pids)) if big else None
    after = rss(pids) if big else None
    settled = None
    if big:
        await asyncio.sleep(AFTER_SETTLED)
        settled = rss(pids)
    stored = await take_count(t, api, case.messages)
    return Run(
        case.key,
        t.name,
        rnd,
        case.messages,
        stored,
        seconds,
        stored / seconds if seconds > 0 else float("nan"),
        server_cpu,
        client_cpu,
        peak,
        after,
        settled,
        errors,
    )


class PySpy:
    """``py-spy record --threads`` attached to mailgate for the measured loads; py-spy
    writes its file when it gets SIGINT."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.server: Server | None = None

    async def start(self, targets: list[Target]) -> None:
        mailgate = next((t for t in targets if t.kind == "mailgate"), None)
        if self.args.py_spy is None or mailgate is None:
            return
        argv = [
            self.args.py_spy_bin,
            "record",
            "--pid",
            str(mailgate.server.pid),
            "--threads",
            "--rate",
            "100",
            "--format",
            self.args.py_spy_format,
            "-o",
            str(self.args.py_spy),
            *(["--gil"] if self.args.py_spy_gil else []),
        ]
        self.server = Server("py-spy", argv, log=self.tmp / "py-spy.log", cwd=self.tmp).start()
        await asyncio.sleep(1.0)  # let it attach before the load starts

    def stop(self) -> None:
        if self.server is None or self.server.proc is None or not self.server.alive():
            return
        self.server.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.server.proc.wait(60)
        stop_group(self.server)
        print(f"py-spy: {self.args.py_spy} ({self.server.log_tail(2)})")


# --------------------------------------------------------------------------- main


def cases(args: argparse.Namespace) -> list[Case]:
    n = args.messages
    every = [
        Case("new20", "new connection per message, 20 sessions", 20, False, args.size, n),
        Case("new100", "new connection per message, 100 sessions", 100, False, args.size, n),
        Case("keep20", "one connection per session, 20 sessions", 20, True, args.size, n),
        Case(
            "big",
            f"{args.big_size / MB:g} MB × {args.big_messages}, {args.big_sessions} sessions",
            args.big_sessions,
            False,
            args.big_size,
            args.big_messages,
        ),
    ]
    return [c for c in every if c.key in args.cases]


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-smtp-load-"))
    servers: list[Server] = []
    runs: list[Run] = []
    spy = PySpy(args, tmp)
    try:
        targets = start_servers(args, tmp, servers)
        for t in targets:
            await wait_ready(t)
        await asyncio.sleep(args.settle)
        for t in targets:
            t.idle_rss = rss(group_pids(t.server.pid))
        for i, t in enumerate(targets):
            if t.kind == "mailgate":  # again, in the data directory its first start made
                stop_group(t.server)
                again = start_mailgate(args, tmp)
                servers[servers.index(t.server)] = again.server
                await wait_ready(again)
                await asyncio.sleep(args.settle)
                again.first_rss, again.idle_rss = t.idle_rss, rss(group_pids(again.server.pid))
                await wait_http(f"{again.http}/healthz", again.server)
                again.web_rss = rss(group_pids(again.server.pid))
                targets[i] = again
        print(f"machine: {machine_summary()}")
        print(f"measuring: {mailgate_origin()}")
        print(
            f"smtp-source: {args.smtp_source}; {args.messages} messages of {args.size} bytes "
            f"payload per load; rounds {args.rounds}"
        )
        print("idle RSS: " + ", ".join(f"{t.name} {t.idle_rss / MB:.1f} MB" for t in targets))
        for t in targets:
            if t.first_rss is not None:
                print(f"{t.name} on its first start (certificate, migrations): "
                      f"{t.first_rss / MB:.1f} MB; the figure above is a restart")  # fmt: skip
        for t in targets:
            if t.web_rss is not None:
                print(f"{t.name} after its first HTTP request: {t.web_rss / MB:.1f} MB")
        async with httpx.AsyncClient(timeout=120) as api:
            for t in targets:  # warm-up, not counted
                warm = Case("warm", "warm-up", 5, False, args.size, args.warmup)
                await run_source(source_argv(args.smtp_source, warm, t.port), args.timeout)
                await take_count(t, api, args.warmup)
            await spy.start(targets)
            for case in cases(args):
                for rnd in range(args.rounds):
                    for t in targets:
                        run = await measure(args, t, case, rnd, api)
                        runs.append(run)
                        print(progress(run), flush=True)
            spy.stop()
        load_after = machine_summary()
    finally:
        spy.stop()
        for s in reversed(servers):
            stop_group(s)
        if args.keep_tmp:
            print(f"logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nafter: {load_after}\n")
    print(report(args, targets, runs))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "idle_rss": {t.name: t.idle_rss for t in targets},
                    "first_start_rss": {
                        t.name: t.first_rss for t in targets if t.first_rss is not None
                    },
                    "runs": [asdict(r) for r in runs],
                },
                indent=2,
            )
        )
    return 1 if any(r.errors or r.stored != r.messages for r in runs) else 0


#: seconds after a big load before its settled RSS is read
AFTER_SETTLED = 2.0


def progress(run: Run) -> str:
    text = (
        f"  {run.case:>6} {run.target:>13}: {run.rate:9.1f} msg/s  "
        f"server CPU {1000 * run.server_cpu / max(run.stored, 1):.3f} ms/msg  "
        f"stored {run.stored}/{run.messages}"
    )
    if run.peak_rss is not None:
        text += (
            f"  peak RSS {run.peak_rss / MB:.0f} MB, after {(run.rss_after or 0) / MB:.0f} MB,"
            f" {AFTER_SETTLED:g} s later {(run.rss_settled or 0) / MB:.0f} MB"
        )
    return text + (f"  ERRORS: {run.errors}" if run.errors else "")


# --------------------------------------------------------------------------- report

#: The issue's targets, by load: what is compared and the bound.
TARGETS = {
    "new20": "≥ 0.25 × smtp-sink",
    "new100": "≥ 0.25 × smtp-sink",
    "keep20": "≥ 1.5 × MailDev",
    "big": "≥ MailDev's rate, ≤ ½ its peak RSS",
    "idle": "< 50 MB",
}


def report(args: argparse.Namespace, targets: list[Target], runs: list[Run]) -> str:
    names = [t.name for t in targets]

    def pick(case: str, name: str) -> list[Run]:
        return [r for r in runs if r.case == case and r.target == name]

    headers = ["load", *names, "mailgate / smtp-sink", "mailgate / MailDev", "target", "met"]
    rows = [rate_row(c, names, pick) for c in cases(args)]
    rows.append(idle_row(targets))
    return (
        table(headers, rows)
        + "\n\nrates in msg/s; RSS in MB (10^6 bytes)\n\n"
        + detail_table(args, names, pick)
    )


def ratio(a: list[Run], b: list[Run], value: Callable[[Run], float]) -> list[float]:
    """Ratios of runs of the same round, which ran back to back."""
    return [value(x) / value(y) for x, y in zip(a, b, strict=False) if value(y)]


def rate_row(case: Case, names: list[str], pick: Callable[[str, str], list[Run]]) -> list[str]:
    big = case.key == "big"
    cells = []
    for name in names:
        g = pick(case.key, name)
        cell = spread([r.rate for r in g], ".1f" if big else ".0f") if g else "–"
        if big and g:
            cell += f", {median([float(r.peak_rss or 0) for r in g]) / MB:.0f} MB peak"
        cells.append(cell)
    mg, sink, md = (
        pick(case.key, "mailgate dev"),
        pick(case.key, "smtp-sink"),
        pick(case.key, "MailDev"),
    )
    vs_sink = ratio(mg, sink, lambda r: r.rate)
    vs_md = ratio(mg, md, lambda r: r.rate)
    met = "n/a"
    if case.key in ("new20", "new100") and vs_sink:
        met = yes(median(vs_sink) >= 0.25)
    elif case.key == "keep20" and vs_md:
        met = yes(median(vs_md) >= 1.5)
    elif big and vs_md:
        memory = median(ratio(mg, md, lambda r: float(r.peak_rss or 0)))
        met = yes(median(vs_md) >= 1.0 and memory <= 0.5) + f" (memory {memory:.2f}×)"
    return [
        case.label,
        *cells,
        spread(vs_sink, ".2f") if vs_sink else "–",
        spread(vs_md, ".2f") if vs_md else "–",
        TARGETS[case.key],
        met,
    ]


def idle_row(targets: list[Target]) -> list[str]:
    by_name = {t.name: t for t in targets}
    mg = by_name.get("mailgate dev")
    met = yes(mg.idle_rss < 50 * MB) if mg else "n/a"
    first = "" if mg is None or mg.first_rss is None else f" ({mg.first_rss / MB:.1f} first start)"
    return [
        "idle resident memory",
        *(f"{t.idle_rss / MB:.1f} MB" + (first if t is mg else "") for t in targets),
        "–",
        "–",
        TARGETS["idle"],
        met,
    ]


def detail_table(
    args: argparse.Namespace, names: list[str], pick: Callable[[str, str], list[Run]]
) -> str:
    headers = [
        "server",
        "load",
        "msg/s",
        "server CPU ms/msg",
        "server CPU, % of a core",
        "smtp-source CPU, % of a core",
        "peak RSS MB",
        "RSS after MB",
        f"{AFTER_SETTLED:g} s later MB",
        "verified",
    ]
    rows = []
    for case in cases(args):
        for name in names:
            g = pick(case.key, name)
            if not g:
                continue
            peak = [float(r.peak_rss) / MB for r in g if r.peak_rss is not None]
            after = [float(r.rss_after) / MB for r in g if r.rss_after is not None]
            settled = [float(r.rss_settled) / MB for r in g if r.rss_settled is not None]
            rows.append(
                [
                    name,
                    case.key,
                    spread([r.rate for r in g], ".1f"),
                    f"{median([1000 * r.server_cpu / max(r.stored, 1) for r in g]):.3f}",
                    f"{median([100 * r.server_cpu / r.seconds for r in g]):.0f}%",
                    f"{median([100 * r.client_cpu / r.seconds for r in g]):.0f}%",
                    spread(peak, ".0f") if peak else "–",
                    spread(after, ".0f") if after else "–",
                    spread(settled, ".0f") if settled else "–",
                    yes(all(r.stored == r.messages and not r.errors for r in g)),
                ]
            )
    return table(headers, rows)


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--messages", type=int, default=5000, help="messages per small-message load (default 5000)"
    )
    p.add_argument(
        "--size",
        type=int,
        default=1024,
        help="payload bytes of a small message (smtp-source -l; default 1024)",
    )
    p.add_argument("--big-messages", type=int, default=50, help="large messages (default 50)")
    p.add_argument(
        "--big-size",
        type=int,
        default=10 * MB,
        help="payload bytes of a large message (default 10,000,000: the message stays under"
        " mailgate's default smtp.max_message_size of 10 MiB)",
    )
    p.add_argument(
        "--big-sessions", type=int, default=10, help="sessions for the large messages (default 10)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs per load and server; the median is reported (default 1)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=50,
        help="messages sent to each server before measuring (default 50)",
    )
    p.add_argument(
        "--cases",
        default="new20,new100,keep20,big",
        help="loads to run (default new20,new100,keep20,big)",
    )
    p.add_argument(
        "--servers",
        default="mailgate,maildev,smtp-sink",
        help="servers to measure (default mailgate,maildev,smtp-sink)",
    )
    p.add_argument(
        "--maildev",
        type=Path,
        default=Path("/tmp/maildev"),
        help="npm prefix MailDev is installed under (default /tmp/maildev)",
    )
    p.add_argument(
        "--smtp-source",
        default=shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or "",
        help="Postfix's smtp-source (default: found in /usr/sbin)",
    )
    p.add_argument("--log-level", help="mailgate --log-level (default: mailgate's own)")
    p.add_argument(
        "--storage",
        choices=["memory", "tempfile"],
        default="memory",
        help="mailgate's smtp.attachment_storage.mode (tempfile: DATA past 1 MiB goes to disk)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds after start-up before the idle RSS is read (default 2)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="limit per smtp-source run, s")
    p.add_argument("--py-spy", type=Path, help="record mailgate with py-spy into this file")
    p.add_argument("--py-spy-bin", default=shutil.which("py-spy") or "/tmp/spyenv/bin/py-spy")
    p.add_argument(
        "--py-spy-format",
        default="raw",
        help="raw (collapsed stacks, default), speedscope or flamegraph",
    )
    p.add_argument(
        "--py-spy-gil",
        action="store_true",
        help="only samples of the thread holding the GIL (py-spy --gil): where the Python CPU goes",
    )
    p.add_argument("--json", type=Path, help="also write every run as JSON here")
    p.add_argument("--keep-tmp", action="store_true", help="keep logs and data directories")
    args = p.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = set(args.cases) - set(TARGETS) | set(args.servers) - {
        "mailgate",
        "maildev",
        "smtp-sink",
    }
    if unknown or "idle" in args.cases:
        p.error(f"unknown load or server: {sorted(unknown | {'idle'} & set(args.cases))}")
    if min(args.messages, args.big_messages, args.rounds) < 1:
        p.error("--messages, --big-messages and --rounds must be at least 1")
    if not args.smtp_source:
        p.error("smtp-source not found: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
