"""Decode a body that lies in a spooled message into a file, a block at a time.

``EmailMessage.get_payload(decode=True)`` holds the encoded body, a copy of it
without line breaks and the decoded bytes, all at once: three copies of a 20 MB
attachment. These decoders read at most ``BLOCK`` bytes of input at a time and
write what each block decodes to, and write the same bytes the email package
returns, leniency included (the equivalence tests in ``tests/unit`` hold them to it):

* base64: characters outside the alphabet are skipped, the input ends at the
  first padding that completes a group, a missing padding is supplied, and a body
  whose data characters are one more than a multiple of four is kept as it is,
  line breaks removed (``email._encoded_words.decode_b``);
* quoted-printable: ``binascii.a2b_qp`` on blocks cut where no escape is split;
* uuencode: line by line, and kept as it is when it does not decode;
* anything else (7bit, 8bit, binary, unknown): copied.
"""

from __future__ import annotations

import binascii
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from mailgate.mime.entity import Source

if TYPE_CHECKING:
    from email.message import EmailMessage

    from _typeshed import ReadableBuffer

__all__ = [
    "BLOCK",
    "DECODED",
    "REFERENCE_SIZE",
    "Discard",
    "Output",
    "decode_into",
    "decoded",
    "transfer_encoding",
]

BLOCK = 1 << 20  #: input bytes decoded at a time
#: Bodies up to this size are decoded into memory by the email package, the reference
#: these decoders are tested against; bigger ones a block at a time even into memory,
#: since the email package holds a body several times over (its text, its lines, their
#: join): a 50 MiB base64 attachment took 444 MiB at the peak, against about twice the
#: decoded size this way.
REFERENCE_SIZE = 256 * 1024
_UU = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
#: The Content-Transfer-Encodings the email package decodes; it copies any other.
DECODED = frozenset({"base64", "quoted-printable", *_UU})
# RFC 4648 §4: the base64 alphabet; every other byte but the pad "=" is skipped.
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SKIPPED = bytes(sorted(set(range(256)) - set(_ALPHABET) - {ord("=")}))
_EQUALS = ord("=")


class Discard(io.BytesIO):
    """A file that keeps nothing of what is written to it, for bodies decoded only to be
    counted or hashed or not wanted at all. It seeks and truncates as a real one (a body
    that does not decode after all is written again from its start, see
    :meth:`Output.restart`; ``/dev/null`` cannot be truncated)."""

    def write(self, data: ReadableBuffer, /) -> int:
        size = memoryview(data).nbytes
        self.seek(size, io.SEEK_CUR)
        return size


class Output:
    """The file a body is decoded into, with its decoded size and its first bytes.

    The file must be seekable: the rare body that does not decode after all is
    written again, as it is, from where the file started.
    """

    def __init__(self, file: BinaryIO, *, head: int = 0) -> None:
        self.file = file
        self.size = 0
        self.head = bytearray()  #: the first ``head`` bytes written
        self._head_limit = head
        self._origin = file.tell()

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.file.write(data)
        self.size += len(data)
        if len(self.head) < self._head_limit:
            self.head += data[: self._head_limit - len(self.head)]

    def restart(self) -> None:
        """Drop what was written, to write the body again another way."""
        self.file.seek(self._origin)
        self.file.truncate()
        self.size = 0
        self.head.clear()


def transfer_encoding(view: EmailMessage) -> str:
    """The Content-Transfer-Encoding of a part's fields, as ``get_payload`` reads it."""
    return str(view.get("content-transfer-encoding", "")).lower()


def decoded(source: Source, start: int, end: int, view: EmailMessage) -> bytes:
    """The body ``source[start:end]`` of the part whose fields ``view`` holds, decoded
    into memory as the email package decodes it (small: by the email package, on
    ``view``, whose payload it becomes)."""
    if end - start > REFERENCE_SIZE:
        buffer = io.BytesIO()
        decode_into(source, start, end, transfer_encoding(view), Output(buffer))
        return buffer.getvalue()
    body = source[start:end]
    view.set_payload(body.decode("ascii", "surrogateescape"))
    payload = view.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else bytes(body)


def decode_into(source: Source, start: int, end: int, encoding: str, out: Output) -> None:
    """Decode the body ``source[start:end]`` as ``encoding`` (the lower-case
    Content-Transfer-Encoding, as the email package reads it) into ``out``."""
    if encoding == "base64":
        _base64(source, start, end, out)
    elif encoding == "quoted-printable":
        _quoted_printable(source, start, end, out)
    elif encoding in _UU:
        _uuencode(source, start, end, out)
    else:
        for block in _blocks(source, start, end):
            out.write(block)


def _blocks(source: Source, start: int, end: int) -> Iterator[bytes]:
    for pos in range(start, end, BLOCK):
        yield source[pos : min(pos + BLOCK, end)]


def _base64(source: Source, start: int, end: int, out: Output) -> None:
    """RFC 2045 §6.8, read as ``binascii.a2b_base64`` reads it when not strict.

    ``carry`` holds the data characters short of a whole 4-character group;
    ``pads`` counts the "=" seen since the last data character once a group has
    two or three of them (earlier, "=" is skipped like any other stray byte).
    """
    carry, pads = b"", 0
    for block in _blocks(source, start, end):
        data = block.translate(None, _SKIPPED)
        if b"=" in data:
            data, pads, ended = _until_padding(data, len(carry), pads)
            if ended:
                data = carry + data
                out.write(binascii.a2b_base64(data + b"=" * (-len(data) % 4)))
                return
        elif data:
            pads = 0
        data = carry + data
        whole = len(data) - len(data) % 4
        out.write(binascii.a2b_base64(data[:whole]))
        carry = data[whole:]
    if len(carry) == 1:  # no way to decode: the email package keeps the body
        out.restart()
        for block in _blocks(source, start, end):
            out.write(block.translate(None, b"\r\n"))
    elif carry:
        out.write(binascii.a2b_base64(carry + b"=" * (4 - len(carry))))


def _until_padding(data: bytes, count: int, pads: int) -> tuple[bytes, int, bool]:
    """The data characters of ``data`` up to the padding that ends the input, the
    ``pads`` count after them, and whether that padding was found. ``count`` is
    how many data characters came before ``data`` (what matters is modulo 4)."""
    kept: list[bytes] = []
    pieces = data.split(b"=")
    for piece in pieces[:-1]:  # each is followed by one "="
        if piece:
            kept.append(piece)
            count += len(piece)
            pads = 0
        if count % 4 >= 2:
            pads += 1
            if count % 4 + pads >= 4:
                return b"".join(kept), pads, True
    if pieces[-1]:
        kept.append(pieces[-1])
        pads = 0
    return b"".join(kept), pads, False


def _quoted_printable(source: Source, start: int, end: int, out: Output) -> None:
    """RFC 2045 §6.7 as ``binascii.a2b_qp`` reads it (``quopri.decodestring``)."""
    pos = start
    while pos < end:
        cut = _qp_cut(source, pos, end)
        out.write(binascii.a2b_qp(source[pos:cut]))
        pos = cut


def _qp_cut(source: Source, pos: int, end: int) -> int:
    """Where the block from ``pos`` ends: after its last line break, so no escape
    or soft line break is cut in two; within a line longer than a block, before
    the run of "=" that an escape at the cut would start in."""
    limit = pos + BLOCK
    if limit >= end:
        return end
    newline = source.rfind(b"\n", pos, limit)
    if newline >= 0:
        return newline + 1
    line_end = source.find(b"\n", limit, end)
    line_end = end if line_end < 0 else line_end + 1
    if source.find(b"=\r", pos, limit) >= 0:  # a2b_qp drops "=\r" up to the line break
        return line_end
    if _EQUALS not in (source[limit - 1], source[limit - 2]):
        return limit
    cut = limit - 1 if source[limit - 1] == _EQUALS else limit - 2
    while cut > pos and source[cut - 1] == _EQUALS:  # "==" decodes as a pair
        cut -= 1
    return cut if cut > pos else line_end


def _uuencode(source: Source, start: int, end: int, out: Output) -> None:
    """As ``email.message._decode_uu``: what follows a ``begin`` line, up to ``end``."""
    try:
        _uu_lines(source, start, end, out)
    except ValueError:  # the email package keeps a body it cannot decode
        out.restart()
        for block in _blocks(source, start, end):
            out.write(block)


def _uu_lines(source: Source, start: int, end: int, out: Output) -> None:
    begun = False
    for block in _line_blocks(source, start, end):
        for line in block.splitlines():
            if not begun:
                begun = _is_begin(line)
            elif not line:
                raise ValueError("Truncated input")
            elif line.strip(b" \t\r\n\f") == b"end":
                return
            else:
                out.write(_uu_line(line))
    if not begun:
        raise ValueError("`begin` line not found")


def _is_begin(line: bytes) -> bool:
    if not line.startswith(b"begin "):
        return False
    mode = line.removeprefix(b"begin ").partition(b" ")[0]
    try:
        int(mode, base=8)
    except ValueError:
        return False
    return True


def _uu_line(line: bytes) -> bytes:
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:  # the email package's workaround for broken encoders
        return binascii.a2b_uu(line[: (((line[0] - 32) & 63) * 4 + 5) // 3])


def _line_blocks(source: Source, start: int, end: int) -> Iterator[bytes]:
    """Blocks of whole lines (a line longer than a block is one block)."""
    pos = start
    while pos < end:
        cut = min(pos + BLOCK, end)
        if cut < end:
            newline = source.rfind(b"\n", pos, cut)
            if newline < 0:
                newline = source.find(b"\n", cut, end)
            cut = end if newline < 0 else newline + 1
        yield source[pos:cut]
        pos = cut
