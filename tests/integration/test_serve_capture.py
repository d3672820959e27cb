"""``serve`` runs the capture server only when asked (issue 9): ``smtp.mode = capture``
keeps what arrives over SMTP in the inbox, as ``dev`` does; without ``smtp.mode`` serve
listens for no SMTP at all."""

from __future__ import annotations

import asyncio
import smtplib
from typing import Any

import httpx

from mailgate.app import Gateway, Mode
from tests.integration.conftest import GatewayFactory, api

RAW = b"From: app@example.com\r\nTo: you@example.com\r\nSubject: served\r\n\r\nbody\r\n"


async def _readiness(gw: Gateway) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as client:
        checks: dict[str, Any] = (await client.get("/readyz")).json()["checks"]
        return checks


def _send(address: tuple[str, int]) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(*address, timeout=10) as smtp:
        return smtp.sendmail("app@example.com", ["you@example.com"], RAW)


async def test_serve_with_smtp_mode_capture_captures_into_the_inbox(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.SERVE, smtp={"mode": "capture"}) as gw, api(gw) as client:
        assert gw.mode is Mode.SERVE and gw.smtp_mode == "capture"
        assert gw.smtp_address is not None
        assert await asyncio.to_thread(_send, gw.smtp_address) == {}
        [item] = (await client.get("/inbox")).json()["items"]
        messages = (await client.get("/messages")).json()["items"]
        checks = await _readiness(gw)
    assert item["subject"] == "served" and item["source"] == "smtp"
    assert item["envelope"] == {"from": "app@example.com", "to": ["you@example.com"]}
    assert messages == []  # captured, not queued for delivery
    assert checks["smtp"] == "ok"


async def test_serve_without_smtp_mode_starts_no_smtp_server(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.SERVE) as gw:
        assert gw.smtp_mode is None and gw.smtp_address is None
        checks = await _readiness(gw)
    assert "smtp" not in checks and checks["store"] == "ok"
