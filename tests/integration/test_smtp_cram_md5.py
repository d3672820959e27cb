"""AUTH CRAM-MD5 (RFC 2195) on the capture server (issue 9): offered, taken and recorded
with its challenge and response (the password never crosses), checked with
``smtp.auth = verify``; not offered in submission, which keeps only password hashes."""

from __future__ import annotations

import asyncio
import base64
import hmac
import smtplib
from typing import Any

import pytest

from mailgate.app import Gateway, Mode
from tests.integration.conftest import GatewayFactory, api

RAW = b"From: app@example.com\r\nTo: you@example.com\r\nSubject: cram\r\n\r\nbody\r\n"


def _address(gw: Gateway) -> tuple[str, int]:
    assert gw.smtp_address is not None
    return gw.smtp_address


async def test_smtplib_login_picks_cram_md5_and_the_capture_records_no_password(
    start_gateway: GatewayFactory,
) -> None:
    def send(address: tuple[str, int]) -> tuple[list[str], int]:
        with smtplib.SMTP(*address, timeout=10) as smtp:
            smtp.ehlo()
            offered = smtp.esmtp_features["auth"].split()
            code, _ = smtp.login("app-user", "s3cret")  # smtplib tries CRAM-MD5 first
            smtp.sendmail("app@example.com", ["you@example.com"], RAW)
            return offered, code

    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        offered, code = await asyncio.to_thread(send, _address(gw))
        [summary] = (await client.get("/inbox")).json()["items"]
        auth = (await client.get(f"/inbox/{summary['id']}")).json()["authentication"]
    assert {"PLAIN", "LOGIN", "CRAM-MD5"} <= set(offered) and code == 235
    assert {k: v for k, v in auth.items() if k not in ("challenge", "response")} == {
        "attempted": True,
        "mechanism": "CRAM-MD5",
        "username": "app-user",
        "password": None,
    }
    assert auth["challenge"].startswith("<") and auth["challenge"].endswith(">")
    digest = hmac.new(b"s3cret", auth["challenge"].encode(), "md5").hexdigest()
    assert auth["response"] == digest  # what the client sent, made with its password


@pytest.mark.parametrize(
    ("user", "password", "code"),
    [("app", "right horse", 235), ("app", "wrong", 535), ("nobody", "right horse", 535)],
)
async def test_verify_checks_the_digest(
    start_gateway: GatewayFactory, user: str, password: str, code: int
) -> None:
    settings: dict[str, Any] = {"auth": "verify", "users": {"app": "right horse"}}

    def login(address: tuple[str, int]) -> int:
        with smtplib.SMTP(*address, timeout=10) as smtp:
            smtp.ehlo()
            smtp.user, smtp.password = user, password
            try:
                got, _ = smtp.auth("CRAM-MD5", smtp.auth_cram_md5)
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code
            smtp.sendmail("app@example.com", ["you@example.com"], RAW)
            return got

    async with start_gateway(Mode.DEV, smtp=settings) as gw, api(gw) as client:
        assert await asyncio.to_thread(login, _address(gw)) == code
        items = (await client.get("/inbox")).json()["items"]
    assert len(items) == (1 if code == 235 else 0)


async def test_malformed_answers_get_501_and_the_session_goes_on(
    start_gateway: GatewayFactory,
) -> None:
    """No initial response (the server speaks first, RFC 4954 §4), an answer that is not
    base64, one without the space between username and digest, and ``*`` (abort)."""

    def attempts(address: tuple[str, int]) -> list[int]:
        with smtplib.SMTP(*address, timeout=10) as smtp:
            smtp.ehlo()
            codes = [smtp.docmd("AUTH", "CRAM-MD5 " + base64.b64encode(b"a b").decode())[0]]
            for answer in ("!!!", base64.b64encode(b"nospace").decode(), "*"):
                assert smtp.docmd("AUTH", "CRAM-MD5")[0] == 334
                codes.append(smtp.docmd(answer)[0])
            codes.append(smtp.noop()[0])
            return codes

    async with start_gateway(Mode.DEV) as gw:
        assert await asyncio.to_thread(attempts, _address(gw)) == [501, 501, 501, 501, 250]


async def test_submission_does_not_offer_it(start_gateway: GatewayFactory) -> None:
    def offer(address: tuple[str, int]) -> tuple[list[str], int]:
        with smtplib.SMTP(*address, timeout=10) as smtp:  # loopback: AUTH without TLS
            smtp.ehlo()
            return smtp.esmtp_features["auth"].split(), smtp.docmd("AUTH", "CRAM-MD5")[0]

    async with start_gateway(smtp={"mode": "submission"}) as gw:
        offered, code = await asyncio.to_thread(offer, _address(gw))
    assert "CRAM-MD5" not in offered and {"PLAIN", "LOGIN"} <= set(offered)
    assert code == 504
