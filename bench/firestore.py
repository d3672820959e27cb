"""Firestore source (issue 8): from a document's write to the upstream's 250, and how
fast 1,000 documents are delivered and written back.

Four parties on one machine: the official Firestore emulator (a JVM this script starts
in a process group of its own and stops at the end, on a free port; shared/PEERS.md),
``mailgate serve --firestore`` as a subprocess on a temporary SQLite database relaying
to an aiosmtpd upstream in this process, and this process writing the documents with
the async client and reading the outcomes back. The upstream notes the monotonic time of each 250
after DATA by the document id, which the bench puts in the subject
(``fs-bench <id>``); the read-back notes when each document was first seen written back
(``delivery.state`` ``SUCCESS``/``ERROR`` for the extension contract, ``state``
``SENT``/``ERROR`` for the simple one): a query every ``--read-interval`` seconds
(0.05) for the final writes since the last one seen, and every 0.25 s a direct read
of the documents delivered over 0.5 s ago and not seen yet (see
:class:`WrittenBack`, and why it is not a listener). Every clock is this process's
``time.monotonic()``.

Each phase gets a fresh ``mailgate serve``, a fresh database and a project of its own
in the emulator (so an empty collection), ``--warmup`` documents that go the whole way
and are not counted, and then:

* ``latency``: ``--documents`` documents, one write each at ``--rate`` a second; per
  document, write acknowledged (``set()`` returned) → upstream 250 (p50, p95, p99,
  max), and 250 → written back;
* ``throughput``: ``--burst`` documents in Firestore batches of ``--batch`` (500 is
  Firestore's most), committed one after another; from the first commit's start to the
  last document seen written back: documents a second end to end, and when the last 250
  and the last write-back came.

``--no-listen`` runs mailgate with ``firestore.listen`` false and a poll every
``--poll-interval`` seconds (1): what polling alone gives. A poll can only find what a
query selects, and no query selects a missing field, so under ``--no-listen`` the
extension's documents are written with ``delivery.state: PENDING`` (the simple
contract's carry ``delivery: null`` always).

Also printed: the CPU seconds of mailgate, of the emulator and of this process during
the phase, this process's event-loop lag (the measuring error), and mailgate's
``/api/v1/stats`` Firestore figures (stream restarts, documents queued).

    .venv/bin/python -m bench.firestore [--phases latency,throughput] [--contract extension]
        [--documents 200] [--rate 20] [--burst 1000] [--batch 500] [--no-listen]
        [--poll-interval 1] [--env MAILGATE_X=V] [--log-level INFO] [--profile FILE]

Figures are printed, never asserted; the exit status is 1 when a document was lost
(no 250, or not written back within ``--timeout`` seconds without progress) or was
written back ``ERROR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

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

JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
COLLECTION = "mail"
SENDER = "bench@example.com"
_SUBJECT = re.compile(rb"^Subject:[ \t]*fs-bench (\S+)", re.IGNORECASE | re.MULTILINE)
#: the state field and its final values, per contract
FINAL = {
    "extension": ("delivery.state", ["SUCCESS", "ERROR"]),
    "simple": ("state", ["SENT", "ERROR"]),
}
SENT = {"SUCCESS", "SENT"}
FINAL_STATES = {"SUCCESS", "SENT", "ERROR"}


# --------------------------------------------------------------------------- the emulator


async def start_emulator(tmp: Path) -> tuple[Server, str]:
    """The emulator JVM on a free port, ready (``GET /`` answers ``Ok``): (server, host)."""
    java = shutil.which("java")
    if java is None or not await asyncio.to_thread(JAR.is_file):
        raise SystemExit(
            f"the Firestore emulator needs java (Java 17) and {JAR}: part of the machine"
            " image (Google Cloud CLI with cloud-firestore-emulator); see shared/PEERS.md"
        )
    port = free_port()
    argv = [
        java,
        "-Duser.language=en",
        "-cp",
        str(JAR),
        MAIN_CLASS,
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
    ]
    server = Server("firestore emulator", argv, log=tmp / "emulator.log", cwd=tmp).start()
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"the emulator exited:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://{host}/")).text.strip() == "Ok":
                    return server, host
            await asyncio.sleep(0.05)
    server.stop()
    raise RuntimeError(f"the emulator did not answer within 60 s:\n{server.log_tail()}")


# --------------------------------------------------------------------------- the upstream


class Upstream:
    """aiosmtpd handler: 250 to every DATA, noting when, by the document id in the subject."""

    def __init__(self) -> None:
        self.replied: dict[str, float] = {}  #: document id → monotonic time of the 250
        self.unknown = 0  #: messages without a bench subject
        self.again = 0  #: a document delivered a second time (kept: the first)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or b""
        found = _SUBJECT.search(content, 0, max(content.find(b"\r\n\r\n"), 0))
        if found is None:
            self.unknown += 1
        elif (key := found.group(1).decode()) in self.replied:
            self.again += 1
        else:
            self.replied[key] = time.monotonic()
        return "250 2.0.0 OK"


# --------------------------------------------------------------------------- the read-back


class WrittenBack:
    """The documents in a final state, and when each was first seen there.

    A query polled every ``interval`` seconds for what was written back lately (the
    final write's server timestamp: extension ``delivery.endTime``, simple
    ``delivery.timestamp``, from :data:`MARGIN` before the latest seen), projected to
    the state and the stamp; and every 0.25 s a direct read of up to 300 documents the
    upstream took over 0.5 s ago and not seen written back yet (the sweep). The time
    noted is when the answer came: late by at most the interval plus one query. A
    document the query could not return (stamped before its lower bound) and the sweep
    found is noted late: those are counted and left out of the intervals.

    Not a listener: the emulator answers every commit to the collection with a RESET
    and the listener's whole result again (one update with 1,000 documents matching
    sends 1,000 document changes), so a read-back listener would cost the emulator and
    this process more with every document written back, and slow down what it
    measures."""

    #: how far before the latest final write seen each query starts again: a commit's
    #: server timestamp is given before it becomes visible, so under load a write-back
    #: can appear after a later-stamped one (the sweep catches any it still misses)
    MARGIN = timedelta(seconds=3)

    def __init__(
        self,
        client: firestore.AsyncClient,
        contract: str,
        interval: float,
        overdue: Callable[[float], list[str]],
    ) -> None:
        name, _ = FINAL[contract]
        self.stamp = "delivery.endTime" if contract == "extension" else "delivery.timestamp"
        self.client = client
        self.collection = client.collection(COLLECTION)
        self.interval = interval
        self.overdue = overdue  #: delivered this long ago and not seen written back
        self.seen: dict[str, tuple[float, str]] = {}  #: id → (monotonic, final state)
        self.swept: set[str] = set()  #: of them, stamped before the query's lower bound
        self.poll_seconds: list[float] = []
        self.errors: list[str] = []
        self._state = name.split(".")
        #: the latest final write's timestamp seen (none before now: ``--existing``
        #: documents are stamped long ago)
        self._since: Any = datetime.now(UTC)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        swept = time.monotonic()
        while True:
            started = time.monotonic()
            try:
                await self._poll()
                if started - swept >= 0.25:
                    swept = started
                    await self.sweep(self.overdue(0.5), most=300)
            except Exception as exc:  # noted and printed; the next poll tries again
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))

    async def _poll(self) -> None:
        """The final writes stamped since ``MARGIN`` before the latest seen, page by page."""
        started = time.monotonic()
        base = self.collection.select([".".join(self._state), self.stamp]).order_by(self.stamp)
        if self._since is not None:
            base = base.where(filter=FieldFilter(self.stamp, ">=", self._since - self.MARGIN))
        latest, last = self._since, None
        while True:
            query = base.limit(500) if last is None else base.start_after(last).limit(500)
            docs = [snap async for snap in query.stream()]
            now = time.monotonic()
            for snap in docs:
                self._note(snap, now)
                stamp = _field(snap.to_dict(), self.stamp.split("."))
                latest = stamp if latest is None or (stamp and stamp > latest) else latest
            if len(docs) < 500:
                break
            last = docs[-1]
        self._since = latest
        self.poll_seconds.append(time.monotonic() - started)

    async def sweep(self, keys: Sequence[str], most: int | None = None) -> None:
        """Read ``keys`` directly: a document whose final write became visible after a
        later one's (so after the query's lower bound had passed it) is found here."""
        refs = [self.collection.document(k) for k in keys if k not in self.seen][:most]
        if refs:
            bound = None if self._since is None else self._since - self.MARGIN
            async for snap in self.client.get_all(refs):
                stamp = _field(snap.to_dict(), self.stamp.split("."))
                if self._note(snap, time.monotonic()) and bound and stamp and stamp < bound:
                    self.swept.add(snap.id)  # the query had passed it: noted late

    def _note(self, snap: Any, now: float) -> bool:
        state = _field(snap.to_dict(), self._state)
        if snap.id in self.seen or state not in FINAL_STATES:
            return False
        self.seen[snap.id] = (now, str(state))
        return True

    def snapshot(self) -> dict[str, tuple[float, str]]:
        return dict(self.seen)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def _field(data: Any, path: Sequence[str]) -> Any:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


# --------------------------------------------------------------------------- one phase


@dataclass
class Phase:
    name: str  #: latency or throughput
    written: dict[str, tuple[float, float]] = field(default_factory=dict)  #: id → (start, ack)
    first_write: float = math.nan
    commits: list[float] = field(default_factory=list)  #: when each write/batch was acked
    replied: dict[str, float] = field(default_factory=dict)
    back: dict[str, tuple[float, str]] = field(default_factory=dict)
    duplicates: int = 0
    unknown: int = 0
    mailgate_cpu: float = math.nan
    emulator_cpu: float = math.nan
    bench_cpu: float = math.nan
    lags: list[float] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    read_seconds: list[float] = field(default_factory=list)  #: the read-back's queries
    swept: set[str] = field(default_factory=set)  #: the query missed them: noted late
    read_errors: list[str] = field(default_factory=list)


def document(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """A document as the contract's users write it, asking for a message to ``x@``."""
    subject = f"fs-bench {key}"
    if args.contract == "simple":
        return {
            "to": "x@example.com",
            "subject": subject,
            "message": {"html": "<p>hello</p>"},
            "delivery": None,
        }
    doc: dict[str, Any] = {
        "to": "x@example.com",
        "from": SENDER,
        "message": {"subject": subject, "text": "hello", "html": "<p>hello</p>"},
    }
    if args.no_listen:
        doc["delivery"] = {"state": "PENDING"}  # a poll's query cannot find a missing field
    return doc


#: when the ``--existing`` documents were sent, as far as they say
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def sent_long_ago(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """A document delivered and written back long ago: the history a collection keeps."""
    doc = document(args, key)
    if args.contract == "simple":
        doc.update(state="SENT", delivery={"success": True, "timestamp": LONG_AGO, "error": None})
    else:
        doc["delivery"] = {"state": "SUCCESS", "attempts": 1, "startTime": LONG_AGO,
                           "endTime": LONG_AGO, "error": None,
                           "info": {"accepted": ["x@example.com"], "rejected": [],
                                    "pending": [], "response": "250 2.0.0 OK"}}  # fmt: skip
    return doc


async def write_existing(args: argparse.Namespace, client: firestore.AsyncClient) -> None:
    """``--existing`` documents sent long ago, in batches of 500, before mailgate starts."""
    collection = client.collection(COLLECTION)
    for start in range(0, args.existing, 500):
        batch = client.batch()
        for i in range(start, min(start + 500, args.existing)):
            key = f"old-{i:06d}"
            batch.set(collection.document(key), sent_long_ago(args, key))
        await batch.commit()


async def run_phase(
    args: argparse.Namespace, name: str, emulator: Server, host: str, index: int
) -> Phase:
    tmp = Path(tempfile.mkdtemp(prefix=f"mailgate-bench-firestore-{name}-"))
    project = f"bench-{os.getpid()}-{index}"
    upstream = Upstream()
    smtp = await start_upstream(upstream)
    client = firestore.AsyncClient(project=project, credentials=AnonymousCredentials())
    reader = WrittenBack(
        client,
        args.contract,
        args.read_interval,
        lambda age: [k for k, t in upstream.replied.items() if t < time.monotonic() - age],
    )
    await reader.start()
    mailgate: Server | None = None
    phase = Phase(name)
    try:
        profile = (
            None if args.profile is None else args.profile.with_name(f"{args.profile.name}.{name}")
        )
        await write_existing(args, client)
        mailgate = start_mailgate(
            args, tmp, host, project, smtp.sockets[0].getsockname()[1], profile
        )
        base = f"http://127.0.0.1:{mailgate.env['MAILGATE_HTTP__PORT']}"
        print(f"    mailgate pid {mailgate.pid}, project {project}", flush=True)
        await wait_http(f"{base}/healthz", mailgate)
        collection = client.collection(COLLECTION)
        warm = [f"warm{index}-{i}" for i in range(args.warmup)]
        for key in warm:
            await collection.document(key).set(document(args, key))
        await wait_done(args, set(warm), upstream, reader, mailgate, within=120)
        polls0 = len(reader.poll_seconds)
        cpu0, mg0, em0 = time.process_time(), mailgate.cpu_seconds(), emulator.cpu_seconds()
        with LoopLag() as lag:
            if name == "latency":
                await write_paced(args, collection, phase)
            else:
                await write_batches(args, client, collection, phase)
            await wait_done(args, set(phase.written), upstream, reader, mailgate)
        phase.bench_cpu = time.process_time() - cpu0
        phase.mailgate_cpu = mailgate.cpu_seconds() - mg0
        phase.emulator_cpu = emulator.cpu_seconds() - em0
        phase.lags = lag.lags
        phase.replied = dict(upstream.replied)
        phase.back = reader.snapshot()
        phase.read_seconds = reader.poll_seconds[polls0:]
        phase.swept, phase.read_errors = set(reader.swept), list(reader.errors)
        phase.duplicates, phase.unknown = upstream.again, upstream.unknown
        phase.stats = await firestore_stats(base)
    finally:
        if mailgate is not None:
            await asyncio.to_thread(mailgate.stop)  # the upstream serves on meanwhile
        await reader.close()
        smtp.close()
        with contextlib.suppress(Exception):
            await client._firestore_api.transport.close()  # the grpc.aio channel
        if args.profile is None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"    kept {tmp} (mailgate.log, the database)", flush=True)
    return phase


def start_mailgate(
    args: argparse.Namespace,
    tmp: Path,
    host: str,
    project: str,
    smtp_port: int,
    profile: Path | None,
) -> Server:
    env = {
        "FIRESTORE_EMULATOR_HOST": host,
        "MAILGATE_FIRESTORE__PROJECT_ID": project,
        "MAILGATE_FIRESTORE__CONTRACT": args.contract,
        "MAILGATE_FIRESTORE__DEFAULT_FROM": SENDER,
        "MAILGATE_RELAY_URL": f"smtp://127.0.0.1:{smtp_port}",
        "MAILGATE_DB_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "MAILGATE_HTTP__PORT": str(free_port()),
    }
    if args.no_listen:
        env["MAILGATE_FIRESTORE__LISTEN"] = "false"
        env["MAILGATE_FIRESTORE__POLL_INTERVAL"] = str(args.poll_interval)
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    argv = mailgate_argv("serve", "--firestore", "--log-level", args.log_level, profile=profile)
    return Server("mailgate serve", argv, log=tmp / "mailgate.log", cwd=tmp, env=env).start()


async def write_paced(args: argparse.Namespace, collection: Any, phase: Phase) -> None:
    """One document a write at ``rate``/s on a fixed schedule (16 writes in flight at most)."""
    room = asyncio.Semaphore(16)

    async def one(key: str) -> None:
        async with room:
            started = time.monotonic()
            await collection.document(key).set(document(args, key))
            phase.written[key] = (started, time.monotonic())
            phase.commits.append(time.monotonic())

    phase.first_write = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for i in range(args.documents):
            due = phase.first_write + i / args.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            group.create_task(one(f"lat-{i:05d}"))


async def write_batches(
    args: argparse.Namespace, client: firestore.AsyncClient, collection: Any, phase: Phase
) -> None:
    """``burst`` documents in batches of ``batch``, each committed after the one before."""
    keys = [f"tp-{i:05d}" for i in range(args.burst)]
    phase.first_write = time.monotonic()
    for start in range(0, len(keys), args.batch):
        batch = client.batch()
        chunk = keys[start : start + args.batch]
        for key in chunk:
            batch.set(collection.document(key), document(args, key))
        started = time.monotonic()
        await batch.commit()
        acked = time.monotonic()
        phase.commits.append(acked)
        phase.written.update((key, (started, acked)) for key in chunk)


async def wait_done(
    args: argparse.Namespace,
    keys: set[str],
    upstream: Upstream,
    reader: WrittenBack,
    mailgate: Server,
    within: float | None = None,
) -> None:
    """Until every document is written back, or nothing happened for ``timeout`` s."""
    progress, last = -1, time.monotonic()
    limit = args.timeout if within is None else within
    while True:
        back = reader.snapshot()
        if keys <= set(back):
            return
        now = len(back) + len(upstream.replied)
        if now != progress:
            progress, last = now, time.monotonic()
        elif time.monotonic() - last > limit:
            await reader.sweep(sorted(keys - set(back)))  # the last word on what is lost
            return
        if not mailgate.alive():
            raise RuntimeError(f"mailgate exited:\n{mailgate.log_tail()}")
        await asyncio.sleep(0.02)


async def firestore_stats(base: str) -> dict[str, Any]:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{base}/api/v1/stats")
            found: dict[str, Any] = response.json().get("firestore") or {}
            return found
    return {}


# --------------------------------------------------------------------------- figures


def secs(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.2f}"


def spread(values: Sequence[float], fmt: Callable[[float], str] = ms) -> str:
    return " / ".join(fmt(pct(values, p)) for p in (50, 95, 99, 100))


@dataclass
class Outcome:
    """What became of a phase's documents."""

    delivered: int  #: reached the upstream
    sent: int  #: written back SUCCESS/SENT
    errors: int  #: written back ERROR
    lost: int  #: not written back (or no 250) in time

    @classmethod
    def of(cls, phase: Phase) -> Outcome:
        keys = set(phase.written)
        sent_keys = {k for k in keys & set(phase.back) if phase.back[k][1] in SENT}
        errors = len(keys & set(phase.back)) - len(sent_keys)
        lost = len(keys - set(phase.back)) + len(sent_keys - set(phase.replied))
        return cls(len(keys & set(phase.replied)), len(sent_keys), errors, lost)


def intervals(
    phase: Phase, begin: Callable[[str], float | None], end: Callable[[str], float | None]
) -> list[float]:
    out = []
    for key in phase.written:
        b, e = begin(key), end(key)
        if b is not None and e is not None:
            out.append(e - b)
    return out


def print_latency(args: argparse.Namespace, phase: Phase, mode: str) -> None:
    acked = intervals(phase, lambda k: phase.written[k][1], phase.replied.get)
    started = intervals(phase, lambda k: phase.written[k][0], phase.replied.get)
    write = intervals(phase, lambda k: phase.written[k][0], lambda k: phase.written[k][1])
    back_at = {k: v[0] for k, v in phase.back.items() if k not in phase.swept}
    back = intervals(phase, phase.replied.get, back_at.get)
    whole = intervals(phase, lambda k: phase.written[k][1], back_at.get)
    o = Outcome.of(phase)
    span = max(phase.commits, default=math.nan) - phase.first_write
    print(
        f"\nlatency, {mode}: {len(phase.written)} documents written one at a time at "
        f"{len(phase.written) / span if span else math.nan:,.1f}/s (asked {args.rate:g}/s)\n"
    )
    rows = [
        ["write acknowledged → upstream 250", str(len(acked)), spread(acked)],
        ["write started → upstream 250", str(len(started)), spread(started)],
        ["the write itself (set() round trip)", str(len(write)), spread(write)],
        ["upstream 250 → seen written back", str(len(back)), spread(back)],
        ["write acknowledged → seen written back", str(len(whole)), spread(whole)],
    ]
    print(table(["ms", "count", "p50 / p95 / p99 / max"], rows))
    print(
        f"\n  target p50 ≤ 100 ms (write → 250): p50 {ms(pct(acked, 50))} ms;"
        f" delivered {o.delivered}, written back SUCCESS {o.sent}, ERROR {o.errors},"
        f" lost {o.lost}, duplicates {phase.duplicates}"
    )


def print_throughput(phase: Phase, mode: str) -> None:
    t0 = phase.first_write
    replies = [phase.replied[k] for k in phase.written if k in phase.replied]
    backs = [phase.back[k][0] for k in phase.written if k in phase.back]
    last_back = max(backs, default=math.nan) - t0
    n = len(phase.written)
    o = Outcome.of(phase)
    acked = intervals(phase, lambda k: phase.written[k][1], phase.replied.get)
    rows = [
        ["writes committed (last batch acknowledged)", secs(max(phase.commits) - t0)],
        ["first upstream 250", secs(min(replies, default=math.nan) - t0)],
        ["last upstream 250", secs(max(replies, default=math.nan) - t0)],
        ["first seen written back", secs(min(backs, default=math.nan) - t0)],
        ["last seen written back", secs(last_back)],
    ]
    print(
        f"\nthroughput, {mode}: {n} documents in batches, seconds from the first commit's start\n"
    )
    print(table(["event", "s"], rows))
    span_250 = max(replies, default=math.nan) - min(replies, default=math.nan)
    span_back = max(backs, default=math.nan) - min(backs, default=math.nan)
    print(
        f"\n  end to end: {n / last_back:,.0f} documents/s (target ≥ 200);"
        f" 250s at {len(replies) / span_250 if span_250 else math.nan:,.0f}/s first to last,"
        f" write-backs at {len(backs) / span_back if span_back else math.nan:,.0f}/s;"
        f"\n  batch commit acknowledged → 250 p50 / p95 / p99 / max ms: {spread(acked)};"
        f"\n  delivered {o.delivered}, written back SUCCESS {o.sent}, ERROR {o.errors},"
        f" lost {o.lost}, duplicates {phase.duplicates}"
    )


def print_run(phases: list[Phase]) -> None:
    print("\nthe run (during each phase, warm-up excluded):\n")
    rows = []
    for p in phases:
        n = max(len(p.written), 1)
        rows.append(
            [
                p.name,
                f"{p.mailgate_cpu:.1f}",
                f"{p.mailgate_cpu / n * 1000:.1f}",
                f"{p.emulator_cpu:.1f}",
                f"{p.bench_cpu:.1f}",
                f"{ms(pct(p.lags, 99))} / {ms(max(p.lags, default=math.nan))}",
                f"{ms(pct(p.read_seconds, 50))} / {ms(max(p.read_seconds, default=math.nan))}",
                str(p.stats.get("stream", "?")),
                str(p.stats.get("stream_restarts", "?")),
                str(p.stats.get("documents_queued", "?")),
            ]
        )
    headers = [
        "phase",
        "mailgate CPU s",
        "mailgate CPU ms/doc",
        "emulator CPU s",
        "bench CPU s",
        "bench loop lag p99/max ms",
        "read-back query p50/max ms",
        "stream",
        "stream restarts",
        "documents queued",
    ]
    print(table(headers, rows))
    print(
        "\n  documents queued: mailgate's count since it started, warm-up included;"
        " read-back: a document is seen written back up to one read interval plus one"
        " query late."
    )


async def measure(args: argparse.Namespace) -> int:
    print(mailgate_origin())
    print(machine_summary())
    mode = f"polling only, every {args.poll_interval:g} s" if args.no_listen else "listener"
    extra = f", env {' '.join(args.env)}" if args.env else ""
    print(
        f"contract {args.contract}, {mode}, {args.existing} documents already sent in the"
        f" collection, +{args.warmup} warm-up documents a phase,"
        f" log level {args.log_level}{extra}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-firestore-"))
    emulator: Server | None = None
    phases: list[Phase] = []
    try:
        emulator, host = await start_emulator(tmp)
        os.environ["FIRESTORE_EMULATOR_HOST"] = host  # for this process's clients
        print(f"emulator on {host} (pid {emulator.pid})")
        for index, name in enumerate(args.phases):
            print(f"  {name} …", flush=True)
            phases.append(await run_phase(args, name, emulator, host, index))
    finally:
        if emulator is not None:
            await asyncio.to_thread(emulator.stop)
        shutil.rmtree(tmp, ignore_errors=True)
    for phase in phases:
        if phase.name == "latency":
            print_latency(args, phase, mode)
        else:
            print_throughput(phase, mode)
    print_run(phases)
    for p in phases:
        if p.swept:
            print(
                f"\n  {p.name}: {len(p.swept)} documents the read-back query missed (stamped"
                " before its lower bound), found by the sweep; left out of the intervals"
            )
        if p.read_errors:
            print(
                f"\n  ! {p.name}: {len(p.read_errors)} read-back errors, the first:"
                f" {p.read_errors[0]}"
            )
    if any(p.unknown for p in phases):
        print(f"\n  ! messages without a bench subject: {sum(p.unknown for p in phases)}")
    return 1 if any(Outcome.of(p).lost or Outcome.of(p).errors for p in phases) else 0


def _phases(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or any(t not in ("latency", "throughput") for t in items):
        raise argparse.ArgumentTypeError("choose from latency, throughput")
    return items


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--phases",
        type=_phases,
        default=["latency", "throughput"],
        help="comma-separated: latency, throughput (default both)",
    )
    p.add_argument("--contract", choices=["extension", "simple"], default="extension")
    p.add_argument("--documents", type=int, default=200, help="documents, latency phase")
    p.add_argument("--rate", type=float, default=20.0, help="writes a second, latency phase")
    p.add_argument("--burst", type=int, default=1000, help="documents, throughput phase")
    p.add_argument("--batch", type=int, default=500, help="documents a Firestore batch (≤ 500)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--existing",
        type=int,
        default=0,
        help="documents already sent and written back in the collection before mailgate"
        " starts (a collection's history)",
    )
    p.add_argument(
        "--no-listen",
        action="store_true",
        help="firestore.listen false: polling alone finds the documents",
    )
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds, with --no-listen")
    p.add_argument(
        "--read-interval",
        type=float,
        default=0.05,
        help="seconds between the bench's read-back queries",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds without progress before the missing documents count lost",
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
        help="run mailgate under cProfile: one stats file a phase, FILE.<phase>",
    )
    p.add_argument("--keep", action="store_true", help="keep each phase's directory (mailgate.log)")
    args = p.parse_args()
    if args.profile is not None:
        args.profile = args.profile.resolve()
    if min(args.documents, args.burst, args.batch) < 1 or min(args.warmup, args.existing) < 0:
        p.error("--documents, --burst and --batch must be positive")
    if args.rate <= 0:
        p.error("--rate must be positive")
    if args.batch > 500:
        p.error("--batch: a Firestore batch holds at most 500 writes")
    if bad := [e for e in args.env if "=" not in e]:
        p.error(f"--env takes NAME=VALUE, not {bad[0]}")
    return run_benchmark(measure(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
