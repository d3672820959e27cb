"""RFC 3030 CHUNKING's pure parts: BDAT's argument, and a message's chunks as they come.

A BDAT chunk is ``size`` octets taken as they are: no dot-stuffing, no line rules, no
terminator to search for (RFC 3030 §2), so reading it is counting. The octets may span
reads, and the next command may follow in the same read (pipelining, §4.2).
BODY=BINARYMIME (§3) is not offered: the message still goes to the same MIME parser and
the same bare-LF rules as DATA's, which expect CRLF text. In tempfile mode a message past
the spool's threshold goes to a file as DATA's does (:mod:`.smtp_data`'s
:class:`~mailgate.ingest.smtp_data.SpoolFile`), so it is never whole in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailgate.ingest.smtp_data import Spool, Spooled, SpoolFile

__all__ = ["HELD_WHOLE", "ChunkedBody", "bdat_args"]

HELD_WHOLE = 1024 * 1024
"""Octets of a message held as the chunks it came in. Past them, without a
:class:`~mailgate.ingest.smtp_data.Spool`, it is written to a buffer in memory as it
arrives, its line endings counted on the way (and a DATA block's dots unstuffed, its
lines checked), so that its end costs the event loop no pass over the whole message: an
85 MB one held the loop for 0.4 s to join and check it, and as long again to count its
line endings."""


def bdat_args(arg: str | None) -> tuple[int, bool] | None:
    """``BDAT <chunk-size> [LAST]`` (RFC 3030 §4): the size and whether it is the last
    chunk; None when malformed — the octets that follow cannot be told from the next
    command then, so the caller must close the connection (§2)."""
    words = arg.split() if arg else []
    if not 1 <= len(words) <= 2 or not (words[0].isascii() and words[0].isdigit()):
        return None
    if len(words) == 2 and words[1].upper() != "LAST":
        return None
    return int(words[0]), len(words) == 2


class ChunkedBody:
    """The chunks of one message (RFC 3030 §2), joined once at BDAT LAST.

    :meth:`expect` announces a chunk's size; :meth:`feed` takes its octets as they arrive
    and gives back what follows the chunk once it is complete. Past ``limit`` octets
    (0: none) the chunks are still read — the client sends them whatever the server
    says — but thrown away, and :meth:`end` has no message (552 at LAST, as DATA answers
    at its end, RFC 5321 §4.2.5). ``keep=False`` reads a chunk only to throw it away (one
    refused with 503: the session stays in step with the client).

    Once more than ``spool.threshold`` octets are held, they and all that follow go to a
    :class:`~mailgate.ingest.smtp_data.SpoolFile` (tempfile mode), which :meth:`end` hands
    on, closed, and :meth:`discard` removes (RSET, the client gone, too big). The octets
    are written as they came: the file and its line-ending counts are the joined chunks'.
    Without a spool, past :data:`HELD_WHOLE` octets they go to
    one in memory, their line endings counted as they come (:attr:`endings`)."""

    __slots__ = ("_file", "_held", "_keep", "_limit", "_pieces", "declared", "endings",
                 "remaining", "spool", "unwritable")  # fmt: skip

    def __init__(self, limit: int, *, keep: bool = True, spool: Spool | None = None) -> None:
        self._limit = limit
        self._keep = keep
        self._pieces: list[bytes] = []
        self._held = 0  #: octets in ``_pieces``
        self._file: SpoolFile | None = None  #: once past the spool's threshold
        self.spool = spool  #: where the message goes past its threshold; None: memory
        self.declared = 0  #: octets announced so far, this chunk's included
        self.remaining = 0  #: octets of the current chunk still to come
        #: why the spool file could not be written (a full disk): the chunks are read
        #: and thrown away, and LAST is refused
        self.unwritable: OSError | None = None
        #: the message's CRLF pairs, LF and CR octets, once counted as it came (:meth:`end`
        #: of one held in memory past its threshold)
        self.endings: tuple[int, int, int] | None = None

    @property
    def too_big(self) -> bool:
        return bool(self._limit) and self.declared > self._limit

    def expect(self, size: int) -> None:
        """A BDAT command announced ``size`` octets."""
        self.declared += size
        self.remaining = size
        if self.too_big:
            self.discard()

    def feed(self, data: bytes) -> bytes | None:
        """Take the chunk's octets from ``data``: the octets after the chunk once it is
        complete (``b""`` if none), None while more are due."""
        due = self.remaining
        keep = self._keep and not self.too_big
        if len(data) < due:
            if keep and data:
                self._take(data)
            self.remaining = due - len(data)
            return None
        self.remaining = 0
        if keep and due:
            self._take(data if len(data) == due else data[:due])
        return data[due:]

    def content(self) -> bytes | None:
        """The message held in memory: every chunk, joined; None when over the limit (or
        written to a file: :meth:`end`)."""
        if self.too_big or not self._keep or self._file is not None:
            return None
        content = b"".join(self._pieces)
        self._pieces = [content]
        return content

    def end(self) -> tuple[bytes | None, Spooled | None]:
        """The message at BDAT LAST: its octets, or the closed file they were written to
        (its reader's to remove); neither when over the limit."""
        file, self._file = self._file, None
        if file is None:
            return self.content(), None
        try:
            if file.path is None:
                content, self.endings = file.held()
                return content, None
            return None, file.close()
        except OSError as exc:
            file.discard()
            self.unwritable = exc
            return None, None
        except BaseException:
            file.discard()
            raise

    def discard(self) -> None:
        """Drop the octets taken, and remove their file if they went to one."""
        self._pieces.clear()
        self._held = 0
        file, self._file = self._file, None
        if file is not None:
            file.discard()

    def _take(self, piece: bytes) -> None:
        try:
            if self._file is not None:
                self._file.write(piece)
                return
            self._pieces.append(piece)
            self._held += len(piece)
            spool = self.spool
            if self._held > (HELD_WHOLE if spool is None else spool.threshold):
                self._spill(spool)
        except OSError as exc:  # the file could not be written: no message is kept
            self.unwritable = exc
            self._keep = False
            self.discard()
        except BaseException:
            self._keep = False
            self.discard()
            raise

    def _spill(self, spool: Spool | None) -> None:
        """Past the threshold: what is held goes to a file (without a spool, one in
        memory), and from now on every chunk."""
        # here, not at the top: smtp_data imports smtp_session, which imports this module
        from mailgate.ingest.smtp_data import SpoolFile

        self._file = file = SpoolFile(None if spool is None else spool.directory)
        for piece in self._pieces:
            file.write(piece)
        self._pieces = []
        self._held = 0
