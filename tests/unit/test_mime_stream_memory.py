"""A large attachment parsed from a spooled file never sits whole in memory, and one
parsed from bytes sits there once (issue 9)."""

from __future__ import annotations

import base64
import mmap
import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mailgate.mime import parse_message

MB = 1024 * 1024
ATTACHMENT = 15 * MB
STREAMED_PEAK = 8 * MB  #: what parsing with a sink may allocate, whatever the attachment size


def _peak(parse: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        parse()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_15_mb_attachment_streams_in_a_few_mb_and_decodes_into_memory_once(
    tmp_path: Path,
) -> None:
    content = random.Random(9).randbytes(ATTACHMENT)
    raw = (
        b"From: a@example.com\r\nSubject: big\r\n"
        b"Content-Type: multipart/mixed; boundary=big\r\n\r\n"
        b"--big\r\nContent-Type: text/plain\r\n\r\nsee the scan\r\n"
        b"--big\r\nContent-Type: image/tiff\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="scan.tiff"\r\n\r\n'
        + base64.encodebytes(content).replace(b"\n", b"\r\n")
        + b"--big--\r\n"
    )
    assert len(raw) > 20 * MB
    path = tmp_path / "message.eml"
    path.write_bytes(raw)
    target = tmp_path / "0.bin"

    def sink(index: int) -> BinaryIO:
        return target.open("wb")

    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        streamed = _peak(lambda: parse_message(mm, attachment_sink=sink))
        parsed = parse_message(mm, attachment_sink=sink)
    in_memory = _peak(lambda: parse_message(raw))

    assert parsed.text == "see the scan"
    [scan] = parsed.attachments
    assert (scan.filename, scan.size, scan.content) == ("scan.tiff", ATTACHMENT, b"")
    assert target.read_bytes() == content
    assert streamed < STREAMED_PEAK, f"streamed peak {streamed / MB:.1f} MB"
    # Parsed from bytes, the attachment is decoded into memory a block at a time: the
    # decoded bytes and a buffer's growth (the email package held the body, its lines,
    # their join and the decoded bytes: over 3 times the attachment).
    assert in_memory < 2 * ATTACHMENT, f"in-memory peak {in_memory / MB:.1f} MB"
