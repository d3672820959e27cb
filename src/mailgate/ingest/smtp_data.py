"""A DATA block read as it arrives (RFC 5321 §4.1.1.4): the buffer is searched for
``CRLF.CRLF`` and unstuffed with one ``bytes.replace`` (§4.5.2), a block at a time — aiosmtpd
read DATA a line at a time (docs/benchmarks.md). Only ``CRLF.CRLF`` ends a message: never
``LF.LF`` (see ``bare_line_endings`` in :mod:`.smtp`).

Pure: :class:`DataReader` takes the chunks the connection received and returns a
:class:`DataEnd`; the size and line-length limits are checked here, the replies are the
connection's. BDAT's chunks (RFC 3030) are counted, not searched:
:class:`~mailgate.ingest.chunking.ChunkedBody`.
"""

from __future__ import annotations

from typing import NamedTuple

from mailgate.ingest.smtp_session import Refusal

__all__ = ["MAX_DATA_LINE", "DataEnd", "DataReader", "long_line", "unstuffed"]

MAX_DATA_LINE = 1001
"""Octets of a DATA line without its CRLF (RFC 5321 §4.5.3.1.6: 1,000 with the CRLF, plus
a transparency dot; the 1,001 aiosmtpd allowed, so nothing it took is refused now)."""


def long_line(data: bytes | bytearray, limit: int = MAX_DATA_LINE, start: int = 0) -> bool:
    """Whether a CRLF-ended line of ``data[start:]`` is longer than ``limit`` octets
    without its CRLF. Hops a window at a time (the last CRLF in each window starts the
    next), so a 10 MB message costs some ten thousand searches, not one per line."""
    end = len(data)
    while end - start > limit:
        crlf = data.rfind(b"\r\n", start, start + limit + 2)
        if crlf < 0:
            return True
        start = crlf + 2
    return False


class DataEnd(NamedTuple):
    """The end of a DATA block: the message, or why it is refused; and what came after."""

    content: bytes | None  #: unstuffed, with its last CRLF; None when refused
    refusal: Refusal | None  #: TOO_BIG or LINE_TOO_LONG
    rest: bytes  #: the bytes after ``CRLF.CRLF``: the client's next commands (RFC 2920)


class DataReader:
    """Reads one DATA block from the chunks as they arrive (RFC 5321 §4.1.1.4).

    The block ends at the first ``CRLF.CRLF``; the CRLF of the DATA command line counts
    as the first CRLF, so ``.CRLF`` right away is an empty message, and a terminator split
    across chunks is found (the last four octets are kept for that). The chunks are kept
    as they came and joined once at the end: no buffer grown and copied as they arrive.
    Past ``limit`` octets (0: none) the rest is read and thrown away and the block is
    refused at its end, as RFC 5321 §4.2.5 has the server answer only then.
    """

    __slots__ = ("_chunks", "_limit", "_received", "_tail", "_too_big")

    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._tail = b"\r\n"  # the DATA line's CRLF: a line starts here
        self._limit = limit
        self._received = 0
        self._too_big = False

    def feed(self, chunk: bytes) -> DataEnd | None:
        """Take the next chunk; the end of the block once its terminator has arrived."""
        tail = self._tail
        received = self._received + len(chunk)
        self._received = received
        after = _after_end(tail, chunk)
        if after is None:  # not yet; up to 3 octets (".\r\n") may be the end's
            if self._limit and received - 3 > self._limit:
                self._too_big = True
                self._chunks.clear()
            elif chunk:
                self._chunks.append(chunk)
            self._tail = chunk[-4:] if len(chunk) >= 4 else (tail + chunk)[-4:]
            return None
        rest = chunk[after:]
        size = received - len(rest) - 3  # the stuffed content, its last CRLF included
        if self._too_big or (self._limit and size > self._limit):
            return DataEnd(None, Refusal.TOO_BIG, rest)
        content = _joined(self._chunks, chunk, size)
        self._chunks = []
        if long_line(content):
            return DataEnd(None, Refusal.LINE_TOO_LONG, rest)
        return DataEnd(unstuffed(content), None, rest)


def _after_end(tail: bytes, chunk: bytes) -> int | None:
    """Where in ``chunk`` what follows ``CRLF.CRLF`` begins, if it ends there; the end may
    begin in ``tail``, the octets before ``chunk``."""
    joint = (tail + chunk[:4]).find(b"\r\n.\r\n")
    if joint >= 0:
        return joint - len(tail) + 5
    inside = chunk.find(b"\r\n.\r\n")
    return inside + 5 if inside >= 0 else None


def _joined(chunks: list[bytes], last: bytes, size: int) -> bytes:
    """The first ``size`` octets of ``chunks`` and ``last``: the end's ``.CRLF`` (and what
    came after it) cut off, which may begin in the chunk before ``last``."""
    excess = sum(map(len, chunks)) + len(last) - size
    pieces = [*chunks, last]
    while excess > 0:
        cut = min(excess, len(pieces[-1]))
        pieces[-1] = pieces[-1][: len(pieces[-1]) - cut]
        excess -= cut
        if not pieces[-1]:
            pieces.pop()
    return b"".join(pieces)


def unstuffed(content: bytes) -> bytes:
    """RFC 5321 §4.5.2: a line's leading dot, which the client added, goes."""
    if content[:1] == b".":
        content = content[1:]
    if content.find(b"\r\n.") >= 0:
        content = content.replace(b"\r\n.", b"\r\n")
    return content
