"""``mailgate dev`` as a capture server: real SMTP in (smtplib), the inbox API out."""

from __future__ import annotations

import os
import smtplib
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StartSync, Workspace, dev_args

pytestmark = pytest.mark.e2e

SUBJECT = (
    "Grüße aus Köln — 日本語の件名 ✉️ 🎉 and a subject long enough "
    "that it has to be folded over several lines when encoded"
)
BODY = "Hello,\n.a line that starts with a dot\n..and one with two\nÜmlauts: äöü ß\n"
BLOB = bytes(range(256)) + os.urandom(4096) + bytes(range(255, -1, -1))


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Sender Ä <app@example.com>"
    msg["To"] = "you@example.com, other@example.com"
    msg["Subject"] = SUBJECT
    msg.set_content(BODY)
    msg.add_attachment(BLOB, maintype="application", subtype="x-e2e-blob", filename="blob.bin")
    return msg


def _inbox_ids(http: httpx.Client) -> list[str]:
    response = http.get("/api/v1/inbox")
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_smtp_capture_round_trip(mailgate: StartSync, workspace: Workspace) -> None:
    mg = mailgate(*dev_args(workspace), env={"MAILGATE_SMTP__MAX_MESSAGE_SIZE": "5000000"})
    assert mg.mode == "dev"
    assert mg.smtp_port is not None
    raw = _message().as_bytes(policy=policy.SMTP)

    with smtplib.SMTP("127.0.0.1", mg.smtp_port, local_hostname="client.test", timeout=10) as smtp:
        code, _ = smtp.ehlo()
        assert code == 250
        features = smtp.esmtp_features
        assert features.get("size") == "5000000"  # the configured limit, not a default
        for extension in ("8bitmime", "smtputf8", "pipelining"):
            assert extension in features, features
        assert {"PLAIN", "LOGIN"} <= set(features.get("auth", "").upper().split()), features

        smtp.user, smtp.password = "app-user", "s3cret pass!"
        code, _ = smtp.auth("LOGIN", smtp.auth_login)
        assert code == 235
        refused = smtp.sendmail("bounce@example.com", ["you@example.com", "bcc@example.com"], raw)
        assert refused == {}

    with httpx.Client(base_url=mg.web, timeout=10) as http:
        # Committed before the 250 after DATA: visible at once, no polling.
        ids = _inbox_ids(http)
        assert len(ids) == 1
        capture_id = ids[0]

        response = http.get(f"/api/v1/inbox/{capture_id}")
        assert response.status_code == 200, response.text
        event: dict[str, Any] = response.json()
        assert event["source"] == "smtp"
        assert event["authentication"] == {
            "attempted": True,
            "mechanism": "LOGIN",
            "username": "app-user",
            "password": "s3cret pass!",
        }
        assert event["envelope"]["from"] == "bounce@example.com"
        assert event["envelope"]["to"] == ["you@example.com", "bcc@example.com"]
        assert event["envelope"]["helo"] == "client.test"
        assert event["remote_addr"].startswith("127.0.0.1:")
        assert event["message"]["subject"] == SUBJECT
        assert event["message"]["from"] == "Sender Ä <app@example.com>"
        assert event["message"]["body"] == BODY  # dot-stuffing undone, UTF-8 intact
        assert event["size"] == len(raw)
        [attachment] = event["attachments"]
        assert attachment["filename"] == "blob.bin"
        assert attachment["content_type"] == "application/x-e2e-blob"
        assert attachment["size"] == len(BLOB)

        response = http.get(f"/api/v1/inbox/{capture_id}/attachments/0")
        assert response.status_code == 200
        assert response.content == BLOB
        assert response.headers["content-type"] == "application/x-e2e-blob"
        assert "blob.bin" in response.headers["content-disposition"]

        assert http.get(f"/api/v1/inbox/{capture_id}/attachments/1").status_code == 404

        response = http.get(f"/api/v1/inbox/{capture_id}/raw")
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] == "message/rfc822"
        assert response.content == raw  # exactly as received
        parsed = BytesParser(policy=policy.default).parsebytes(response.content)
        assert parsed["Subject"] == SUBJECT


def test_each_session_records_its_own_auth(mailgate: StartSync, workspace: Workspace) -> None:
    mg = mailgate(*dev_args(workspace))
    assert mg.smtp_port is not None
    sessions: list[tuple[str | None, str]] = [("PLAIN", "plain-user"), (None, ""), ("LOGIN", "u2")]
    for mechanism, user in sessions:
        with smtplib.SMTP("127.0.0.1", mg.smtp_port, timeout=10) as smtp:
            smtp.ehlo()
            if mechanism is not None:
                smtp.user, smtp.password = user, f"{user}-password"
                authobject = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
                assert smtp.auth(mechanism, authobject)[0] == 235
            msg = EmailMessage()
            msg["From"] = "app@example.com"
            msg["To"] = "you@example.com"
            msg["Subject"] = f"auth {mechanism}"
            msg.set_content("hi\n")
            smtp.send_message(msg)

    with httpx.Client(base_url=mg.web, timeout=10) as http:
        seen: dict[str, dict[str, Any]] = {}
        for capture_id in _inbox_ids(http):
            event = http.get(f"/api/v1/inbox/{capture_id}").json()
            seen[event["message"]["subject"]] = event["authentication"]
    assert seen == {
        "auth PLAIN": {
            "attempted": True,
            "mechanism": "PLAIN",
            "username": "plain-user",
            "password": "plain-user-password",
        },
        "auth None": {"attempted": False, "mechanism": None, "username": None, "password": None},
        "auth LOGIN": {
            "attempted": True,
            "mechanism": "LOGIN",
            "username": "u2",
            "password": "u2-password",
        },
    }


def test_smtputf8_envelope_and_size_limit(mailgate: StartSync, workspace: Workspace) -> None:
    mg = mailgate(*dev_args(workspace), env={"MAILGATE_SMTP__MAX_MESSAGE_SIZE": "20000"})
    assert mg.smtp_port is not None
    msg = EmailMessage(policy=policy.SMTPUTF8)
    msg["From"] = "Jörg <jörg@bücher.example>"
    msg["To"] = "山田 <yamada@例え.jp>"
    msg["Subject"] = "SMTPUTF8 ✓"
    msg.set_content("ok\n")
    with smtplib.SMTP("127.0.0.1", mg.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        refused = smtp.sendmail(
            "jörg@bücher.example", ["yamada@例え.jp"], msg.as_bytes(), mail_options=["SMTPUTF8"]
        )
        assert refused == {}
        # Declared too big: refused at MAIL, before any data is sent.
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            smtp.sendmail("app@example.com", ["you@example.com"], b"x" * 20001)
        assert declared.value.smtp_code == 552
        assert declared.value.smtp_error.startswith(b"5.3.4 ")  # RFC 3463: too big for system
        # Undeclared but too big: refused after DATA.
        assert smtp.mail("app@example.com")[0] == 250
        assert smtp.rcpt("you@example.com")[0] == 250
        code, text = smtp.data(b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 400)
        assert (code, text[:6]) == (552, b"5.3.4 "), text

    with httpx.Client(base_url=mg.web, timeout=10) as http:
        [capture_id] = _inbox_ids(http)  # only the first message was kept
        event = http.get(f"/api/v1/inbox/{capture_id}").json()
    assert event["envelope"]["from"] == "jörg@bücher.example"
    assert event["envelope"]["to"] == ["yamada@例え.jp"]
    assert event["message"]["from"] == "Jörg <jörg@bücher.example>"
    assert event["message"]["to"] == "山田 <yamada@例え.jp>"
    assert event["message"]["subject"] == "SMTPUTF8 ✓"
