"""In ``tempfile`` mode a big message goes to disk while it arrives (issue 9): the SMTP
server writes DATA past ``Spool.threshold`` to a private file in the attachment
directory's ``spool``, the capture reads it from there and copies it into the store a
block at a time, and the file goes once the message is kept. The message is the one
the client sent, byte for byte, with its problems (bare LF) found as in memory."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mailgate.app import Gateway, Mode
from tests.integration import capture_handlers
from tests.integration.conftest import GatewayFactory, api, capture_peaks

KEEP = "tests.integration.capture_handlers:keep"

BIG = os.urandom(3 * 1024 * 1024)  #: past the 1 MiB threshold (4 MiB in base64)


def _tempfile(temp_dir: Path) -> dict[str, Any]:
    return {"attachment_storage": {"mode": "tempfile", "temp_dir": str(temp_dir)}}


def _message(subject: str, attachment: bytes = BIG) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", subject
    message.set_content(".a line that starts with a dot\n..and two\n")
    message.add_attachment(attachment, maintype="application", subtype="octet-stream",
                           filename="big.bin")  # fmt: skip
    return message.as_bytes(policy=policy.SMTP)


def _spooled(temp_dir: Path) -> list[Path]:
    return sorted(temp_dir.glob("mailgate-*/spool/data-*.eml"))


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


async def test_a_big_message_is_written_to_disk_as_it_arrives_and_kept_exactly(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    temp_dir = tmp_path / "att"
    raw = _message("spooled")
    stuffed = raw.replace(b"\r\n.", b"\r\n..")
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw, api(gw) as client:
        sock = await _in_data(gw)
        try:
            half = len(stuffed) // 2
            await asyncio.to_thread(sock.sendall, stuffed[:half])
            async with asyncio.timeout(10):  # on disk while the client is still sending
                while not (files := _spooled(temp_dir)) or files[0].stat().st_size < 1_500_000:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert files[0].stat().st_mode & 0o777 == 0o600
            await asyncio.to_thread(sock.sendall, stuffed[half:] + b".\r\n")
            reply = await asyncio.to_thread(_read_reply, sock)
            assert reply.startswith(b"250 "), reply
        finally:
            sock.close()
        assert _spooled(temp_dir) == []  # kept in the store, the file is gone
        [summary] = (await client.get("/inbox")).json()["items"]
        assert summary["subject"] == "spooled" and summary["size"] == len(raw)
        stored = await client.get(f"/inbox/{summary['id']}/raw")
        assert stored.content == raw
        event = (await client.get(f"/inbox/{summary['id']}")).json()
        assert event["message"]["body"].startswith(".a line that starts with a dot\n..and two")
        assert event["message"]["problems"] == []
        [attachment] = event["attachments"]
        assert attachment["filename"] == "big.bin" and attachment["size"] == len(BIG)
        content = await client.get(f"/inbox/{summary['id']}/attachments/0")
        assert content.content == BIG


async def test_bare_line_feeds_are_flagged_on_a_spooled_message_too(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Only CRLF.CRLF ends DATA: a smuggled ``LF.LF`` stays inside the message."""
    raw = _message("bare lf").replace(b"\r\n\r\n", b"\r\n\nsmuggled\n.\nMAIL FROM:<x@y>\r\n", 1)
    async with start_gateway(Mode.DEV, smtp=_tempfile(tmp_path / "att")) as gw, api(gw) as client:
        sock = await _in_data(gw)
        try:  # smtplib would turn the bare LFs into CRLF
            await asyncio.to_thread(sock.sendall, raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            assert (await asyncio.to_thread(_read_reply, sock)).startswith(b"250 ")
        finally:
            sock.close()
        [summary] = (await client.get("/inbox")).json()["items"]
        event = (await client.get(f"/inbox/{summary['id']}")).json()
        assert [p[:18] for p in event["message"]["problems"]] == ["DATA has 3 bare LF"]
        assert (await client.get(f"/inbox/{summary['id']}/raw")).content == raw
        assert _spooled(tmp_path / "att") == []


async def _in_data(gw: Gateway) -> socket.socket:
    """A client connection that has said DATA and heard 354."""
    assert gw.smtp_address is not None
    sock = await asyncio.to_thread(socket.create_connection, gw.smtp_address, 10)
    for line in (b"", b"EHLO x\r\n", b"MAIL FROM:<a@example.com>\r\n",
                 b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n"):  # fmt: skip
        if line:
            await asyncio.to_thread(sock.sendall, line)
        await asyncio.to_thread(_read_reply, sock)
    return sock


async def test_a_client_gone_in_the_middle_leaves_no_file(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    temp_dir = tmp_path / "att"
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw, api(gw) as client:
        sock = await _in_data(gw)
        await asyncio.to_thread(sock.sendall, _message("gone")[:2_000_000])
        async with asyncio.timeout(10):
            while not _spooled(temp_dir):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        sock.close()
        async with asyncio.timeout(10):
            while _spooled(temp_dir):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert (await client.get("/inbox")).json()["items"] == []


async def test_a_spool_that_cannot_be_written_is_452_and_the_session_goes_on(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """A full disk, or a temp_dir that is no directory: the client hears ``452 4.3.1`` at
    the end of its DATA (RFC 5321 §4.2.2, RFC 3463 §3.4) and may go on. The OSError was
    left to asyncio, which cut the connection without a reply or a line in the log."""
    temp_dir = tmp_path / "a-file"
    temp_dir.write_bytes(b"")
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw, api(gw) as client:
        sock = await _in_data(gw)
        try:
            stuffed = _message("no room").replace(b"\r\n.", b"\r\n..")
            await asyncio.to_thread(sock.sendall, stuffed + b".\r\n")
            reply = await asyncio.to_thread(_read_reply, sock)
            assert reply.startswith(b"452 4.3.1 "), reply
            await asyncio.to_thread(sock.sendall, b"NOOP\r\n")
            assert (await asyncio.to_thread(_read_reply, sock)).startswith(b"250 ")
        finally:
            sock.close()
        assert (await client.get("/inbox")).json()["items"] == []


async def test_handlers_get_the_spooled_attachments_files(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    capture_handlers.SEEN.clear()
    smtp = _tempfile(tmp_path / "att") | {"handlers": [KEEP]}
    async with start_gateway(Mode.DEV, smtp=smtp) as gw:
        await _send_file(gw, _write(tmp_path / "m.eml", _message("to a handler")))
        [event] = capture_handlers.SEEN
        [attachment] = event["attachments"]
        path = Path(attachment["path"])
        assert path.name == "0-big.bin" and path.parent.name == event["id"]
        assert await asyncio.to_thread(path.read_bytes) == BIG
        assert attachment["size"] == len(BIG)
        assert list((tmp_path / "att").glob("mailgate-*/spool/*")) == []  # nothing staged
    capture_handlers.SEEN.clear()


async def test_a_big_message_is_captured_in_a_few_mb_of_memory(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Received, parsed, its attachment decoded and the message stored, a block at a
    time: the gateway's Python allocations peak at a fraction of the message's size,
    where memory mode holds it several times over (the client is another process, so
    its copy is not counted)."""
    raw = _message("measured", BIG * 2)  # 6 MiB attachment, 8.6 MB message
    message_file = _write(tmp_path / "m.eml", raw)
    peaks = await capture_peaks(
        start_gateway, tmp_path / "att", raw, lambda gw: _send_file(gw, message_file)
    )
    assert peaks["memory"] > 2 * len(raw), peaks  # the message, and copies of it
    assert peaks["tempfile"] < len(raw) / 2, peaks


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


async def _send_file(gw: Gateway, message: Path) -> None:
    """Send with smtplib in a process of its own."""
    assert gw.smtp_address is not None
    host, port = gw.smtp_address
    code = (
        "import smtplib, sys\n"
        f"with smtplib.SMTP({host!r}, {port}, timeout=30) as c:\n"
        f"    raw = open({str(message)!r}, 'rb').read()\n"
        "    sys.exit(len(c.sendmail('a@example.com', ['b@example.com'], raw)))\n"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    assert await process.wait() == 0
