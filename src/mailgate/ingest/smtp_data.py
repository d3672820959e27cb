"""A DATA block read as it arrives (RFC 5321 §4.1.1.4): the buffer is searched for
``CRLF.CRLF`` and unstuffed with one ``bytes.replace`` (§4.5.2), a block at a time — aiosmtpd
read DATA a line at a time (docs/benchmarks.md). Only ``CRLF.CRLF`` ends a message: never
``LF.LF`` (see ``bare_line_endings`` in :mod:`.smtp`).

Pure: :class:`DataReader` takes the chunks the connection received and returns a
:class:`DataEnd`; the size and line-length limits are checked here, the replies are the
connection's. BDAT's chunks (RFC 3030) are counted, not searched:
:class:`~mailgate.ingest.chunking.ChunkedBody`. Past the :class:`Spool`'s threshold either
writes its message to a :class:`SpoolFile` instead of holding it; without a spool, past
:data:`~mailgate.ingest.chunking.HELD_WHOLE`, to one in memory.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from mailgate.ingest.chunking import HELD_WHOLE
from mailgate.ingest.smtp_session import Refusal

__all__ = [
    "MAX_DATA_LINE",
    "DataEnd",
    "DataReader",
    "Spool",
    "SpoolFile",
    "Spooled",
    "line_endings",
    "long_line",
    "unstuffed",
]

MAX_DATA_LINE = 1001
"""Octets of a DATA line without its CRLF (RFC 5321 §4.5.3.1.6: 1,000 with the CRLF, plus
a transparency dot; the 1,001 aiosmtpd allowed, so nothing it took is refused now)."""


def long_line(data: bytes | bytearray, limit: int = MAX_DATA_LINE, start: int = 0) -> bool:
    """Whether a line of ``data[start:]`` is longer than ``limit`` octets without its
    line end: CRLF, or a bare LF (as Postfix and aiosmtpd count lines; capture keeps a
    message with bare LFs, whose lines are then as short as they look). Hops a window at
    a time (the last LF in each window starts the next), so a 10 MB message costs some
    ten thousand searches, not one per line."""
    end = len(data)
    while end - start > limit:
        last = start + limit + 1  # where a CRLF's LF ends a line of ``limit`` octets
        lf = data.rfind(b"\n", start, last + 1)
        if lf < 0:
            return True
        if lf == last and data[lf - 1] != 13 and data.find(b"\n", start, lf) < 0:
            return True  # a bare LF after limit + 1 octets
        start = lf + 1
    return False


def line_endings(content: bytes) -> tuple[int, int, int]:
    """The CRLF pairs, LF octets and CR octets of ``content``, as :class:`SpoolFile`
    counts them as they come (a bare LF or CR is one past the pairs)."""
    return content.count(b"\r\n"), content.count(b"\n"), content.count(b"\r")


@dataclass(frozen=True, slots=True)
class Spool:
    """Where a message past ``threshold`` octets (a DATA block, or BDAT's chunks so far)
    is written as it arrives, instead of being held in memory
    (``smtp.attachment_storage.mode = tempfile``)."""

    directory: Path
    threshold: int = HELD_WHOLE


@dataclass(frozen=True, slots=True)
class Spooled:
    """A message written to a file (DATA's unstuffed, with its last CRLF; BDAT's as
    sent): the file is its reader's to remove. The line endings were counted on the way
    (``bare_line_endings`` needs them and must not read the file again)."""

    path: Path
    size: int
    crlf: int  #: CRLF pairs
    lf: int  #: LF octets, those of CRLF included
    cr: int  #: CR octets, those of CRLF included


class DataEnd(NamedTuple):
    """The end of a DATA block: the message, or why it is refused; and what came after."""

    content: bytes | None  #: unstuffed, with its last CRLF; None when refused or spooled
    refusal: Refusal | None  #: TOO_BIG, LINE_TOO_LONG or STORE_UNAVAILABLE
    rest: bytes  #: the bytes after ``CRLF.CRLF``: the client's next commands (RFC 2920)
    spooled: Spooled | None = None  #: the message, when it went to a file
    error: OSError | None = None  #: why the spool could not be written (STORE_UNAVAILABLE)
    #: ``content``'s CRLF pairs, LF and CR octets, when counted as it came (past
    #: :data:`HELD_WHOLE`)
    endings: tuple[int, int, int] | None = None


class DataReader:
    """Reads one DATA block from the chunks as they arrive (RFC 5321 §4.1.1.4).

    The block ends at the first ``CRLF.CRLF``; the CRLF of the DATA command line counts
    as the first CRLF, so ``.CRLF`` right away is an empty message, and a terminator split
    across chunks is found (the last four octets are kept for that). The chunks are kept
    as they came and joined once at the end: no buffer grown and copied as they arrive.
    A message over ``limit`` octets (0: none) is refused at the end of its block, as RFC
    5321 §4.2.5 has the server answer only then. Its size is RFC 1870's: the octets of the
    message, its last CRLF included, without the end's dot or the dots that stuffed its
    lines; so the block may run a third longer (every line a stuffed ``.``) before the
    rest is read and thrown away as it comes. So is the rest of a block whose spool file
    cannot be written (a full disk), which ends refused as STORE_UNAVAILABLE.
    """

    __slots__ = ("_chunks", "_held", "_limit", "_received", "_spool", "_stuffed_limit",
                 "_tail", "_too_big", "_unwritable", "_writer")  # fmt: skip

    def __init__(self, limit: int, spool: Spool | None = None) -> None:
        self._chunks: list[bytes] = []
        self._held = 0  #: octets in ``_chunks``
        self._tail = b"\r\n"  # the DATA line's CRLF: a line starts here
        self._limit = limit
        self._stuffed_limit = limit + limit // 3 + 1  #: ``..CRLF`` is 4 octets of 3
        self._received = 0
        self._too_big = False
        self._spool = spool
        self._writer: _SpoolWriter | None = None  #: once past the spool's threshold
        self._unwritable: OSError | None = None  #: why the spool could not be written

    def feed(self, chunk: bytes) -> DataEnd | None:
        """Take the next chunk; the end of the block once its terminator has arrived."""
        tail = self._tail
        received = self._received + len(chunk)
        self._received = received
        after = _after_end(tail, chunk)
        if after is None:  # not yet; up to 3 octets (".\r\n") may be the end's
            if self._limit and received - 3 > self._stuffed_limit:
                self._too_big = True
                self._chunks.clear()
                self.discard()
            elif chunk and self._unwritable is None:
                self._chunks.append(chunk)
                self._held += len(chunk)
                spool = self._spool
                threshold = HELD_WHOLE if spool is None else spool.threshold
                if self._writer is not None or self._held > threshold:
                    self._spill()
            self._tail = chunk[-4:] if len(chunk) >= 4 else (tail + chunk)[-4:]
            return None
        rest = chunk[after:]
        size = received - len(rest) - 3  # the stuffed content, its last CRLF included
        if self._too_big:
            self.discard()
            return DataEnd(None, Refusal.TOO_BIG, rest)
        if self._unwritable is not None:
            return DataEnd(None, Refusal.STORE_UNAVAILABLE, rest, error=self._unwritable)
        if self._writer is not None:
            return self._spooled(chunk, size, rest)
        content = _joined(self._chunks, chunk, size)
        self._chunks = []
        message = unstuffed(content)
        if self._limit and len(message) > self._limit:
            return DataEnd(None, Refusal.TOO_BIG, rest)
        if long_line(content):
            return DataEnd(None, Refusal.LINE_TOO_LONG, rest)
        return DataEnd(message, None, rest)

    def discard(self) -> None:
        """Remove the spool file, if any (the block was refused, or the client left)."""
        if self._writer is not None:
            self._writer.discard()
            self._writer = None

    def _spill(self) -> None:
        """Past the threshold: from now on the block goes to a file (or, without a spool,
        a buffer in memory), a chunk at a time, all but its last 3 octets (they may be
        the end's ``.CRLF``)."""
        try:
            if self._writer is None:
                spool = self._spool
                self._writer = _SpoolWriter(None if spool is None else spool.directory)
            held = b"".join(self._chunks)
            self._chunks = [held[-3:]]
            self._held = len(self._chunks[0])
            self._writer.write(held[:-3])
        except OSError as exc:  # a full disk: the rest is read and thrown away
            self._unwritable = exc
            self._chunks.clear()
            self.discard()

    def _spooled(self, last: bytes, size: int, rest: bytes) -> DataEnd:
        writer = self._writer
        assert writer is not None
        self._writer = None
        pending = b"".join(self._chunks) + last
        self._chunks = []
        try:
            writer.write(pending[: size - writer.stuffed])
            if writer.path is None:
                content, endings = writer.held()
            else:
                spooled = writer.close()
        except OSError as exc:
            writer.discard()
            return DataEnd(None, Refusal.STORE_UNAVAILABLE, rest, error=exc)
        except BaseException:
            writer.discard()
            raise
        if self._limit and writer.size > self._limit:
            writer.discard()
            return DataEnd(None, Refusal.TOO_BIG, rest)
        if writer.long_line:
            writer.discard()
            return DataEnd(None, Refusal.LINE_TOO_LONG, rest)
        if writer.path is None:
            return DataEnd(content, None, rest, endings=endings)
        return DataEnd(None, None, rest, spooled)


class SpoolFile:
    """A message written to a private file of the spool as it arrives (``data-*.eml``,
    0600: the names the sweep of a crash's files knows), its line endings counted on the
    way (``bare_line_endings`` needs them and must not read the file again): BDAT's
    octets as sent (:class:`~mailgate.ingest.chunking.ChunkedBody`), DATA's unstuffed
    (:class:`_SpoolWriter`). Its owner removes it (:meth:`discard`) unless :meth:`close`
    handed it on as a :class:`Spooled`. Without a ``directory`` it is a buffer in memory
    (:data:`HELD_WHOLE`), its contents and counts taken with :meth:`held`."""

    def __init__(self, directory: Path | None) -> None:
        self.path: Path | None = None
        self.file: BinaryIO
        if directory is None:
            self.file = io.BytesIO()
        else:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="data-", suffix=".eml", dir=directory)  # 0600
            self.path = Path(name)
            self.file = os.fdopen(fd, "wb")
        self.size = 0  #: octets written
        self._crlf = self._lf = self._cr = 0
        self._last = b""  #: the last octet written

    def write(self, piece: bytes) -> None:
        if not piece:
            return
        self._crlf += piece.count(b"\r\n") + (self._last == b"\r" and piece[:1] == b"\n")
        self._lf += piece.count(b"\n")
        self._cr += piece.count(b"\r")
        self._last = piece[-1:]
        self.size += len(piece)
        self.file.write(piece)

    def close(self) -> Spooled:
        """The file, written (not one in memory)."""
        assert self.path is not None
        self.file.close()
        return Spooled(self.path, self.size, self._crlf, self._lf, self._cr)

    def held(self) -> tuple[bytes, tuple[int, int, int]]:
        """The message written to memory, and its CRLF pairs, LF and CR octets."""
        assert isinstance(self.file, io.BytesIO)
        content = self.file.getvalue()  # (the buffer itself, not a copy of it)
        self.file.close()
        return content, (self._crlf, self._lf, self._cr)

    def discard(self) -> None:
        self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _SpoolWriter(SpoolFile):
    """Writes a DATA block to a file as it arrives: unstuffed (a leading dot of a line
    goes, the CRLF before it may be in the previous piece) and its line lengths checked,
    holding no more than a line's start in memory."""

    def __init__(self, directory: Path | None) -> None:
        super().__init__(directory)
        self.stuffed = 0  #: octets taken, as the client sent them
        self.long_line = False
        self._before = b"\r\n"  # the stuffed stream's last two octets: a line starts here
        self._line = b""  #: the stuffed current line's start, for the length check

    def write(self, piece: bytes) -> None:
        if not piece:
            return
        self.stuffed += len(piece)
        if not self.long_line:
            line = self._line + piece
            end = line.rfind(b"\n")
            if end >= 0 and long_line(line[: end + 1]):
                self.long_line = True
            self._line = line[end + 1 :] if end >= 0 else line
            if len(self._line) > MAX_DATA_LINE + 1:  # its line end, when it comes, is too late
                self.long_line = True
            self._line = self._line[-(MAX_DATA_LINE + 2) :]
        before, self._before = self._before, (self._before + piece[-2:])[-2:]
        if before == b"\r\n" and piece[:1] == b".":
            piece = piece[1:]
        elif before[-1:] == b"\r" and piece[:2] == b"\n.":
            piece = b"\n" + piece[2:]
        if piece.find(b"\r\n.") >= 0:
            piece = piece.replace(b"\r\n.", b"\r\n")
        super().write(piece)


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
