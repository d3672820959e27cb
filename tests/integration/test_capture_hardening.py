"""The capture server under hostile mail, idle clients and a failing store."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import sqlite3
import threading
import time

import aiosmtplib
import pytest

from mailgate.app import Gateway, Mode
from mailgate.inbox import service
from mailgate.mime import ParsedMessage, parse_message
from tests.integration.conftest import GatewayFactory, api
from tests.integration.test_mailpit_api import mailpit
from tests.unit.test_parse_limits import handed_fields, many_headers, nested


def _address(gw: Gateway) -> tuple[str, int]:
    assert gw.smtp_address is not None
    return gw.smtp_address


def _sendmail(address: tuple[str, int], raw: bytes) -> dict[str, tuple[int, bytes]]:
    """One real smtplib session; raises on any refusal."""
    with smtplib.SMTP(*address, timeout=30) as client:
        return client.sendmail("app@example.com", ["dev@example.com"], raw)


async def test_idle_client_hears_421_before_the_close(start_gateway: GatewayFactory) -> None:
    """RFC 5321 §4.5.3.2: a server that times a client out says so (421) before closing."""
    async with start_gateway(Mode.DEV, smtp={"read_timeout": 0.5}) as gw:
        reader, writer = await asyncio.open_connection(*_address(gw))
        assert (await reader.readline()).startswith(b"220 ")
        writer.write(b"EHLO client.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        # ... and then nothing.
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line == b"421 4.4.2 mailgate.local Error: timeout exceeded\r\n"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_storage_failure_answers_451_never_250(
    start_gateway: GatewayFactory, db_url: str
) -> None:
    """Accept means durable: when the commit fails the client must retry, not be told 250."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        await asyncio.to_thread(_refuse_inserts, db_url.removeprefix("sqlite:///"))
        smtp = aiosmtplib.SMTP(hostname=_address(gw)[0], port=_address(gw)[1], start_tls=False)
        await smtp.connect()
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: lost?\r\n\r\nx\r\n")
        assert refused.value.code == 451  # RFC 5321 §4.2.5: local error in processing
        assert "try again later" in refused.value.message
        await smtp.quit()
        assert (await client.get("/inbox")).json()["items"] == []


async def test_250_names_the_committed_capture(start_gateway: GatewayFactory) -> None:
    """The 250 after DATA carries the id of the record that is already in the inbox."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        smtp = aiosmtplib.SMTP(hostname=_address(gw)[0], port=_address(gw)[1], start_tls=False)
        await smtp.connect()
        _, reply = await smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: kept\r\n\r\n")
        await smtp.quit()
        [item] = (await client.get("/inbox")).json()["items"]
        assert reply == f"2.0.0 OK: queued as {item['id']}"


def _refuse_inserts(path: str) -> None:
    """Make the real database refuse every captured message, as a full disk would."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "CREATE TRIGGER refuse_capture BEFORE INSERT ON inbox "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        conn.commit()
    finally:
        conn.close()


async def test_deep_nesting_and_40000_headers_are_captured_over_smtp(
    start_gateway: GatewayFactory,
) -> None:
    """Both used to fail: RecursionError → 451 forever, and seconds of quadratic header work."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        for raw in (nested(2000), many_headers(40_000)):
            assert await asyncio.to_thread(_sendmail, _address(gw), raw) == {}
        headers_item, nested_item = (await client.get("/inbox")).json()["items"]

        deep = (await client.get(f"/inbox/{nested_item['id']}")).json()
        assert deep["message"]["subject"] == "deep"
        assert deep["message"]["problems"] == [
            "mime: multipart nested deeper than 64 levels;"
            " the deeper part is kept whole as one attachment"
        ]
        [rest] = deep["attachments"]
        part = await client.get(f"/inbox/{nested_item['id']}/attachments/0")
        assert part.status_code == 200 and len(part.content) == rest["size"]
        assert part.content.startswith(b'Content-Type: multipart/mixed; boundary="b64"')

        many = (await client.get(f"/inbox/{headers_item['id']}")).json()
        assert many["message"]["html"] == "<p>still here</p>\n"
        assert len(many["message"]["headers"]) == 1000
        assert "mailgate:problems" not in many["message"]["headers"]
        assert many["message"]["problems"][0].startswith("headers: 40003 header fields")
        raw = (await client.get(f"/inbox/{headers_item['id']}/raw")).content
        assert raw.count(b"X-Filler-") == 40_000  # the raw source keeps every field


def _three_parts(html_type: bytes, pdf: bytes = b"attachment; filename=a.pdf") -> bytes:
    """A good text/plain, a text/html of content type ``html_type`` and a PDF (its
    Content-Disposition ``pdf``)."""
    return (
        b"From: a@example.com\r\nSubject: three parts\r\n"
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        b"--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain\r\n"
        b"--m\r\nContent-Type: " + html_type + b"\r\n\r\n<p>caf\xc3\xa9</p>\r\n"
        b"--m\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: " + pdf + b"\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n"
    )


@pytest.mark.parametrize(
    "charset", [b"a\x00b", b"idna", b"a\x01b", b"x" * 900], ids=["nul", "idna", "ctl", "long"]
)
async def test_a_charset_python_cannot_decode_with_costs_no_other_part(
    start_gateway: GatewayFactory, charset: bytes
) -> None:
    """The audit's message was stored (250) with no body, html or attachment, its
    attachment 404 and ``mime: body not parsed (ValueError)``: a NUL in one part's
    charset made ``bytes.decode`` raise ValueError, and only LookupError was caught."""
    raw = _three_parts(b'text/html; charset="' + charset + b'"')
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        assert await asyncio.to_thread(_sendmail, _address(gw), raw) == {}
        [item] = (await client.get("/inbox")).json()["items"]
        shown = (await client.get(f"/inbox/{item['id']}")).json()
        assert shown["message"]["body"] == "plain"
        assert shown["message"]["html"] == "<p>café</p>"  # read as no charset: UTF-8
        assert shown["message"]["problems"] == []
        assert [a["filename"] for a in shown["attachments"]] == ["a.pdf"]
        pdf = await client.get(f"/inbox/{item['id']}/attachments/0")
        assert pdf.status_code == 200 and pdf.content == b"%PDF-1.4\n"


@pytest.mark.parametrize("label", [b"a\x00b", b"idna"], ids=["nul", "idna"])
async def test_an_rfc_2231_charset_python_cannot_decode_with_costs_no_other_part(
    start_gateway: GatewayFactory, label: bytes
) -> None:
    """The same charsets as RFC 2231 labels (``charset*=a\\x00b''utf-8``) were lost in
    the email package's parameter decoding: the message was stored with no body, html
    or attachment, and Mailpit's message view failed (its part list raised)."""
    raw = _three_parts(
        b"text/html; charset*=" + label + b"''utf-8",
        b"attachment; filename*=" + label + b"''r%C3%A9sum%C3%A9.pdf",
    )
    async with start_gateway(Mode.DEV) as gw, api(gw) as client, mailpit(gw) as mp:
        assert await asyncio.to_thread(_sendmail, _address(gw), raw) == {}
        [item] = (await client.get("/inbox")).json()["items"]
        shown = (await client.get(f"/inbox/{item['id']}")).json()
        assert (shown["message"]["body"], shown["message"]["html"]) == ("plain", "<p>café</p>")
        assert shown["message"]["problems"] == []
        assert [a["filename"] for a in shown["attachments"]] == ["résumé.pdf"]
        pdf = await client.get(f"/inbox/{item['id']}/attachments/0")
        assert pdf.status_code == 200 and pdf.content == b"%PDF-1.4\n"
        viewed = await mp.get(f"/api/v1/message/{item['id']}")
        assert viewed.status_code == 200
        assert [a["FileName"] for a in viewed.json()["Attachments"]] == ["résumé.pdf"]


async def test_a_message_being_parsed_does_not_hold_up_other_sessions(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big message is parsed in a worker thread: while one is mid-parse (held here on
    purpose), another SMTP session and the API are served. A small single-part message
    is parsed on the event loop (a thread costs more than its parse)."""
    started, release = threading.Event(), threading.Event()
    on_loop_thread: list[bool] = []
    real = parse_message

    def held(raw: bytes) -> ParsedMessage:
        on_loop_thread.append(threading.current_thread() is threading.main_thread())
        if b"Subject: slow" in raw:
            started.set()
            release.wait(5)  # on the event loop this would freeze everything below
        return real(raw)

    monkeypatch.setattr(service, "parse_message", held)
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        csv = b"a;b\r\n" * 20_000  # 100 kB: big enough for a thread
        slow_raw = b"Subject: slow\r\nContent-Type: text/csv\r\n\r\n" + csv
        slow = asyncio.create_task(asyncio.to_thread(_sendmail, _address(gw), slow_raw))
        try:
            assert await asyncio.to_thread(started.wait, 5)
            quick_raw = b"Subject: quick\r\n\r\nhello\r\n"
            assert await asyncio.to_thread(_sendmail, _address(gw), quick_raw) == {}
            items = (await client.get("/inbox")).json()["items"]
            assert [i["subject"] for i in items] == ["quick"]
            assert not slow.done()
        finally:
            release.set()
        assert await slow == {}
        items = (await client.get("/inbox")).json()["items"]
        assert [i["subject"] for i in items] == ["slow", "quick"]
        got = await client.get(f"/inbox/{items[0]['id']}/attachments/0")  # re-parsed
        assert got.content == csv
    assert on_loop_thread == [False, True, False]  # slow, quick, the attachment's re-parse


async def test_a_small_message_with_many_mime_parameters_is_parsed_in_a_thread(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The email package reads a Content-Type parameter in about 0.05 ms, three times: a
    43 kB single-part message with 3,000 of them held the event loop half a second."""
    on_loop_thread: list[bool] = []
    real = parse_message

    def watched(raw: bytes) -> ParsedMessage:
        on_loop_thread.append(threading.current_thread() is threading.main_thread())
        return real(raw)

    monkeypatch.setattr(service, "parse_message", watched)
    params = b";\r\n ".join(b"p%d=v%d" % (n, n) for n in range(3000))
    raw = b"Subject: params\r\nContent-Type: text/plain;\r\n " + params + b"\r\n\r\nhi\r\n"
    assert len(raw) < 64 * 1024
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        assert await asyncio.to_thread(_sendmail, _address(gw), raw) == {}
        assert await asyncio.to_thread(_sendmail, _address(gw), b"Subject: a; b\r\n\r\nx\r\n") == {}
        items = (await client.get("/inbox")).json()["items"]
        assert [i["subject"] for i in items] == ["a; b", "params"]
    assert on_loop_thread == [False, True]


def _parameter_flood(count: int) -> bytes:
    """A multipart whose Content-Type, and whose PDF's Content-Disposition (RFC 2231
    sections), each carry ``count`` parameters after the ones that matter."""
    junk = b"".join(b";\r\n p%d=v" % n for n in range(count))
    sections = b"".join(b";\r\n x*%d*=a" % n for n in range(count))
    return (
        b"From: a@example.com\r\nSubject: flood\r\n"
        b"Content-Type: multipart/mixed; boundary=b" + junk + b"\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="a.pdf"' + sections + b"\r\n\r\n"
        b"JVBERi0xLjQK\r\n--b--\r\n"
    )


async def test_a_message_of_mime_parameters_is_kept_flagged_and_readable_in_mailpit(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 parameters in each of two fields took the email package seconds (it reads
    one in about 0.05 ms, and splits a field one parameter at a time), at capture and
    again at every read. It now reads a field's first 64 (mime.budget), and says so."""
    handed = handed_fields(monkeypatch)
    raw = _parameter_flood(20_000)
    async with start_gateway(Mode.DEV) as gw, api(gw) as client, mailpit(gw) as mp:
        assert await asyncio.to_thread(_sendmail, _address(gw), raw) == {}  # 250
        [item] = (await client.get("/inbox")).json()["items"]
        shown = (await client.get(f"/inbox/{item['id']}")).json()
        assert shown["message"]["body"] == "hello"
        assert shown["message"]["problems"] == [
            "mime: 2 MIME fields of more than 64 parameters or 8192 characters read up to"
            " there (the raw source has them whole)"
        ]
        assert [a["filename"] for a in shown["attachments"]] == ["a.pdf"]

        message = await mp.get(f"/api/v1/message/{item['id']}")
        assert message.status_code == 200
        assert message.json()["Text"] == "hello"
        [pdf] = message.json()["Attachments"]
        assert (pdf["PartID"], pdf["FileName"]) == ("2", "a.pdf")
        part = await mp.get(f"/api/v1/message/{item['id']}/part/2")
        assert (part.status_code, part.content) == (200, b"%PDF-1.4\n")
        download = await client.get(f"/inbox/{item['id']}/attachments/0")
        assert (download.status_code, download.content) == (200, b"%PDF-1.4\n")
        raw_back = await client.get(f"/inbox/{item['id']}/raw")
        assert raw_back.content.count(b"x*") == 20_000  # the raw source keeps them all
    assert handed, "nothing was parsed"
    assert max(value.count(";") for _, value in handed) == 64


def _flood(address: tuple[str, int], commands: int) -> tuple[int, float]:
    """Send ``commands`` EHLOs without reading a reply, through a small receive window;
    then read what came: (bytes read, seconds until the server ended the connection)."""
    started = time.monotonic()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(address)
        with contextlib.suppress(ConnectionError):
            sock.sendall(b"EHLO client.test\r\n" * commands)
        time.sleep(3)  # and read nothing meanwhile
        sock.settimeout(10)  # a server still waiting to write would time this out
        received = 0
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                received += len(chunk)
    return received, time.monotonic() - started


async def test_a_client_that_never_reads_its_replies_is_dropped(
    start_gateway: GatewayFactory,
) -> None:
    """Replies never read fill the socket buffers; after ``write_timeout`` the server
    drops the client instead of waiting on it for ever (a socket timeout would fail)."""
    commands = 60_000  # about 10 MB of EHLO replies: more than the buffers hold
    async with start_gateway(Mode.DEV, smtp={"write_timeout": 0.5}) as gw:
        received, seconds = await asyncio.to_thread(_flood, _address(gw), commands)
    assert received < commands * 100 and seconds < 20
