"""RFC 3030 CHUNKING's pure parts: BDAT's argument, and a message's chunks as they come.

A BDAT chunk is ``size`` octets taken as they are: no dot-stuffing, no line rules, no
terminator to search for (RFC 3030 §2), so reading it is counting. The octets may span
reads, and the next command may follow in the same read (pipelining, §4.2).
BODY=BINARYMIME (§3) is not offered: the message still goes to the same MIME parser and
the same bare-LF rules as DATA's, which expect CRLF text.
"""

from __future__ import annotations

__all__ = ["ChunkedBody", "bdat_args"]


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
    says — but thrown away, and :meth:`content` is None (552 at LAST, as DATA answers at
    its end, RFC 5321 §4.2.5). ``keep=False`` reads a chunk only to throw it away (one
    refused with 503: the session stays in step with the client)."""

    __slots__ = ("_keep", "_limit", "_pieces", "declared", "remaining")

    def __init__(self, limit: int, *, keep: bool = True) -> None:
        self._limit = limit
        self._keep = keep
        self._pieces: list[bytes] = []
        self.declared = 0  #: octets announced so far, this chunk's included
        self.remaining = 0  #: octets of the current chunk still to come

    @property
    def too_big(self) -> bool:
        return bool(self._limit) and self.declared > self._limit

    def expect(self, size: int) -> None:
        """A BDAT command announced ``size`` octets."""
        self.declared += size
        self.remaining = size
        if self.too_big:
            self._pieces.clear()

    def feed(self, data: bytes) -> bytes | None:
        """Take the chunk's octets from ``data``: the octets after the chunk once it is
        complete (``b""`` if none), None while more are due."""
        due = self.remaining
        keep = self._keep and not self.too_big
        if len(data) < due:
            if keep and data:
                self._pieces.append(data)
            self.remaining = due - len(data)
            return None
        self.remaining = 0
        if keep and due:
            self._pieces.append(data if len(data) == due else data[:due])
        return data[due:]

    def content(self) -> bytes | None:
        """The message: every chunk, joined; None when over the limit."""
        if self.too_big or not self._keep:
            return None
        content = b"".join(self._pieces)
        self._pieces = [content]
        return content
