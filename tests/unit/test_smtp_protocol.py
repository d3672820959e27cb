"""The SMTP protocol engine's pure parts: command lines, paths, ESMTP parameters, DATA
read in blocks (terminator split across reads, dot-unstuffing, limits) and BDAT chunks."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP

from mailgate.ingest.chunking import HELD_WHOLE, ChunkedBody, bdat_args
from mailgate.ingest.smtp_data import (
    MAX_DATA_LINE,
    DataEnd,
    DataReader,
    line_endings,
    long_line,
)
from mailgate.ingest.smtp_session import Refusal
from mailgate.ingest.smtp_syntax import mail_params, parse_path, path_params, split_command


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"EHLO client.test", ("EHLO", "client.test")),
        (b"ehlo   client.test  ", ("EHLO", "client.test")),
        (b"MAIL FROM:<a@example.com> SIZE=12", ("MAIL", "FROM:<a@example.com> SIZE=12")),
        (b"NOOP", ("NOOP", None)),
        (b"NOOP   ", ("NOOP", None)),
        (b"RCPT TO:<\xc3\xa9@example.com>", ("RCPT", "TO:<é@example.com>")),
        (b"", None),  # an empty line
        (b" NOOP", None),  # no verb before the space
        (b"NO\0OP", None),  # NUL
        (b"MAIL FROM:<a\0@example.com>", None),
        (b"X-FOO bar", None),  # not letters and digits: not echoed back in a 500
        (b"\xffHELO x", None),
    ],
)
def test_split_command(line: bytes, expected: tuple[str, str | None] | None) -> None:
    assert split_command(line) == expected


def test_an_argument_that_is_not_utf8_keeps_its_bytes() -> None:
    parts = split_command(b"VRFY \xff\xfe")
    assert parts is not None
    verb, arg = parts
    assert verb == "VRFY" and arg is not None
    assert arg.encode("utf-8", "surrogateescape") == b"\xff\xfe"


PATHS = [
    "<a@example.com>",
    "<a@example.com> SIZE=100 BODY=8BITMIME",
    "<a@example.com>  SMTPUTF8",
    "<first.last+tag@sub.example.co.uk>",
    "<A!#$%&'*+/=?^_`{|}~-z@EXAMPLE.com>",
    "<x@localhost>",
    "<a@b-c.d>",
    "a@example.com",
    "a@example.com SIZE=4",
    "<a@>",
    "<@a,@b:c@d>",
    '<"q x"@d>',
    "<a..b@c>",
    "<.a@b>",
    "<a.@b>",
    "<a@[1.2.3.4]>",
    "<a@b>x",
    "<ü@é.de>",
    "<a b@c>",
    "<a@-b>",
    "<a@b-.c>",
    "<a@b_c.d>",
    "<a@b.>",
    "postmaster",
    "<postmaster>",
]


def _aiosmtpd(arg: str) -> tuple[str, list[str]] | None:
    """What aiosmtpd 1.4's parser makes of a path (its address, the parameters)."""
    address, rest = SMTP._getaddr(SimpleNamespace(local_part_limit=0), arg)  # type: ignore[arg-type]
    return None if address is None else (address, (rest or "").split())


@pytest.mark.parametrize("arg", PATHS)
def test_paths_are_read_as_aiosmtpd_read_them(arg: str) -> None:
    ours = parse_path(arg)
    assert (None if ours is None else (ours[0], ours[1].split())) == _aiosmtpd(arg)


def test_the_fast_path_takes_plain_addresses_without_the_email_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mailgate.ingest import smtp_syntax

    def unused(value: str) -> None:
        raise AssertionError(f"parsed slowly: {value}")

    monkeypatch.setattr(smtp_syntax, "get_angle_addr", unused)
    assert parse_path("<bench@example.com> SIZE=1200") == ("bench@example.com", " SIZE=1200")
    assert parse_path("<o'neil+x@mail.example.org>") == ("o'neil+x@mail.example.org", "")


@pytest.mark.parametrize(
    "arg", ['<"a b"@c.d> (x) BODY=8BITMIME', '<"ab"@c.d>(SIZE=999999999999) BODY=8BITMIME']
)
def test_a_comment_after_a_path_is_malformed(arg: str) -> None:
    """RFC 5321 has no comments in a path or after it: the RFC 5322 parser, which reads
    quoted local parts, must not drop one (and a parameter inside it) unseen."""
    assert parse_path(arg) is None
    assert parse_path('<"a b"@c.d> BODY=8BITMIME') == ('"a b"@c.d', " BODY=8BITMIME")
    assert parse_path('<"a b"@c.d>BODY=8BITMIME') == ('"a b"@c.d', "BODY=8BITMIME")


@pytest.mark.parametrize(
    "arg",
    [
        "<a@exa\x0bmple.com>",
        "<a\tb@c.d>",
        '<"b\x01c"@c.d>',
        "<a@b\x7fc.d>",
        "<b\udcff@c.d>",
        "a\x1b@c.d SIZE=1",
    ],
)
def test_a_path_with_a_control_character_or_bytes_not_utf8_is_malformed(arg: str) -> None:
    assert parse_path(arg) is None


def test_a_control_character_after_the_path_is_the_parameters_business() -> None:
    for arg, address in [("<a@b.c>\tSIZE=1", "a@b.c"), ('<"a b"@b.c>\tSIZE=1', '"a b"@b.c')]:
        parsed = parse_path(arg)
        assert parsed is not None and parsed[0] == address and parsed[1].split() == ["SIZE=1"]


def test_the_null_path_is_an_empty_address() -> None:
    """RFC 5321 §4.5.5: ``MAIL FROM:<>`` (aiosmtpd took the two brackets as the address)."""
    assert parse_path("<>") == ("", "")
    assert parse_path("<> SIZE=10") == ("", " SIZE=10")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], {}),
        (
            ["SIZE=100", "BODY=8BITMIME", "SMTPUTF8"],
            {"SIZE": "100", "BODY": "8BITMIME", "SMTPUTF8": True},
        ),
        (["SIZE="], None),
        (["X-Y=1"], None),
        (["=1"], None),
    ],
)
def test_mail_params(options: list[str], expected: dict[str, str | bool] | None) -> None:
    assert mail_params(options) == expected


# --------------------------------------------------------------------------- DATA


def _read(chunks: list[bytes], limit: int = 0) -> DataEnd:
    """The end of DATA read from ``chunks``; its ``rest`` has the chunks after it too."""
    reader = DataReader(limit)
    for i, chunk in enumerate(chunks):
        end = reader.feed(chunk)
        if end is not None:
            return end._replace(rest=end.rest + b"".join(chunks[i + 1 :]))
    raise AssertionError("no end of DATA")


def _bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


MESSAGE = (
    b".first line starts with a dot\r\n"
    b"Subject: x\r\n\r\n"
    b"..a stuffed dot\r\n"
    b". a line of a dot and a space\r\n"
    b"bare\nLF and bare\rCR and \n.\n (no end)\r\n"
    b"...three dots\r\n"
    b"last\r\n"
)
STUFFED = (
    b"..first line starts with a dot\r\n"
    b"Subject: x\r\n\r\n"
    b"...a stuffed dot\r\n"
    b".. a line of a dot and a space\r\n"
    b"bare\nLF and bare\rCR and \n.\n (no end)\r\n"
    b"....three dots\r\n"
    b"last\r\n"
)


@pytest.mark.parametrize(
    "split", ["whole", "bytewise", "at every boundary"], ids=lambda s: s.replace(" ", "-")
)
def test_data_is_unstuffed_and_ends_only_at_crlf_dot_crlf(split: str) -> None:
    stream = STUFFED + b".\r\nQUIT\r\n"
    if split == "whole":
        ends = [_read([stream])]
    elif split == "bytewise":
        ends = [_read(_bytewise(stream))]
    else:
        ends = [_read([stream[:i], stream[i:]]) for i in range(1, len(stream) - len(b"QUIT\r\n"))]
    for end in ends:
        assert end == DataEnd(MESSAGE, None, b"QUIT\r\n")


@pytest.mark.parametrize(
    ("stream", "content"),
    [
        (b".\r\n", b""),  # the empty message: the DATA line's CRLF counts
        (b"\r\n.\r\n", b"\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"a\r\n.\r\n", b"a\r\n"),
    ],
)
def test_the_first_line_counts_as_a_line(stream: bytes, content: bytes) -> None:
    assert _read([stream]) == DataEnd(content, None, b"")
    assert _read(_bytewise(stream)) == DataEnd(content, None, b"")


def test_a_bare_lf_dot_does_not_end_data() -> None:
    reader = DataReader(0)
    assert reader.feed(b"hello\n.\nMAIL FROM:<evil@example.com>\n") is None
    assert reader.feed(b"\r\n.\r") is None
    assert reader.feed(b"\n") == DataEnd(b"hello\n.\nMAIL FROM:<evil@example.com>\n\r\n", None, b"")


def test_over_the_limit_the_rest_is_read_and_thrown_away() -> None:
    """552 only at the end (RFC 5321 §4.2.5), and what is thrown away is not kept."""
    reader = DataReader(1000)
    line = b"x" * 98 + b"\r\n"
    for _ in range(5000):  # 500 kB
        assert reader.feed(line) is None
        assert sum(map(len, reader._chunks)) <= 1334  # the limit, and a third for stuffing
    assert reader.feed(b"\r\n.") is None
    assert reader.feed(b"\r\nNOOP\r\n") == DataEnd(None, Refusal.TOO_BIG, b"NOOP\r\n")


@pytest.mark.parametrize(("size", "refused"), [(1000, False), (1001, True)])
def test_the_limit_counts_the_message_without_its_stuffing(size: int, refused: bool) -> None:
    """RFC 1870 §3: every line with its CRLF, not the dot that stuffed it, nor the end's
    (aiosmtpd counted the stuffing: a message of the limit with a dotted line was 552)."""
    body = b"." + b"y" * (size - 3) + b"\r\n"  # a line of size octets, sent with one more
    assert len(body) == size
    end = _read([b"." + body + b".\r\n"], limit=1000)
    assert (end.refusal is Refusal.TOO_BIG) is refused
    assert end.content == (None if refused else body)


@pytest.mark.parametrize(("length", "refused"), [(MAX_DATA_LINE, False), (MAX_DATA_LINE + 1, True)])
def test_a_line_too_long(length: int, refused: bool) -> None:
    end = _read(_split(b"Subject: long\r\n\r\n" + b"y" * length + b"\r\n.\r\nRSET\r\n", 100))
    assert end.rest == b"RSET\r\n"
    assert (end.refusal is Refusal.LINE_TOO_LONG) is refused


def _split(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def test_long_line_agrees_with_splitting_into_lines() -> None:
    """A line ends at CRLF or at a bare LF (a bare CR is part of its line)."""
    rng = random.Random(9)
    alphabet = [b"x", b"\r", b"\n", b"\r\n", b"."]
    for _ in range(3000):
        limit = rng.randint(1, 40)
        parts = rng.choices(alphabet, weights=[60, 3, 3, 8, 2], k=rng.randint(0, 400))
        data = b"".join(parts) + rng.choice([b"\r\n", b"\n"])
        lines = [line.removesuffix(b"\r") for line in data.split(b"\n")[:-1]]
        naive = max(map(len, lines)) > limit
        assert long_line(data, limit) is naive, (limit, data)


@pytest.mark.parametrize("end", [b"\r\n", b"\n"])
def test_a_line_ends_at_crlf_or_a_bare_lf(end: bytes) -> None:
    """A message with bare LFs (Python's ``smtplib`` sends bytes as they are) has lines
    as short as they look, not one line as long as the message."""
    assert not long_line((b"x" * 76 + end) * 100_000)
    assert not long_line(b"y" * MAX_DATA_LINE + end)
    assert long_line(b"y" * (MAX_DATA_LINE + 1) + end)


def test_a_10_mb_message_in_256_kib_reads() -> None:
    line = b"z" * 76 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * 128_000 + b".." + line
    stream = body + b".\r\n"
    end = _read(_split(stream, 256 * 1024), limit=10 * 1024 * 1024)
    assert end.refusal is None and end.content is not None
    assert len(end.content) == len(body) - 1 and end.content.endswith(b"\r\n." + line)


#: MESSAGE over and over, past the octets held as chunks: written to memory as it comes
BIG = MESSAGE * (HELD_WHOLE // len(MESSAGE) * 2)
BIG_STUFFED = STUFFED * (HELD_WHOLE // len(MESSAGE) * 2)


@pytest.mark.parametrize("read", [7, 4096, 65_536, 256 * 1024])
def test_a_big_message_is_unstuffed_and_its_endings_counted_as_it_comes(read: int) -> None:
    """Past :data:`HELD_WHOLE` DATA is written to memory as it arrives: the same message,
    and its line endings counted on the way (a CRLF split between two reads is one), so
    its end needs no pass over the whole of it on the event loop."""
    stream = BIG_STUFFED + b".\r\nQUIT\r\n"
    end = _read(_split(stream, read))
    assert end.content == BIG and end.refusal is None and end.rest == b"QUIT\r\n"
    assert end.endings == line_endings(BIG)
    assert _read([STUFFED + b".\r\n"]).endings is None  # a small one is counted at its end


@pytest.mark.parametrize(("length", "refused"), [(MAX_DATA_LINE, False), (MAX_DATA_LINE + 1, True)])
def test_a_line_too_long_in_a_big_message(length: int, refused: bool) -> None:
    stream = BIG_STUFFED + b"y" * length + b"\r\n" + BIG_STUFFED + b".\r\nRSET\r\n"
    end = _read(_split(stream, 5000))
    assert end.rest == b"RSET\r\n"
    assert (end.refusal is Refusal.LINE_TOO_LONG) is refused


def test_a_big_message_over_the_limit_is_refused() -> None:
    stream = BIG_STUFFED + b".\r\nRSET\r\n"
    assert _read(_split(stream, 65_536), limit=len(BIG) - 1).refusal is Refusal.TOO_BIG
    assert _read(_split(stream, 65_536), limit=len(BIG)).content == BIG


# --------------------------------------------------------------------------- BDAT (RFC 3030)


def _chunks(body: ChunkedBody, sizes: list[int], stream: bytes, read: int) -> bytes:
    """Feed ``stream`` in reads of ``read`` octets to chunks of ``sizes``, as the engine
    does: a chunk's octets first, what follows it kept for the next; what is left over."""
    reads = _split(stream, read)
    pending = b""
    for size in sizes:
        body.expect(size)
        rest = body.feed(pending)
        while rest is None:
            rest = body.feed(reads.pop(0))
        pending = rest
    return pending + b"".join(reads)


@pytest.mark.parametrize("read", [1, 2, 3, 7, 64, 10_000])
def test_chunks_across_split_reads_are_joined_byte_identical(read: int) -> None:
    message = b"Subject: x\r\n\r\n.dot\r\n.\r\nbare\nCR\r" + bytes(range(256)) + b"\r\n"
    sizes = [5, 0, 1, len(message) - 6]
    after = b"NOOP\r\n"
    body = ChunkedBody(0)
    assert _chunks(body, sizes, message + after, read) == after  # no octet more, no less
    assert body.content() == message
    assert body.declared == len(message) and not body.too_big


@pytest.mark.parametrize("read", [7, 65_536])
def test_big_chunks_are_written_to_memory_and_their_endings_counted(read: int) -> None:
    sizes = [HELD_WHOLE - 1, 3, len(BIG) - HELD_WHOLE - 2]
    body = ChunkedBody(0)
    assert _chunks(body, sizes, BIG + b"NOOP\r\n", read) == b"NOOP\r\n"
    assert body.end() == (BIG, None)
    assert body.endings == line_endings(BIG)


def test_chunks_past_the_limit_are_read_but_not_kept() -> None:
    body = ChunkedBody(10)
    assert _chunks(body, [6, 6, 3], b"a" * 15 + b"RSET\r\n", 4) == b"RSET\r\n"
    assert body.too_big and body.content() is None and not body._pieces
    refused = ChunkedBody(0, keep=False)  # a chunk answered 503: read, thrown away
    assert _chunks(refused, [3], b"abcNOOP\r\n", 2) == b"NOOP\r\n"
    assert refused.content() is None and not refused._pieces


@pytest.mark.parametrize(
    ("arg", "expected"),
    [("0 LAST", (0, True)), ("1000", (1000, False)), ("12 last", (12, True)),
     (None, None), ("", None), ("x", None), ("-1", None), ("1x", None), ("5 MORE", None),
     ("5 LAST x", None), ("²", None)],
)  # fmt: skip
def test_bdat_args(arg: str | None, expected: tuple[int, bool] | None) -> None:
    assert bdat_args(arg) == expected


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("", []),
        (" size=1  body=8bitmime", ["SIZE=1", "BODY=8BITMIME"]),
        ("\tSIZE=1\t SMTPUTF8 ", ["SIZE=1", "SMTPUTF8"]),
        ("SIZE=1", None),  # stuck to the path
        ("\x0bSIZE=1", None),  # a vertical tab is no space
        (" SIZE=1\x0bBODY=7BIT", ["SIZE=1\x0bBODY=7BIT"]),  # one malformed parameter
    ],
)
def test_path_params(rest: str, expected: list[str] | None) -> None:
    assert path_params(rest) == expected
