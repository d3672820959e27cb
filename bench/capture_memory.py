"""Memory of `mailgate dev` while it captures one message with a big attachment.

Starts `mailgate dev` (from ``--src``, default this checkout's ``src``) on a new SQLite
store (or on ``--db``, a PostgreSQL URL), sends one message with an attachment of
``--mib`` MiB (CRLF lines, as SMTP has them) with smtplib, and samples the server's
``RssAnon`` (its heap: not the files it maps) every 10 ms. Prints the idle figure, the
peak and the time the client waited for its 250, in each attachment storage mode asked
for, and the longest a second session waited meanwhile for the answer to a NOOP (sent
one after the other from its own process): how long the message held the event loop.
With ``--webhook`` the message is also handed, as its capture event, to a webhook in this
process (``smtp.handlers``; it reads the whole POST and answers CONTINUE), as a capture
server with handlers does it.

    .venv/bin/python bench/capture_memory.py [--mib 50] [--modes memory,tempfile]
        [--src /path/to/other/checkout/src] [--db postgresql://…] [--webhook]

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _anon_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no RssAnon")


def _message(mib: int) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "big"
    msg.set_content("see attached")
    msg.add_attachment(os.urandom(mib << 20), maintype="application",
                       subtype="octet-stream", filename="big.bin")  # fmt: skip
    return msg.as_bytes(policy=policy.SMTP)


@contextlib.contextmanager
def running_dev(
    src: Path,
    mode: str,
    db: str | None,
    ports: tuple[int, int] | None = None,
    handlers: list[str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """`mailgate dev` from ``src`` in attachment storage ``mode``, on ``db`` or a new
    SQLite file, with no message size limit (and ``handlers`` as ``smtp.handlers``), once
    it answers on SMTP: the process (in a session of its own), its SMTP port, its HTTP
    port (``ports``, else free ones). On the way out the process group is stopped and its
    temporary directory removed."""
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-") as name:
        server, smtp, http = _start_dev(Path(name), src, mode, db, ports, handlers or [])
        try:
            yield server, smtp, http
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()


def _start_dev(
    work: Path,
    src: Path,
    mode: str,
    db: str | None,
    ports: tuple[int, int] | None,
    handlers: list[str],
) -> tuple[subprocess.Popen[bytes], int, int]:
    smtp, http = ports or (_free_port(), _free_port())
    env = dict(os.environ, PYTHONPATH=str(src), HOME=str(work),
               MAILGATE_SMTP__MAX_MESSAGE_SIZE="0",
               MAILGATE_SMTP__HANDLERS=json.dumps(handlers),
               MAILGATE_SMTP__ATTACHMENT_STORAGE__MODE=mode,
               MAILGATE_SMTP__ATTACHMENT_STORAGE__TEMP_DIR=str(work / "att"))  # fmt: skip
    command = [sys.executable, "-m", "mailgate", "dev", "--db", db or f"sqlite:///{work}/m.db",
               "--smtp", f"127.0.0.1:{smtp}", "--http", f"127.0.0.1:{http}"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", smtp), 1).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, smtp, http


class _Continue(BaseHTTPRequestHandler):
    """A capture webhook: reads the event whole, answers CONTINUE."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "8")
        self.end_headers()
        self.wfile.write(b"CONTINUE")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _webhook(wanted: bool) -> Iterator[list[str]]:
    """A webhook's URL in a list (none unless ``wanted``), served from a thread."""
    if not wanted:
        yield []
        return
    with ThreadingHTTPServer(("127.0.0.1", 0), _Continue) as hook:
        serving = threading.Thread(target=hook.serve_forever, daemon=True)
        serving.start()
        try:
            yield [f"http://127.0.0.1:{hook.server_address[1]}/capture"]
        finally:
            hook.shutdown()


def measure(src: Path, mode: str, raw: bytes, db: str | None, webhook: bool = False) -> str:
    with (
        _webhook(webhook) as hooks,
        running_dev(src, mode, db, handlers=hooks) as (
            server,
            smtp,
            _,
        ),
    ):
        time.sleep(2)  # settled
        idle = peak = _anon_mib(server.pid)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _anon_mib(server.pid))
                time.sleep(0.01)

        # in a process of its own: smtplib's dot-stuffing of the big message holds this
        # one's GIL for tens of milliseconds
        pinger = subprocess.Popen([sys.executable, "-c", _PING, str(smtp)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        assert pinger.stdout is not None and pinger.stdin is not None
        pinger.stdout.readline()  # connected
        sampler = threading.Thread(target=sample)
        sampler.start()
        began = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", smtp, timeout=300) as client:
            client.sendmail("a@example.com", ["b@example.com"], raw)
        waited = time.perf_counter() - began
        time.sleep(1)
        done.set()
        sampler.join()
        longest = float(pinger.communicate(b"")[0])
        return (f"{mode:8}  RssAnon idle {idle} MiB, peak {peak} MiB (+{peak - idle}), "
                f"250 after {waited:.2f} s, longest NOOP {longest * 1000:.0f} ms")  # fmt: skip


#: NOOP after NOOP on a session of its own until its stdin closes; prints the longest wait
_PING = """
import smtplib, sys, threading, time
smtp = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=300)
print("ready", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
longest = 0.0
while not done.is_set():
    sent = time.perf_counter()
    smtp.noop()
    longest = max(longest, time.perf_counter() - sent)
    time.sleep(0.001)
smtp.quit()
print(longest)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=50, help="the attachment's size")
    parser.add_argument("--modes", default="memory,tempfile")
    parser.add_argument("--src", type=Path, default=Path(__file__).parent.parent / "src")
    parser.add_argument("--db", help="a PostgreSQL URL (default: a new SQLite file)")
    parser.add_argument("--webhook", action="store_true",
                        help="hand each message to a webhook too (smtp.handlers)")  # fmt: skip
    args = parser.parse_args()
    raw = _message(args.mib)
    print(f"{args.src}: one message of {len(raw) / 2**20:.1f} MiB "
          f"({args.mib} MiB attachment)")  # fmt: skip
    for mode in args.modes.split(","):
        print(measure(args.src, mode, raw, args.db, args.webhook), flush=True)


if __name__ == "__main__":
    main()
