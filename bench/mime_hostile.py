"""How long one parse of a hostile message's MIME structure takes, against normal mail.

Each shape is built to ``--sizes`` (MiB) and parsed once by ``parse_message`` (what
capture, the attachment downloads, submission and Postmark run) and by ``mime_parts``
(what Mailpit's message view, its part downloads and the UI frame run), each in a
child process of its own importing mailgate from ``--src`` (default: this checkout's
``src``), ``--repeat`` times (the fastest counts), stopped after ``--timeout``
seconds. The shapes:

* ``ct-params``: one ``Content-Type: multipart/mixed; boundary=x; a0=1; a1=1; …``;
* ``rfc2231``: one ``Content-Disposition`` of ``filename*0*=…; filename*1*=…; …``;
* ``parts-8``: 999 parts, each with a Content-Type and a Content-Disposition of 4
  parameters, a Content-Transfer-Encoding and a Content-ID, all distinct (within the
  message's parameter budget, which lets 8 a part through at the parts bound);
* ``parts-0``: the same without parameters (what the parts bound alone leaves);
* ``parts-128``: 999 parts of 64 + 64 parameters each;
* ``quoted``: 999 parts, each a Content-Type with one 8 KiB quoted name;
* ``normal-1000``: 999 PDF attachments with Outlook's fields (name, filename, size,
  creation-date, modification-date), the most a normal message has;
* ``normal-1``: one attachment.

Each is a multipart/mixed whose first part is text, padded to the size asked for
where the shape is smaller (999 parts and the text make the 1,000 the parts bound
lists; ``parts-*`` and ``quoted`` are the size they are). Prints milliseconds, per
MiB, and how many problems ``parse_message`` recorded.

    .venv/bin/python bench/mime_hostile.py [--sizes 0.1,1,10] [--shapes ct-params,…]
        [--timeout 60] [--repeat 3] [--src /path/to/other/checkout/src]

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _harness import machine_summary, table

HEAD = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hostile\r\nMIME-Version: 1.0\r\n"


def _filled(fields: bytes, size: int, unit: Callable[[int], bytes], tail: bytes) -> bytes:
    """``HEAD``, ``fields`` and as many ``unit(i)`` as fit ``size``, then ``tail``."""
    out = [HEAD, fields]
    total, i = len(HEAD) + len(fields) + len(tail), 0
    while total < size:
        piece = unit(i)
        out.append(piece)
        total, i = total + len(piece), i + 1
    out.append(tail)
    return b"".join(out)


def _padded(parts: bytes, size: int) -> bytes:
    """A multipart/mixed of ``parts`` (boundary ``x``), padded with text to ``size``."""
    head = HEAD + b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
    pad = max(0, size - len(head) - len(parts) - 40)
    text = b"--x\r\nContent-Type: text/plain\r\n\r\n" + (b"filler text\r\n" * (pad // 13 + 1))
    return head + text + parts + b"--x--\r\n"


def _params(prefix: bytes, count: int, index: int) -> bytes:
    return b"".join(b";\r\n %s%d=v%d" % (prefix, n, index) for n in range(count))


def build(shape: str, size: int) -> bytes:
    if shape == "ct-params":
        return _filled(
            b"Content-Type: multipart/mixed; boundary=x", size,
            lambda i: b"; a%d=1" % i, b"\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n",
        )  # fmt: skip
    if shape == "rfc2231":
        return _filled(
            b"Content-Type: application/pdf\r\nContent-Disposition: attachment", size,
            lambda i: b"; filename*%d*=a" % i, b"\r\n\r\n%PDF\r\n",
        )  # fmt: skip
    if shape in ("parts-8", "parts-128", "parts-0"):
        count = {"parts-8": 4, "parts-0": 0}.get(shape, 64)
        parts = b"".join(
            b"--x\r\nContent-Type: application/x-%d%s\r\nContent-Disposition: attachment%s"
            b"\r\nContent-Transfer-Encoding: 8bit-%d\r\nContent-ID: <%d@example>\r\n\r\n"
            b"%d\r\n" % (i, _params(b"t", count, i), _params(b"d", count, i), i, i, i)
            for i in range(999)
        )
        return _padded(parts, size)
    if shape == "quoted":
        parts = b"".join(
            b'--x\r\nContent-Type: application/pdf; name="%d%s"\r\n\r\n%d\r\n' % (i, b"n" * 8180, i)
            for i in range(999)
        )
        return _padded(parts, size)
    if shape in ("normal-1000", "normal-1"):
        count = 999 if shape == "normal-1000" else 1
        body = base64.encodebytes(os.urandom(max(1, size // count * 3 // 4 - 600)))
        parts = b"".join(
            b'--x\r\nContent-Type: application/pdf; name="report-%d.pdf"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="report-%d.pdf"; size=%d;\r\n'
            b' creation-date="Mon, 07 Dec 2026 10:00:00 GMT";\r\n'
            b' modification-date="Mon, 07 Dec 2026 10:00:00 GMT"\r\n\r\n'
            % (i, i, len(body))
            + body.replace(b"\n", b"\r\n")
            for i in range(count)
        )
        return _padded(parts, size)
    raise SystemExit(f"unknown shape {shape}")


def child(shape: str, size: int, function: str, repeat: int) -> None:
    """Runs in the child: build, parse ``repeat`` times, print the fastest parse's
    milliseconds and how many problems ``parse_message`` recorded."""
    from mailgate.mime import parse_message
    from mailgate.mime.parts import mime_parts

    raw = build(shape, size)
    best, problems = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        if function == "parse_message":
            problems = len(parse_message(raw).problems)
        else:
            mime_parts(raw, contents=False)
        best = min(best, time.perf_counter() - started)
    print(json.dumps({"ms": 1000 * best, "size": len(raw), "problems": problems}))


def measure(
    src: Path, shape: str, size: int, function: str, timeout: float, repeat: int
) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    argv = [sys.executable, __file__, "--child", shape, str(size), function, str(repeat)]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              check=True)  # fmt: skip
    except subprocess.TimeoutExpired:
        return [f"> {timeout * 1000:.0f}", "", "", ""]
    found = json.loads(done.stdout)
    mib = found["size"] / 2**20
    problems = str(found["problems"]) if function == "parse_message" else ""
    return [f"{found['ms']:.1f}", f"{found['ms'] / mib:.1f}", f"{mib:.2f}", problems]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0.1,1,10", help="MiB, comma-separated")
    parser.add_argument(
        "--shapes",
        default="ct-params,rfc2231,parts-8,parts-0,parts-128,quoted,normal-1000,normal-1",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per parse")
    parser.add_argument("--src", type=Path, default=Path(__file__).parent.parent / "src")
    parser.add_argument("--repeat", type=int, default=3, help="parses; the fastest counts")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        shape, size, function, repeat = args.child
        child(shape, int(size), function, int(repeat))
        return 0
    print(f"machine: {machine_summary()}")
    print(f"measuring: {args.src}")
    rows = []
    for shape in args.shapes.split(","):
        for mib in (float(s) for s in args.sizes.split(",")):
            size = int(mib * 2**20)
            for function in ("parse_message", "mime_parts"):
                ms, per_mib, real, problems = measure(
                    args.src, shape, size, function, args.timeout, args.repeat
                )
                rows.append([shape, real or f"{mib:.2f}", function, ms, per_mib, problems])
                print(" | ".join(rows[-1]), flush=True)
    print(table(["shape", "MiB", "parse", "ms", "ms/MiB", "problems"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
