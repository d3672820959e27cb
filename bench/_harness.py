"""Shared pieces of the benchmarks: ports, subprocesses, health checks, the SMTP client
harness, and a bare aiosmtpd sink that accepts and discards mail.

The sink runs as its own process: ``python bench/_harness.py sink --port P --status FILE``.
It counts messages and, at most every 50 ms, rewrites FILE with
``{"count": n, "first": t, "last": t}`` where the times are ``time.monotonic()`` of the
first and latest accepted DATA. On Linux that clock is shared by all processes, so a
benchmark can compare it with its own ``time.monotonic()``.

Postfix's ``smtp-sink`` (C, far faster than any Python sink) is the upstream the relay
benchmarks use when it is installed (``apt-get install postfix``): started with ``-c``
it prints a running ``mesg=N`` counter to its log, which :func:`read_sink` reads too;
the time the last message arrived is then when a poll first saw the count.

Nothing here asserts a figure; the benchmarks only print them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosmtplib
import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SENDER = "bench@example.com"
RECIPIENT = "x@example.com"


# --------------------------------------------------------------------------- ports & processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """This environment without MAILGATE_* settings, so only the flags we pass count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}


def mailgate_argv(*args: str, profile: Path | None = None) -> list[str]:
    """The real CLI from this interpreter's environment (``.venv/bin/mailgate``)."""
    if profile is not None:
        return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "mailgate", *args]
    script = Path(sys.executable).parent / "mailgate"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "mailgate", *args]


def sink_argv(port: int, status: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "sink", "--port", str(port),
            "--status", str(status)]


_TICKS = os.sysconf("SC_CLK_TCK")


def smtp_sink_path() -> str | None:
    """Postfix's ``smtp-sink``, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin:/usr/bin")


def smtp_sink_argv(port: int) -> list[str]:
    """``smtp-sink -c`` on 127.0.0.1:PORT: accepts everything, counts to its output."""
    exe = smtp_sink_path()
    if exe is None:
        raise SystemExit("smtp-sink not found: apt-get install postfix (or --upstream aiosmtpd)")
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
    return [exe, "-c", *user, f"127.0.0.1:{port}", "1000"]


class Server:
    """A server subprocess in its own session (process group); output goes to a log file.

    ``stop()`` sends SIGTERM and waits; if the process does not exit in time the whole
    process group is killed.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.cwd = cwd
        self.env = {**clean_env(), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def start(self) -> Server:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads) so far."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return float("nan")
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def stop(self, timeout: float = 20.0) -> int | None:
        proc = self.proc
        if proc is None or self.returncode is not None:
            return self.returncode
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  ! {self.name} ignored SIGTERM for {timeout:.0f}s; killing its group",
                      file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.returncode = proc.returncode
        return self.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ServerDied(RuntimeError):
    pass


def _check_alive(server: Server) -> None:
    if not server.alive():
        raise ServerDied(f"{server.name} exited ({server.proc and server.proc.poll()}):\n"
                         f"{server.log_tail()}")


async def wait_http(url: str, server: Server, within: float = 60.0) -> None:
    """Poll ``GET url`` until it answers 200, the server dies, or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            _check_alive(server)
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{server.name}: {url} did not answer within {within:.0f}s")


async def wait_smtp(port: int, server: Server, within: float = 30.0) -> None:
    """Wait until 127.0.0.1:port greets with 220."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        _check_alive(server)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 2.0
            )
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        try:
            banner = await asyncio.wait_for(reader.readline(), 5.0)
            writer.write(b"QUIT\r\n")
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if banner.startswith(b"220"):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{server.name}: no SMTP greeting on port {port} within {within:.0f}s")


# --------------------------------------------------------------------------- messages


def body_text(size: int) -> str:
    """ASCII text of exactly ``size`` characters, in lines of 70."""
    line = "The quick brown fox jumps over the lazy dog; pack my box with jugs.  \n"
    return (line * (size // len(line) + 1))[:size]


def make_message(index: int, size: int = 1024) -> bytes:
    """An RFC 5322 text/plain message of about ``size`` bytes (CRLF line ends)."""
    headers = (
        f"From: Bench <{SENDER}>\r\n"
        f"To: <{RECIPIENT}>\r\n"
        f"Subject: bench {index}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        f"Message-ID: <bench-{index}-{os.getpid()}@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
    ).encode()
    body_len = max(size - len(headers) - 2, 16)
    body = body_text(body_len).replace("\n", "\r\n").encode()[:body_len].rstrip(b"\r\n")
    return headers + body + b"\r\n"


def shares(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """Split ``items`` into ``parts`` contiguous shares whose sizes differ by at most one."""
    base, extra = divmod(len(items), parts)
    out: list[list[Any]] = []
    start = 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


# --------------------------------------------------------------------------- SMTP client harness


@dataclass
class BlastResult:
    """What one run of the client harness saw."""

    clients: int
    attempted: int
    accepted: int = 0  #: 250 after DATA
    errors: list[str] = field(default_factory=list)
    seconds: float = float("nan")  #: from the first MAIL to the last reply, all clients
    client_cpu: float = float("nan")  #: this process's CPU seconds in that interval
    server_cpu: float = float("nan")  #: the server's CPU seconds in it, if it was sampled

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else float("nan")


async def smtp_blast(
    port: int,
    messages: Sequence[bytes],
    clients: int,
    *,
    within: float = 300.0,
    server_cpu: Callable[[], float] | None = None,
) -> BlastResult:
    """``clients`` connections to 127.0.0.1:port, each sending its share of ``messages``
    sequentially on one connection. Connecting and QUIT are outside the timed interval;
    ``server_cpu`` (e.g. :meth:`Server.cpu_seconds`) is sampled at its start and end."""
    result = BlastResult(clients=clients, attempted=len(messages))
    parts = [s for s in shares(messages, clients) if s]

    async def connect() -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, timeout=60, local_hostname="bench.local"
        )
        await smtp.connect()
        await smtp.ehlo()
        return smtp

    async def send_share(smtp: aiosmtplib.SMTP, share: list[bytes]) -> None:
        for raw in share:
            try:
                refused, _ = await smtp.sendmail(SENDER, [RECIPIENT], raw)
            except aiosmtplib.SMTPServerDisconnected as exc:
                result.errors.append(f"disconnected: {exc}")
                return
            except aiosmtplib.SMTPException as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if refused:
                result.errors.append(f"refused: {refused}")
            else:
                result.accepted += 1

    conns: list[aiosmtplib.SMTP] = []
    try:
        # Connect in waves so the listen backlog (100 on asyncio servers) is never the issue.
        for wave in shares(range(len(parts)), max(1, (len(parts) + 49) // 50)):
            conns += await asyncio.gather(*(connect() for _ in wave))
        server0 = server_cpu() if server_cpu else float("nan")
        cpu0, t0 = time.process_time(), time.perf_counter()
        async with asyncio.timeout(within):
            await asyncio.gather(*(send_share(c, p) for c, p in zip(conns, parts, strict=True)))
        result.seconds = time.perf_counter() - t0
        result.client_cpu = time.process_time() - cpu0
        if server_cpu:
            result.server_cpu = server_cpu() - server0
    finally:
        for smtp in conns:
            try:
                await asyncio.wait_for(smtp.quit(), 5)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()
    return result


# --------------------------------------------------------------------------- sink status


@dataclass(frozen=True)
class SinkStatus:
    count: int
    first: float | None
    last: float | None


_SMTP_SINK_COUNT = re.compile(rb"mesg=(\d+)")


def read_sink(status: Path) -> SinkStatus:
    """The aiosmtpd sink's status file, or smtp-sink's log (its last ``mesg=N``)."""
    try:
        with status.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError:
        return SinkStatus(0, None, None)
    if not tail.lstrip().startswith(b"{"):
        counts = _SMTP_SINK_COUNT.findall(tail)
        return SinkStatus(int(counts[-1]) if counts else 0, None, None)
    try:
        data = json.loads(tail)
    except ValueError:
        return SinkStatus(0, None, None)
    return SinkStatus(int(data["count"]), data["first"], data["last"])


async def wait_sink(
    status: Path, target: int, server: Server, *, within: float
) -> SinkStatus:
    """Poll the sink's status file until it has counted ``target`` messages (or time is up)."""
    deadline = time.monotonic() + within
    current = read_sink(status)
    while current.count < target and time.monotonic() < deadline:
        _check_alive(server)
        await asyncio.sleep(0.01)
        current = read_sink(status)
    if current.last is None and current.count >= target:  # smtp-sink: when we saw it
        current = SinkStatus(current.count, current.first, time.monotonic())
    return current


# --------------------------------------------------------------------------- HTTP helpers


async def count_pages(
    client: httpx.AsyncClient, path: str, params: dict[str, str | int], *, max_pages: int = 1000
) -> int:
    """Count the items of a paged listing (``items`` + ``next_cursor``)."""
    total = 0
    cursor: str | None = None
    for _ in range(max_pages):
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        response = await client.get(path, params=query)
        response.raise_for_status()
        page = response.json()
        total += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return total


# --------------------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], fmt: str) -> str:
    """The median, and (min–max) when there is more than one value."""
    text = format(median(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)}–{format(max(values), fmt)})"
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def mailgate_origin() -> str:
    """Which mailgate the servers will run: its source directory, and the commit if it is
    this repository's ``src`` (``+dirty`` when src/ has uncommitted changes)."""
    found = subprocess.run(
        [sys.executable, "-c", "import mailgate; print(mailgate.__file__, mailgate.__version__)"],
        capture_output=True, text=True, env=clean_env(), check=False, timeout=60,
    )
    if found.returncode != 0:
        return f"mailgate not importable: {found.stderr.strip()[-200:]}"
    file, version = found.stdout.split()
    where = Path(file).resolve().parent.parent
    origin = f"mailgate {version} from {where}"
    if where == ROOT / "src":
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                                  text=True, check=False, timeout=60).stdout.strip()
        dirty = "+dirty" if git("status", "--porcelain", "--", "src") else ""
        origin += f" (commit {git('rev-parse', '--short', 'HEAD')}{dirty})"
    return origin


def machine_summary() -> str:
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return (
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(load) or 'n/a'}"
    )


# --------------------------------------------------------------------------- running a benchmark


def run_benchmark(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(main)``, with SIGTERM and SIGINT both unwinding it like Ctrl-C, so the
    ``finally`` blocks that stop the servers always run."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # also when started in the background (SIG_IGN)
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- the sink process


class _CountingHandler:
    """Accept every message, keep nothing: no parsing, no storage."""

    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        self.count += 1
        return "250 2.0.0 OK"


async def _run_sink(port: int, status: Path) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = _CountingHandler()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def session() -> Any:
        return SMTP(handler, hostname="sink.local", enable_SMTPUTF8=True, loop=loop)

    def write() -> None:
        tmp = status.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"count": handler.count, "first": handler.first, "last": handler.last})
        )
        os.replace(tmp, status)

    server = await loop.create_server(session, "127.0.0.1", port, backlog=512)
    write()
    written = 0
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
            if handler.count != written:
                written = handler.count
                write()
    finally:
        server.close()
        write()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="benchmark helpers")
    sub = parser.add_subparsers(required=True)
    sink = sub.add_parser("sink", help="bare aiosmtpd server that accepts, counts and discards")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--status", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_run_sink(args.port, args.status))
    return 0


if __name__ == "__main__":
    sys.exit(main())


async def start_upstream(handler: Any) -> asyncio.Server:
    """An aiosmtpd server on a free loopback port answering with ``handler``."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()

    def session() -> Any:
        return SMTP(handler, hostname="upstream.bench", enable_SMTPUTF8=True, loop=loop)

    return await loop.create_server(session, "127.0.0.1", 0, backlog=256)


class LoopLag:
    """How late this process's event loop runs a 5 ms sleep: the measuring error."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.005)
            self.lags.append(time.monotonic() - started - 0.005)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0–100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 1000:,.0f}"
