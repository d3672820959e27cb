"""Parsing a spooled message with an attachment sink gives what parsing its bytes gives.

``parse_message(mmap, attachment_sink=...)`` decodes attachments a block at a time
into files (``mailgate.mime.stream``); ``parse_message(bytes)`` decodes them with the
email package. Every message the other MIME tests parse, and the odd encodings
below, must come out the same both ways, with blocks small enough that every
escape, padding and line break lands on a block edge somewhere.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import io
import mmap
import quopri
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import pytest

from mailgate.mime import ParsedMessage, parse_message, parts, stream
from mailgate.mime.parts import (
    MimePart,
    PartList,
    cid_references,
    digests,
    mime_parts,
    mime_parts_into,
)
from tests.unit import test_mailpit_compat, test_mime, test_parse_corpus, test_parse_limits

DATA = Path(__file__).parent.parent / "data"
SMALL_BLOCKS = (2, 3, 5, 8, 13, 64)


class FileSink:
    """Opens ``<index>.bin`` in a folder for each attachment, as a spooling caller would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.opened: list[int] = []

    def __call__(self, index: int) -> BinaryIO:
        self.opened.append(index)
        return (self.folder / f"{index}.bin").open("wb")

    def read(self, index: int) -> bytes:
        return (self.folder / f"{index}.bin").read_bytes()


@contextmanager
def spooled(raw: bytes, folder: Path) -> Iterator[mmap.mmap | bytes]:
    """``raw`` as the SMTP server leaves it: a file, mapped (an empty file cannot be)."""
    path = folder / "message.eml"
    path.write_bytes(raw)
    if not raw:
        yield raw
        return
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        yield mm


def assert_streams_alike(raw: bytes, folder: Path) -> ParsedMessage:
    """Parse ``raw`` both ways; assert they agree; return the in-memory result."""
    expected = parse_message(raw)
    folder.mkdir(parents=True, exist_ok=True)
    sink = FileSink(folder)
    with spooled(raw, folder) as source:
        got = parse_message(source, attachment_sink=sink)
    shown = ("headers", "subject", "sender", "to", "text", "html", "problems")
    assert [getattr(got, n) for n in shown] == [getattr(expected, n) for n in shown]
    assert len(got.attachments) == len(expected.attachments)
    assert sink.opened == list(range(len(expected.attachments)))
    for index, (att, want) in enumerate(zip(got.attachments, expected.attachments, strict=True)):
        described = (att.filename, att.content_type, att.cid, att.inline, att.size)
        assert described == (want.filename, want.content_type, want.cid, want.inline, want.size)
        assert want.size == len(want.content)
        assert att.content == b""
        assert sink.read(index) == want.content, (index, want.filename)
    return expected


def _parsing_tests() -> Iterator[Any]:
    modules: tuple[ModuleType, ...] = (
        test_mime,
        test_parse_corpus,
        test_parse_limits,
        test_mailpit_compat,
    )
    for module in modules:
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("test_") and "parse_message(" in inspect.getsource(function):
                yield pytest.param(module, function, id=f"{module.__name__.split('.')[-1]}.{name}")


@pytest.mark.parametrize(("module", "test"), list(_parsing_tests()))
def test_every_message_the_mime_tests_parse_streams_alike(
    module: ModuleType,
    test: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Each MIME test runs again with its ``parse_message`` checking the streamed parse."""
    monkeypatch.setattr(stream, "BLOCK", 5)
    seen: list[bytes] = []

    def checked(raw: bytes) -> ParsedMessage:
        seen.append(raw)
        return assert_streams_alike(raw, tmp_path / str(len(seen)))

    monkeypatch.setattr(module, "parse_message", checked)
    fixtures = {"monkeypatch": monkeypatch, "tmp_path": tmp_path}
    test(**{name: fixtures[name] for name in inspect.signature(test).parameters})
    assert seen, "the test parsed nothing"


@pytest.mark.parametrize("block", [*SMALL_BLOCKS, stream.BLOCK])
@pytest.mark.parametrize("path", sorted(DATA.glob("*.eml")), ids=lambda p: p.name)
def test_corpus_streams_alike_at_any_block_size(
    path: Path, block: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(stream, "BLOCK", block)
    assert_streams_alike(path.read_bytes(), tmp_path)


def _mixed(*parts: bytes, boundary: bytes = b"m") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return (
        b"From: a@example.com\r\nSubject: odd encodings\r\n"
        b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
        b"preamble\r\n" + body + b"--" + boundary + b"--\r\nepilogue\r\n"
    )


def _attachment(cte: bytes, body: bytes, name: bytes = b"a.bin") -> bytes:
    return (
        b"Content-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="' + name + b'"\r\n'
        b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body
    )


def _odd_lines(data: bytes) -> bytes:
    """``data`` in lines of 1 to 13 characters, CRLF and LF mixed."""
    lines, pos = [], 0
    while pos < len(data):
        lines.append(data[pos : pos + 1 + pos % 13] + (b"\n" if pos % 3 else b"\r\n"))
        pos += 1 + pos % 13
    return b"".join(lines)


BLOB = bytes(range(256)) * 3 + b"tail"
B64 = base64.b64encode(BLOB)
QP_TEXT = (b"caf\xc3\xa9 = ok " * 12 + b"\r\n") * 3 + b"x" * 90 + b"\t \r\nend"
ODD = {
    "base64 odd line lengths": _attachment(b"base64", _odd_lines(B64)),
    "base64 missing padding": _attachment(b"base64", B64.rstrip(b"=")[:-1]),
    "base64 one char over a group": _attachment(b"base64", b"QUJDRA\r\nQ\r\n"),
    "base64 junk and spaces": _attachment(b"BASE64", b"QU JD\t!R A*==\r\n"),
    "base64 data after padding": _attachment(b"base64", b"QQ==QUJD\r\nQUJD\r\n"),
    "base64 stray = inside": _attachment(b"base64", b"Q=UJD=QU\r\n=JDQQ\r\n"),
    "base64 half padding then data": _attachment(b"base64", b"QQ=QUJ\r\n"),
    "base64 8-bit junk": _attachment(b"base64", b"QU\xff\xfeJD\r\n"),
    "quoted-printable soft breaks": _attachment(
        b"quoted-printable", quopri.encodestring(QP_TEXT).replace(b"\n", b"\r\n")
    ),
    "quoted-printable escapes at every edge": _attachment(
        b"quoted-printable", b"=C3=A9=3D==3D=\r\n=41=4=\n=\r junk\nab=C3=\r\nA9=" + b"=" * 9
    ),
    "quoted-printable one long line": _attachment(
        b"quoted-printable", b"".join(b"=%02X" % (i % 256) + b"=" * (i % 4) for i in range(300))
    ),
    "quoted-printable long line with =CR": _attachment(
        b"quoted-printable", b"a" * 40 + b"=\rskipped" + b"b" * 40 + b"\r\nafter"
    ),
    "7bit and unknown copied": _attachment(b"7bit", b"as is =41\r\n")
    + b"\r\n--m\r\n"
    + _attachment(b"x-custom", b"QUJD"),
    "binary 8-bit": _attachment(b"binary", bytes(range(256))),
    "uuencode": _attachment(
        b"x-uuencode",
        b"begin xyz a\r\nbegin 644 a.bin\r\n" + binascii.b2a_uu(b"hello uu") + b"`\r\nend\r\n",
    ),
    "uuencode without begin": _attachment(b"uuencode", b"no begin here\r\n"),
    "uuencode truncated": _attachment(b"uue", b"begin 644 x\r\n\r\n" + binascii.b2a_uu(b"x")),
    "uuencode broken line": _attachment(b"x-uue", b"begin 644 x\r\n%86)C9&5F9V@!!!!\r\nend"),
    "message/rfc822 forwarded": (
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner =?utf-8?Q?caf=C3=A9?=\r\n"
        b"Content-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\nhidden\r\n--i--"
    ),
    "message/rfc822 in base64": (
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"Subject: encoded inner\r\n\r\nbody\r\n")
    ),
    "nested multiparts": (
        b"Content-Type: multipart/alternative; boundary=n1\r\n\r\n--n1\r\n\r\nplain\r\n"
        b"--n1\r\nContent-Type: multipart/related; boundary=n2\r\n\r\n--n2\r\n"
        b"Content-Type: text/html\r\n\r\n<p>html</p>\r\n--n2\r\n"
        b"Content-Type: image/png\r\nContent-ID: <i@x>\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n" + B64[:99] + b"\r\n--n2--\r\n--n1--"
    ),
}


@pytest.mark.parametrize("block", [*SMALL_BLOCKS, stream.BLOCK])
@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_encodings_stream_alike(
    name: str, block: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(stream, "BLOCK", block)
    parsed = assert_streams_alike(_mixed(b"\r\nthe text", ODD[name]), tmp_path)
    assert parsed.text == "the text" and parsed.attachments


@pytest.mark.parametrize("block", [2, 7, 64])
def test_a_message_that_is_a_wrapper_streams_the_wrapped_attachments(
    block: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(stream, "BLOCK", block)
    inner = _mixed(b"\r\ninner text", ODD["base64 odd line lengths"])
    for cte in (b"7bit", b"base64"):
        encoded = base64.encodebytes(inner) if cte == b"base64" else inner
        raw = b"Subject: wrap\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: "
        parsed = assert_streams_alike(raw + cte + b"\r\n\r\n" + encoded, tmp_path / cte.decode())
        assert parsed.text == "inner text"
        assert [a.content for a in parsed.attachments] == [BLOB]


_ALIKE_IN_MEMORY = [
    *(pytest.param(_mixed(b"\r\nthe text", body), id=name) for name, body in sorted(ODD.items())),
    *(pytest.param(path.read_bytes(), id=path.name) for path in sorted(DATA.glob("*.eml"))),
]


@pytest.mark.parametrize("block", [3, 64, stream.BLOCK])
@pytest.mark.parametrize("raw", _ALIKE_IN_MEMORY)
def test_big_bodies_decode_into_memory_as_the_email_package_decodes_them(
    raw: bytes, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``REFERENCE_SIZE`` a body is decoded a block at a time even into memory: with
    the size at 0 every body is, and each message parses (and splits into parts, as the
    attachment download reads them) as the email package decodes it."""
    monkeypatch.setattr(stream, "BLOCK", block)
    expected, parts = parse_message(raw), mime_parts(raw)
    monkeypatch.setattr(stream, "REFERENCE_SIZE", 0)
    assert parse_message(raw) == expected
    assert mime_parts(raw) == parts


@pytest.mark.parametrize("block", [3, stream.BLOCK])
@pytest.mark.parametrize("raw", _ALIKE_IN_MEMORY)
def test_parts_listed_without_contents_have_their_contents_digests(
    raw: bytes, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mailpit's message view lists a big message's parts without holding them: each
    body decoded a block at a time into its size and digests, which must be those of
    the contents the parts have when decoded into memory."""
    monkeypatch.setattr(stream, "BLOCK", block)
    full = mime_parts(raw)
    monkeypatch.setattr(parts, "REFERENCE_SIZE", 0)  # every body through the hashes
    listed = mime_parts(raw, contents=False)
    expected = [
        (p.part_id, p.filename, digests(p.content)) for p in (*full.inline, *full.attachments)
    ]
    assert [
        (p.part_id, p.filename, p.digests) for p in (*listed.inline, *listed.attachments)
    ] == expected
    assert all(p.content == b"" for p in (*listed.inline, *listed.attachments))


@pytest.mark.parametrize("block", [3, stream.BLOCK])
@pytest.mark.parametrize("raw", _ALIKE_IN_MEMORY)
def test_one_part_decoded_into_a_file_is_its_contents_and_no_other_is_decoded(
    raw: bytes, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mailpit's part download of a big message decodes the part it asks for into a
    file, a block at a time, and no other: numbered as the parts decoded into memory,
    the file holds the same bytes as the part's ``content``."""
    monkeypatch.setattr(stream, "BLOCK", block)
    full = mime_parts(raw)
    monkeypatch.setattr(parts, "REFERENCE_SIZE", 0)  # every body a block at a time
    for wanted in full.each():
        decoded, asked, listed = _decoded_alone(raw, wanted.part_id)
        assert decoded == wanted.content, wanted.part_id
        assert asked == [p.part_id for p in full.each()]
        assert [(p.part_id, p.filename, p.content_type) for p in listed.each()] == [
            (p.part_id, p.filename, p.content_type) for p in full.each()
        ]
        assert all(p.content == b"" and p.digests is None for p in listed.each())


def _decoded_alone(raw: bytes, part_id: str) -> tuple[bytes, list[str], PartList]:
    """:func:`mime_parts_into` asked for ``part_id``: what it decoded into its file, the
    parts it asked about, and its list."""
    asked: list[str] = []
    decoded = io.BytesIO()

    def into(part: MimePart) -> BinaryIO | None:
        asked.append(part.part_id)
        return decoded if part.part_id == part_id else None

    listed = mime_parts_into(raw, into)
    return decoded.getvalue(), asked, listed


def _email_package(cte: str, body: bytes) -> bytes:
    view = EmailMessage(policy=policy.default)
    view["Content-Transfer-Encoding"] = cte
    view.set_payload(body.decode("ascii", "surrogateescape"))
    payload = view.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


@pytest.mark.parametrize(
    ("cte", "alphabet"),
    [
        ("base64", b"QUJDRA+/9a==\r\n \t!\xff\x0b"),
        ("base64", b"QUJD=\n"),
        ("quoted-printable", b"=AF0g\r\n \t_=x"),
        ("quoted-printable", b"==A3\r\n"),
    ],
)
def test_random_bodies_decode_as_the_email_package_decodes_them(
    cte: str, alphabet: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    draw = random.Random(f"{cte}{alphabet!r}")
    for trial in range(400):
        body = bytes(draw.choice(alphabet) for _ in range(draw.randrange(60)))
        monkeypatch.setattr(stream, "BLOCK", draw.choice((2, 3, 4, 5, 7, 16)))
        path = tmp_path / "out.bin"
        with path.open("wb") as file:
            out = stream.Output(file)
            stream.decode_into(body, 0, len(body), cte, out)
        assert path.read_bytes() == _email_package(cte, body), (trial, body, stream.BLOCK)
        assert out.size == path.stat().st_size


def test_a_full_disk_is_raised_not_reported_as_bad_mime(tmp_path: Path) -> None:
    raw = _mixed(b"\r\ntext", ODD["base64 odd line lengths"])
    full = Path("/dev/full")
    with pytest.raises(OSError, match="No space left"), spooled(raw, tmp_path) as source:
        parse_message(source, attachment_sink=lambda _: full.open("wb"))
    assert parse_message(raw).problems == ()


def test_cid_references_match_in_one_pass_the_content_id_given_first_first() -> None:
    """Of ``cid:a`` and ``cid:ab``, the part listed first is matched (Mailpit replaces
    each part's in turn); regex characters in a Content-ID are plain text."""
    html = '<img src="cid:ab"><img src="cid:a"><img src="cid:x.y*">'
    assert cid_references(["a", "ab"]).findall(html) == ["cid:a", "cid:a"]
    assert cid_references(["ab", "a", "x.y*"]).findall(html) == ["cid:ab", "cid:a", "cid:x.y*"]
    assert cid_references(["x.y"]).findall("cid:xzy") == []
