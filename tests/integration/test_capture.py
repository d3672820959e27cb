"""`mailgate dev` in-process: real SMTP clients in, the inbox API out."""

from __future__ import annotations

import asyncio
import base64
import os
import smtplib
from email.message import EmailMessage

import aiosmtplib
import pytest

from mailgate.app import Gateway, Mode
from tests.integration.conftest import GatewayFactory, api, wait_for_state

BLOB = bytes(range(256)) + os.urandom(4096)


def _smtp_address(gw: Gateway) -> tuple[str, int]:
    assert gw.smtp_address is not None
    return gw.smtp_address


def _send_with_smtplib(
    host: str, port: int, msg: EmailMessage
) -> tuple[tuple[int, bytes], dict[str, object]]:
    with smtplib.SMTP(host, port, timeout=10) as client:
        ehlo = client.ehlo()
        client.user, client.password = "app-user", "p4ss:word"
        client.auth("PLAIN", client.auth_plain)  # login() would pick CRAM-MD5, no password
        refused = client.send_message(msg)
        return ehlo, dict(refused)


def _capture_message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "App <app@example.com>"
    msg["To"] = "user@example.com"
    msg["Subject"] = "Grüße – 你好 ✓"
    msg.set_content("Hello in plain text")
    msg.add_alternative("<p>Hello <b>HTML</b></p>", subtype="html")
    msg.add_attachment(BLOB, maintype="application", subtype="octet-stream", filename="blob.bin")
    return msg


def _send_as_another(host: str, port: int) -> int:
    """AUTH PLAIN with an authorization identity (RFC 4616 §2) that is not the login."""
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo()
        code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"boss\0app\0pw").decode())
        client.sendmail("app@example.com", ["user@example.com"], b"Subject: as boss\r\n\r\nx\r\n")
        return code


async def test_capture_records_plain_s_authorization_identity(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        host, port = _smtp_address(gw)
        assert await asyncio.to_thread(_send_as_another, host, port) == 235
        [summary] = (await client.get("/inbox")).json()["items"]
        event = (await client.get(f"/inbox/{summary['id']}")).json()
    assert event["authentication"] == {
        "attempted": True,
        "mechanism": "PLAIN",
        "username": "app",
        "password": "pw",
        "authzid": "boss",
    }


async def test_capture_round_trip_with_auth_utf8_subject_and_binary_attachment(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        host, port = _smtp_address(gw)
        ehlo, refused = await asyncio.to_thread(_send_with_smtplib, host, port, _capture_message())
        assert refused == {}
        features = ehlo[1].decode().upper().split("\n")
        for feature in ("SIZE 10485760", "8BITMIME", "SMTPUTF8", "PIPELINING"):
            assert feature in features
        auth = next(f for f in features if f.startswith("AUTH")).split()
        assert {"PLAIN", "LOGIN", "CRAM-MD5"} <= set(auth)

        [summary] = (await client.get("/inbox")).json()["items"]
        assert summary["subject"] == "Grüße – 你好 ✓" and summary["attachments"] == 1
        event = (await client.get(f"/inbox/{summary['id']}")).json()
        assert event["event"] == "EMAIL_RECEIVED" and event["uuid"] == summary["id"]
        assert event["envelope"] == {
            "from": "app@example.com",
            "to": ["user@example.com"],
            "helo": event["envelope"]["helo"],
        }
        assert event["envelope"]["helo"]
        assert event["remote_addr"].startswith("127.0.0.1:")
        assert event["authentication"] == {
            "attempted": True,
            "mechanism": "PLAIN",
            "username": "app-user",
            "password": "p4ss:word",
        }
        assert event["message"]["headers"]["Subject"] == "Grüße – 你好 ✓"
        assert event["message"]["body"].strip() == "Hello in plain text"
        assert event["message"]["html"].strip() == "<p>Hello <b>HTML</b></p>"
        [att] = event["attachments"]
        assert att["filename"] == "blob.bin" and att["size"] == len(BLOB) and "content" not in att

        raw = await client.get(f"/inbox/{summary['id']}/raw")
        assert raw.headers["content-type"] == "message/rfc822"
        assert b"Subject: =?utf-8?" in raw.content
        got = await client.get(f"/inbox/{summary['id']}/attachments/0")
        assert got.content == BLOB
        assert got.headers["content-type"] == "application/octet-stream"
        assert (await client.get(f"/inbox/{summary['id']}/attachments/1")).status_code == 404


async def test_auth_login_with_aiosmtplib_and_several_transactions(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        host, port = _smtp_address(gw)
        smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False)
        await smtp.connect()
        await smtp.ehlo()
        await smtp.auth_login("login-user", "login-pass")
        for i in range(3):
            await smtp.sendmail(
                "a@example.com", [f"r{i}@example.com"], f"Subject: n{i}\r\n\r\nbody {i}\r\n"
            )
        await smtp.quit()
        items = (await client.get("/inbox")).json()["items"]
        assert [i["subject"] for i in items] == ["n2", "n1", "n0"]  # newest first
        event = (await client.get(f"/inbox/{items[0]['id']}")).json()
        assert event["authentication"]["mechanism"] == "LOGIN"
        assert event["authentication"]["username"] == "login-user"
        assert event["authentication"]["password"] == "login-pass"
        assert [
            i["subject"] for i in (await client.get("/inbox", params={"q": "N1"})).json()["items"]
        ] == ["n1"]
        assert (await client.delete(f"/inbox/{items[0]['id']}")).json() == {"deleted": 1}
        assert (await client.get(f"/inbox/{items[0]['id']}")).status_code == 404
        assert (await client.delete("/inbox")).json() == {"deleted": 2}
        assert (await client.get("/inbox")).json()["items"] == []


async def test_oversize_and_too_many_recipients_are_refused(start_gateway: GatewayFactory) -> None:
    async with (
        start_gateway(Mode.DEV, smtp={"max_message_size": 2000, "max_recipients": 2}) as gw,
        api(gw) as client,
    ):
        host, port = _smtp_address(gw)
        smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False)
        await smtp.connect()
        with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:
            await smtp.sendmail(
                "a@example.com", ["b@example.com"], b"Subject: big\r\n\r\n" + b"x" * 5000
            )
        assert too_big.value.code == 552  # RFC 5321 §4.5.3.1.7 / RFC 1870
        await smtp.rset()
        errors, _ = await smtp.sendmail(
            "a@example.com",
            ["1@example.com", "2@example.com", "3@example.com"],
            b"Subject: ok\r\n\r\nx\r\n",
        )
        assert errors["3@example.com"].code == 452
        await smtp.quit()
        [only] = (await client.get("/inbox")).json()["items"]
        assert only["subject"] == "ok" and only["envelope"]["to"] == [
            "1@example.com",
            "2@example.com",
        ]


async def test_rest_messages_in_dev_land_in_the_same_inbox(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV, relay_url="smtp://127.0.0.1:9") as gw, api(gw) as client:
        response = await client.post(
            "/messages",
            json={
                "to": "dev@localhost",
                "subject": "From the API",
                "html": "<p>hi</p>",
                "attachments": [
                    {"filename": "a.txt", "content_type": "text/plain", "content": "aGVsbG8="}
                ],
            },
        )
        [mid] = response.json()["ids"]
        body = await wait_for_state(client, mid, "sent")  # dev never relays, even with a relay set
        assert body["attempts"][0]["transport"] == "capture"
        [summary] = (await client.get("/inbox")).json()["items"]
        assert summary["source"] == "api" and summary["subject"] == "From the API"
        event = (await client.get(f"/inbox/{summary['id']}")).json()
        assert event["message"]["html"].strip() == "<p>hi</p>"
        assert event["envelope"]["to"] == ["dev@localhost"]
        assert (await client.get(f"/inbox/{summary['id']}/attachments/0")).content == b"hello"


async def test_shutdown_says_421_to_idle_sessions(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw:
        host, port = _smtp_address(gw)
        reader, writer = await asyncio.open_connection(host, port)
        assert (await reader.readline()).startswith(b"220 ")
    assert await asyncio.wait_for(reader.readline(), 5) == b"421 4.3.2 Service shutting down\r\n"
    assert await reader.read() == b""
    writer.close()


async def test_pipelined_commands_and_no_smuggling(start_gateway: GatewayFactory) -> None:
    """RFC 2920 pipelining works; a bare-LF "\\n.\\n" does not end DATA (SMTP smuggling)."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        host, port = _smtp_address(gw)
        reader, writer = await asyncio.open_connection(host, port)
        await reader.readline()
        writer.write(b"EHLO client.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        replies = [await reader.readline() for _ in range(3)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"354"]
        writer.write(b"Subject: outer\r\n\r\nline\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n")
        assert (await reader.readline()).startswith(b"250 ")
        writer.write(b"QUIT\r\n")
        await reader.readline()
        writer.close()
        [only] = (await client.get("/inbox")).json()["items"]
        assert only["subject"] == "outer" and only["envelope"]["from"] == "a@example.com"
        raw = (await client.get(f"/inbox/{only['id']}/raw")).content
        assert b"MAIL FROM:<evil@example.com>" in raw  # kept as body text, not run as a command
