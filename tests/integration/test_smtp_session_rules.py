"""Capture-mode session rules (issue 9): a smuggling attempt stays one message and is
flagged, ``max_connections`` turns the next client away with 421 at the greeting, and
``smtp.auth = verify`` takes only the configured users (535 for the rest)."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from typing import Any

import pytest

from mailgate.app import Mode
from tests.integration.conftest import GatewayFactory, api


def _session(address: tuple[str, int], commands: list[bytes]) -> list[str]:
    """Send each command raw (smtplib would fix the line endings) and read its reply;
    the replies, greeting first."""
    with socket.create_connection(address, timeout=10) as sock:
        reader = sock.makefile("rb")

        def reply() -> str:
            lines = [reader.readline().decode()]
            while lines[-1][3:4] == "-":  # a multi-line reply goes on
                lines.append(reader.readline().decode())
            return "".join(lines)

        replies = [reply()]
        for command in commands:
            sock.sendall(command)
            replies.append(reply())
        return replies


async def test_a_bare_lf_smuggling_attempt_is_one_message_and_flagged(
    start_gateway: GatewayFactory,
) -> None:
    smuggled = (
        b"Subject: first\r\n\r\nhello\n.\nMAIL FROM:<evil@example.com>\n"
        b"RCPT TO:<victim@example.com>\nDATA\nSubject: smuggled\n\nsecond\r\n.\r\n"
    )
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        replies = await asyncio.to_thread(_session, gw.smtp_address, [
            b"EHLO client.test\r\n", b"MAIL FROM:<app@example.com>\r\n",
            b"RCPT TO:<you@example.com>\r\n", b"DATA\r\n", smuggled, b"QUIT\r\n",
        ])  # fmt: skip
        items = (await client.get("/inbox")).json()["items"]
        [event] = [(await client.get(f"/inbox/{m['id']}")).json() for m in items]
    assert replies[-2].startswith("250 2.0.0"), replies
    assert event["envelope"]["from"] == "app@example.com"
    assert event["envelope"]["to"] == ["you@example.com"]
    assert event["message"]["subject"] == "first"
    [problem] = event["message"]["problems"]
    assert "7 bare LF" in problem  # hello, ".", MAIL, RCPT, DATA, Subject, blank line


async def test_over_max_connections_the_next_client_hears_421(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV, smtp={"max_connections": 2}) as gw:
        assert gw.smtp_address is not None
        host, port = gw.smtp_address

        def crowd() -> tuple[int, bytes | str, int]:
            first = smtplib.SMTP(host, port, timeout=10)
            second = smtplib.SMTP(host, port, timeout=10)
            try:
                with pytest.raises(smtplib.SMTPConnectError) as refused:
                    smtplib.SMTP(host, port, timeout=10)
            finally:
                first.quit()
            with smtplib.SMTP(host, port, timeout=10) as again:  # a place is free again
                code, _ = again.noop()
            second.quit()
            return refused.value.smtp_code, refused.value.smtp_error, code

        code, text, later = await asyncio.to_thread(crowd)
    assert code == 421 and b"Too many connections" in text
    assert later == 250


@pytest.mark.parametrize(
    ("user", "password", "accepted"),
    [
        ("app", "right horse", True),
        ("app", "wrong", False),
        ("nobody", "right horse", False),
        ("blank", "", True),  # a user configured with an empty password
        ("blank", "x", False),
    ],
)
async def test_verify_takes_only_the_configured_users(
    start_gateway: GatewayFactory, user: str, password: str, accepted: bool
) -> None:
    settings: dict[str, Any] = {"auth": "verify", "users": {"app": "right horse", "blank": ""}}
    async with start_gateway(Mode.DEV, smtp=settings) as gw, api(gw) as client:
        assert gw.smtp_address is not None

        def login() -> int:
            with smtplib.SMTP(*gw.smtp_address, timeout=10) as smtp:  # type: ignore[misc]
                smtp.ehlo()
                smtp.user, smtp.password = user, password
                try:  # PLAIN: login() would try CRAM-MD5, then PLAIN, then LOGIN
                    code, _ = smtp.auth("PLAIN", smtp.auth_plain)
                except smtplib.SMTPAuthenticationError as exc:
                    return exc.smtp_code
                smtp.sendmail("app@example.com", ["you@example.com"], b"Subject: in\r\n\r\nx\r\n")
                return code

        code = await asyncio.to_thread(login)
        items = (await client.get("/inbox")).json()["items"]
    assert code == (235 if accepted else 535)
    assert len(items) == (1 if accepted else 0)


def test_verify_without_users_is_refused() -> None:
    from pydantic import ValidationError

    from mailgate.settings import SmtpSettings

    with pytest.raises(ValidationError, match=r"needs smtp\.users"):
        SmtpSettings(auth="verify")
