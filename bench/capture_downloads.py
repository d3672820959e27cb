"""Memory of `mailgate dev` while clients download a big part of a captured message at once.

Starts `mailgate dev` (from ``--src``, default this checkout's ``src``) on a new SQLite
store (or on ``--db``, a PostgreSQL URL), captures one message with a part of ``--mib``
MiB, then downloads that part ``--parallel`` times at once, sampling the server's
``RssAnon`` (its heap, not the files it maps) every 10 ms. Prints the growth and the
wall time, per case and attachment storage mode asked for. The cases (``--cases``):

* ``attachment``: an attachment, over the REST API (``/api/v1/inbox/{id}/attachments/0``);
* ``part``: an inline image related to the HTML, over Mailpit's part download
  (``/mailpit/api/v1/message/{id}/part/{PartID}``, the ID from Mailpit's message view).

    .venv/bin/python bench/capture_downloads.py [--mib 50] [--parallel 1,4]
        [--cases attachment,part] [--modes memory,tempfile]
        [--src /path/to/other/checkout/src] [--db postgresql://…] [--ports 43025,43026]

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import threading
import time
import urllib.request
from email import policy
from email.message import EmailMessage
from pathlib import Path

from capture_memory import _anon_mib, _message, running_dev


def _inline_message(mib: int) -> bytes:
    """Text and HTML, an image of ``mib`` MiB related to the HTML (Mailpit's ``Inline``)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "big inline"
    msg.set_content("see the picture")
    msg.add_alternative('<p><img src="cid:picture"></p>', subtype="html")
    payload = msg.get_payload()
    assert isinstance(payload, list) and isinstance(payload[1], EmailMessage)
    payload[1].add_related(os.urandom(mib << 20), maintype="image", subtype="png",
                           cid="<picture>", disposition="inline",
                           filename="picture.png")  # fmt: skip
    return msg.as_bytes(policy=policy.SMTP)


def _part_url(base: str, capture_id: str, case: str) -> str:
    if case == "attachment":
        return f"{base}/api/v1/inbox/{capture_id}/attachments/0"
    with urllib.request.urlopen(f"{base}/mailpit/api/v1/message/{capture_id}") as view:
        part_id = json.load(view)["Inline"][0]["PartID"]
    return f"{base}/mailpit/api/v1/message/{capture_id}/part/{part_id}"


def measure(
    src: Path,
    mode: str,
    case: str,
    raw: bytes,
    parallel: list[int],
    db: str | None,
    ports: tuple[int, int] | None,
) -> None:
    with running_dev(src, mode, db, ports) as (server, smtp, http):
        with smtplib.SMTP("127.0.0.1", smtp, timeout=300) as client:
            client.sendmail("a@example.com", ["b@example.com"], raw)
        base = f"http://127.0.0.1:{http}"
        with urllib.request.urlopen(f"{base}/api/v1/inbox") as listing:
            capture_id = json.load(listing)["items"][0]["id"]
        url = _part_url(base, capture_id, case)
        time.sleep(2)  # settled
        for n in parallel:
            figures = _downloads(server.pid, url, n)
            print(f"{case:10} {mode:8}  {n} at once: {figures}", flush=True)


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
    parser.add_argument("--mib", type=int, default=50, help="the part's size")
    parser.add_argument("--parallel", default="1,4", help="downloads at once, per round")
    parser.add_argument("--cases", default="attachment,part")
    parser.add_argument("--modes", default="memory,tempfile")
    parser.add_argument("--src", type=Path, default=Path(__file__).parent.parent / "src")
    parser.add_argument("--db", help="a PostgreSQL URL (default: a new SQLite file)")
    parser.add_argument("--ports", help="SMTP,HTTP for mailgate (default: free ones)")
    args = parser.parse_args()
    parallel = [int(n) for n in args.parallel.split(",")]
    ports = None
    if args.ports:
        smtp, http = (int(port) for port in args.ports.split(","))
        ports = (smtp, http)
    for case in args.cases.split(","):
        raw = _message(args.mib) if case == "attachment" else _inline_message(args.mib)
        print(f"{args.src}: {case}: one message of {len(raw) / 2**20:.1f} MiB "
              f"({args.mib} MiB {case})")  # fmt: skip
        for mode in args.modes.split(","):
            measure(args.src, mode, case, raw, parallel, args.db, ports)


if __name__ == "__main__":
    main()
