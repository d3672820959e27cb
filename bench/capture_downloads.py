"""Memory of `mailgate dev` while clients download a big captured attachment at once.

Starts `mailgate dev` (from ``--src``, default this checkout's ``src``) on a new SQLite
store (or on ``--db``, a PostgreSQL URL), captures one message with an attachment of
``--mib`` MiB, then downloads that attachment ``--parallel`` times at once over the REST
API, sampling the server's ``RssAnon`` (its heap, not the files it maps) every 10 ms.
Prints the growth and the wall time, in each attachment storage mode asked for.

    .venv/bin/python bench/capture_downloads.py [--mib 50] [--parallel 1,4]
        [--modes memory,tempfile] [--src /path/to/other/checkout/src] [--db postgresql://…]

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import smtplib
import threading
import time
import urllib.request
from pathlib import Path

from capture_memory import _anon_mib, _message, start_dev


def measure(src: Path, mode: str, raw: bytes, parallel: list[int], db: str | None) -> None:
    server, smtp, http = start_dev(src, mode, db)
    try:
        with smtplib.SMTP("127.0.0.1", smtp, timeout=300) as client:
            client.sendmail("a@example.com", ["b@example.com"], raw)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/v1/inbox") as listing:
            capture_id = json.load(listing)["items"][0]["id"]
        url = f"http://127.0.0.1:{http}/api/v1/inbox/{capture_id}/attachments/0"
        time.sleep(2)  # settled
        for n in parallel:
            print(f"{mode:8}  {n} at once: " + _downloads(server.pid, url, n), flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def _downloads(pid: int, url: str, n: int) -> str:
    idle = peak = _anon_mib(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _anon_mib(pid))
            time.sleep(0.01)

    def fetch() -> None:
        with urllib.request.urlopen(url) as response:
            while response.read(1 << 20):
                pass

    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.perf_counter()
    clients = [threading.Thread(target=fetch) for _ in range(n)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    took = time.perf_counter() - began
    time.sleep(0.5)
    done.set()
    sampler.join()
    return f"RssAnon idle {idle} MiB, peak {peak} MiB (+{peak - idle}), {took:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=50, help="the attachment's size")
    parser.add_argument("--parallel", default="1,4", help="downloads at once, per round")
    parser.add_argument("--modes", default="memory,tempfile")
    parser.add_argument("--src", type=Path, default=Path(__file__).parent.parent / "src")
    parser.add_argument("--db", help="a PostgreSQL URL (default: a new SQLite file)")
    args = parser.parse_args()
    raw = _message(args.mib)
    parallel = [int(n) for n in args.parallel.split(",")]
    print(f"{args.src}: one message of {len(raw) / 2**20:.1f} MiB ({args.mib} MiB attachment)")
    for mode in args.modes.split(","):
        measure(args.src, mode, raw, parallel, args.db)


if __name__ == "__main__":
    main()
