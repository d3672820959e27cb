"""In ``tempfile`` mode a BDAT message (RFC 3030) goes to disk while it arrives, as a DATA
block does (issue 9): past ``Spool.threshold`` its chunks are written to a private file
in the attachment directory's ``spool``, the capture parses that file, and the file goes
once the handler is done, when the client leaves between or within chunks, on RSET, on
a refusal (too big, chaos). The octets are the client's, as sent (BDAT has no
dot-stuffing), with the same bare line endings found as in memory."""

from __future__ import annotations

import asyncio
import os
import random
import smtplib
import ssl
import sys
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailgate.app import Gateway, Mode
from mailgate.ingest.chunking import ChunkedBody
from mailgate.ingest.smtp_data import Spool
from tests.integration.conftest import GatewayFactory, api, capture_peaks

MIB = 1024 * 1024
BIG = os.urandom(3 * MIB)  #: past the 1 MiB threshold (4 MiB in base64)


def _tempfile(temp_dir: Path, **smtp: Any) -> dict[str, Any]:
    return {"attachment_storage": {"mode": "tempfile", "temp_dir": str(temp_dir)}, **smtp}


def _message(subject: str, attachment: bytes = BIG) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", subject
    message.set_content(".a line that starts with a dot\n.\n..and two\n")  # not stuffed
    message.add_attachment(attachment, maintype="application", subtype="octet-stream",
                           filename="big.bin")  # fmt: skip
    return message.as_bytes(policy=policy.SMTP)


def _spooled(temp_dir: Path) -> list[Path]:
    return sorted(temp_dir.glob("mailgate-*/spool/data-*.eml"))


def _cuts(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def _client(gw: Gateway) -> smtplib.SMTP:
    """A session in a transaction (MAIL and RCPT taken), ready for BDAT."""
    assert gw.smtp_address is not None
    client = smtplib.SMTP(*gw.smtp_address, timeout=20)
    client.ehlo()
    assert client.has_extn("chunking")
    assert client.mail("a@example.com")[0] == 250
    assert client.rcpt("b@example.com")[0] == 250
    return client


def _bdat(client: smtplib.SMTP, chunk: bytes, *, last: bool = False) -> tuple[int, bytes]:
    """One BDAT chunk, its octets right after the command line; smtplib has no BDAT."""
    client.send(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)
    return client.getreply()


def _send_chunks(client: smtplib.SMTP, chunks: list[bytes]) -> list[tuple[int, bytes]]:
    return [_bdat(client, c, last=i == len(chunks) - 1) for i, c in enumerate(chunks)]


async def _gone(temp_dir: Path) -> None:
    async with asyncio.timeout(10):
        while _spooled(temp_dir):  # noqa: ASYNC110 (a file system, not an event)
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("size", [1_500_000, 8 * 1024])
async def test_a_big_bdat_message_is_written_to_disk_as_it_arrives_and_kept_exactly(
    start_gateway: GatewayFactory, tmp_path: Path, size: int
) -> None:
    """Chunks past the threshold, read over many reads; and small chunks, each in the
    read of its command line: written out once more than 1 MiB is held."""
    temp_dir = tmp_path / "att"
    raw = _message("chunked and spooled")
    chunks = _cuts(raw, size)
    first = -(-1_500_000 // size)  # chunks before the check: 1.5 MB
    sent = len(b"".join(chunks[:first]))
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw, api(gw) as http:
        client = await asyncio.to_thread(_client, gw)
        try:
            for chunk in chunks[:first]:
                assert (await asyncio.to_thread(_bdat, client, chunk))[0] == 250
            [file] = _spooled(temp_dir)  # the client has not sent the rest yet
            assert file.stat().st_size == sent  # all of it: none held back
            assert file.stat().st_mode & 0o777 == 0o600
            replies = await asyncio.to_thread(_send_chunks, client, chunks[first:])
            assert {code for code, _ in replies} == {250}, replies
        finally:
            await asyncio.to_thread(client.close)
        assert _spooled(temp_dir) == []  # stored, its file gone
        [summary] = (await http.get("/inbox")).json()["items"]
        assert summary["subject"] == "chunked and spooled" and summary["size"] == len(raw)
        assert (await http.get(f"/inbox/{summary['id']}/raw")).content == raw
        event = (await http.get(f"/inbox/{summary['id']}")).json()
        assert event["message"]["body"].startswith(".a line that starts with a dot\n.\n..and two")
        assert event["message"]["problems"] == []
        [attachment] = event["attachments"]
        assert attachment["filename"] == "big.bin" and attachment["size"] == len(BIG)
        assert (await http.get(f"/inbox/{summary['id']}/attachments/0")).content == BIG


async def test_bare_line_endings_are_found_as_in_memory(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """The same message in the same chunks, CRLFs split between them, has the same
    problems in both modes: the file's line endings are counted across the chunks."""
    smuggled = b"\r\n\nsmuggled\n.\nMAIL FROM:<x@y>\r\nbare\rcr\r\n"
    raw = _message("bare").replace(b"\r\n\r\n", smuggled, 1)
    cut = raw.index(b"\r\n", 1_200_000) + 1  # between a CR and its LF
    chunks = [raw[:cut], raw[cut : cut + 1_000_001], raw[cut + 1_000_001 :]]
    seen = {}
    for mode in ("memory", "tempfile"):
        storage = {"mode": mode, "temp_dir": str(tmp_path / mode)}
        async with (
            start_gateway(Mode.DEV, smtp={"attachment_storage": storage}) as gw,
            api(gw) as http,
        ):
            client = await asyncio.to_thread(_client, gw)
            replies = await asyncio.to_thread(_send_chunks, client, chunks)
            await asyncio.to_thread(client.close)
            assert [code for code, _ in replies] == [250] * 3, replies
            [summary] = (await http.get("/inbox")).json()["items"]
            assert (await http.get(f"/inbox/{summary['id']}/raw")).content == raw
            seen[mode] = (await http.get(f"/inbox/{summary['id']}")).json()["message"]["problems"]
            await http.delete("/inbox")  # the next gateway shares the database
        assert _spooled(tmp_path / mode) == []
    assert [p[:18] for p in seen["tempfile"]] == ["DATA has 3 bare LF", "DATA has 1 bare CR"]
    assert seen["tempfile"] == seen["memory"]


@pytest.mark.parametrize("where", ["within a chunk", "between chunks"])
async def test_a_client_gone_in_the_middle_leaves_no_file(
    start_gateway: GatewayFactory, tmp_path: Path, where: str
) -> None:
    temp_dir = tmp_path / "att"
    raw = _message("gone")
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw, api(gw) as http:
        client = await asyncio.to_thread(_client, gw)
        if where == "between chunks":
            assert (await asyncio.to_thread(_bdat, client, raw[:1_500_000]))[0] == 250
        else:  # 2 MB of the 3 MB announced
            await asyncio.to_thread(client.send, b"BDAT 3000000\r\n" + raw[:2_000_000])
        async with asyncio.timeout(10):
            while not _spooled(temp_dir):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await asyncio.to_thread(client.close)
        await _gone(temp_dir)
        assert (await http.get("/inbox")).json()["items"] == []


async def test_rset_between_chunks_removes_the_file(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    temp_dir = tmp_path / "att"
    small = _message("the next one", b"small")
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw, api(gw) as http:
        client = await asyncio.to_thread(_client, gw)
        try:
            assert (await asyncio.to_thread(_bdat, client, _message("reset")[:1_500_000]))[0] == 250
            assert len(_spooled(temp_dir)) == 1
            assert (await asyncio.to_thread(client.rset))[0] == 250
            assert _spooled(temp_dir) == []
            await asyncio.to_thread(client.mail, "a@example.com")
            await asyncio.to_thread(client.rcpt, "b@example.com")
            assert (await asyncio.to_thread(_bdat, client, small, last=True))[0] == 250
        finally:
            await asyncio.to_thread(client.close)
        [summary] = (await http.get("/inbox")).json()["items"]
        assert (await http.get(f"/inbox/{summary['id']}/raw")).content == small


async def test_starttls_between_chunks_removes_the_file(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """STARTTLS starts the session again (RFC 3207 §4.2): the half-sent message goes, and
    its file with it, not an hour later with the stale ones."""
    temp_dir = tmp_path / "att"
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw:
        client = await asyncio.to_thread(_client, gw)
        try:
            assert (await asyncio.to_thread(_bdat, client, _message("tls")[:1_500_000]))[0] == 250
            assert len(_spooled(temp_dir)) == 1
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            assert (await asyncio.to_thread(client.starttls, context=context))[0] == 220
            await asyncio.to_thread(client.ehlo)
            assert _spooled(temp_dir) == []
        finally:
            await asyncio.to_thread(client.close)


async def test_too_big_is_552_and_leaves_no_file(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """RFC 3030 §2: the chunks past the limit are still read (the client sends them
    whatever the answer); what was written of them goes at once, the 552 comes at LAST."""
    temp_dir = tmp_path / "att"
    raw = _message("too big")
    smtp = _tempfile(temp_dir, max_message_size=3_000_000)
    async with start_gateway(Mode.DEV, smtp=smtp) as gw, api(gw) as http:
        client = await asyncio.to_thread(_client, gw)
        try:
            assert (await asyncio.to_thread(_bdat, client, raw[:1_500_000]))[0] == 250
            assert len(_spooled(temp_dir)) == 1
            assert (await asyncio.to_thread(_bdat, client, raw[1_500_000:3_000_000]))[0] == 250
            reply = await asyncio.to_thread(_bdat, client, raw[3_000_000:], last=True)
            assert reply == (552, b"5.3.4 Too much mail data")
            assert _spooled(temp_dir) == []
            assert (await asyncio.to_thread(client.noop))[0] == 250  # still in step
        finally:
            await asyncio.to_thread(client.close)
        assert (await http.get("/inbox")).json()["items"] == []


async def test_a_spool_that_cannot_be_written_is_452_at_last(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """A full disk, or a temp_dir that is no directory: the chunks are still read, and
    LAST hears ``452 4.3.1`` (not 552, nor a connection cut without a word)."""
    temp_dir = tmp_path / "a-file"
    temp_dir.write_bytes(b"")
    raw = _message("no room")
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw, api(gw) as http:
        client = await asyncio.to_thread(_client, gw)
        try:
            assert (await asyncio.to_thread(_bdat, client, raw[:1_500_000]))[0] == 250
            code, text = await asyncio.to_thread(_bdat, client, raw[1_500_000:], last=True)
            assert (code, text[:6]) == (452, b"4.3.1 "), text
            assert (await asyncio.to_thread(client.noop))[0] == 250  # still in step
        finally:
            await asyncio.to_thread(client.close)
        assert (await http.get("/inbox")).json()["items"] == []


async def test_a_message_refused_by_chaos_leaves_no_file(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    temp_dir = tmp_path / "att"
    smtp = _tempfile(temp_dir, chaos={"data": {"code": 451, "probability": 100}})
    async with start_gateway(Mode.DEV, smtp=smtp) as gw, api(gw) as http:
        client = await asyncio.to_thread(_client, gw)
        try:
            replies = await asyncio.to_thread(_send_chunks, client, _cuts(_message("chaos"), MIB))
        finally:
            await asyncio.to_thread(client.close)
        assert [code for code, _ in replies] == [250] * (len(replies) - 1) + [451]
        assert _spooled(temp_dir) == []
        assert (await http.get("/inbox")).json()["items"] == []


async def test_a_big_bdat_message_is_captured_in_a_few_mb_of_memory(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Received in 1 MiB chunks, written to its file, parsed from there and stored a
    block at a time: the gateway's Python allocations peak at a fraction of the message's
    size, where memory mode holds it several times over (the client is another process,
    so its copy is not counted)."""
    raw = _message("measured", BIG * 2)  # 6 MiB attachment, 8.6 MB message
    message_file = tmp_path / "m.eml"
    message_file.write_bytes(raw)
    peaks = await capture_peaks(
        start_gateway,
        tmp_path / "att",
        raw,
        lambda gw: _send_file_in_chunks(gw, message_file, MIB),
    )
    assert _spooled(tmp_path / "att") == []
    assert peaks["memory"] > 2 * len(raw), peaks  # the message, and copies of it
    assert peaks["tempfile"] < len(raw) / 2, peaks


async def _send_file_in_chunks(gw: Gateway, message: Path, size: int) -> None:
    """BDAT with smtplib, in a process of its own."""
    assert gw.smtp_address is not None
    host, port = gw.smtp_address
    code = (
        "import smtplib, sys\n"
        f"with smtplib.SMTP({host!r}, {port}, timeout=30) as c:\n"
        "    c.ehlo(); c.mail('a@example.com'); c.rcpt('b@example.com')\n"
        f"    raw = open({str(message)!r}, 'rb').read()\n"
        f"    cuts = range(0, len(raw), {size})\n"
        "    for start in cuts:\n"
        f"        chunk = raw[start : start + {size}]\n"
        "        last = b' LAST' if start == cuts[-1] else b''\n"
        "        c.send(b'BDAT %d%s\\r\\n' % (len(chunk), last) + chunk)\n"
        "        if c.getreply()[0] != 250: sys.exit(1)\n"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    assert await process.wait() == 0


# ------------------------------------------------------------------ the body itself

PIECES = [b"Subject: x\r\n\r\nbody\r\n", b".dot\r\n.\r\n", b"bare\nlf\rcr\r\n", b"\r", b"\n",
          b"\r\n" * 20, b"z" * 3000]  # fmt: skip


def test_spooled_chunks_are_the_chunks_held_in_memory(tmp_path: Path) -> None:
    files = 0
    for seed in range(60):
        rng = random.Random(seed)
        stream = b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12)))
        held = ChunkedBody(0)
        spool = Spool(tmp_path, threshold=rng.choice([0, 1, 7, 100]))
        spooling = ChunkedBody(0, spool=spool)
        for body in (held, spooling):
            _feed(body, stream, random.Random(seed))
        content, none = held.end()
        assert content == stream and none is None
        nothing, spooled = spooling.end()
        if spooled is None:  # never past the threshold
            assert nothing == stream
            continue
        files += 1
        assert nothing is None
        assert spooled.path.read_bytes() == stream and spooled.size == len(stream)
        assert (spooled.crlf, spooled.lf, spooled.cr) == (
            stream.count(b"\r\n"),
            stream.count(b"\n"),
            stream.count(b"\r"),
        )
        assert spooled.path.stat().st_mode & 0o777 == 0o600
        spooled.path.unlink()
    assert files > 40


def _feed(body: ChunkedBody, stream: bytes, rng: random.Random) -> None:
    """The stream in chunks of random sizes, each fed in reads of random sizes."""
    pos = 0
    while pos < len(stream):
        end = min(len(stream), pos + rng.choice([1, 2, 5, 100, 4000]))
        body.expect(end - pos)
        while pos < end:
            read = min(end, pos + rng.choice([1, 3, 64, 5000]))
            assert (body.feed(stream[pos:read]) is None) is (read < end)
            pos = read


def test_too_big_and_discard_remove_the_file(tmp_path: Path) -> None:
    body = ChunkedBody(1000, spool=Spool(tmp_path, threshold=10))
    body.expect(600)
    assert body.feed(b"x" * 600) == b""
    assert len(list(tmp_path.iterdir())) == 1
    body.expect(600)  # 1,200 announced: past the limit
    assert list(tmp_path.iterdir()) == []
    assert body.feed(b"y" * 600) == b"" and list(tmp_path.iterdir()) == []
    assert body.end() == (None, None)

    gone = ChunkedBody(0, spool=Spool(tmp_path, threshold=10))
    gone.expect(100)
    assert gone.feed(b"z" * 50) is None and len(list(tmp_path.iterdir())) == 1
    gone.discard()  # the client left, or said RSET
    assert list(tmp_path.iterdir()) == []


def test_below_the_threshold_nothing_is_written(tmp_path: Path) -> None:
    body = ChunkedBody(0, spool=Spool(tmp_path, threshold=10_000))
    _feed(body, PIECES[0] * 100, random.Random(3))
    assert body.end() == (PIECES[0] * 100, None)
    assert list(tmp_path.iterdir()) == []
