"""The database goes away under a running gateway: clients hear 503 or 451, never a 500/250."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator

import pytest

from mailgate.app import Gateway, Mode
from tests.integration.conftest import api, fast_settings
from tests.postgres import postgres_cluster


@pytest.fixture
def own_postgres() -> Iterator[str]:
    """A cluster of this test's own, so stopping it harms no other test."""
    with postgres_cluster() as url:
        yield url


def _stop_cluster(url: str) -> None:
    port = url.rsplit(":", 1)[1].split("/")[0]
    found = subprocess.run(["pgrep", "-f", "--", f"-p {port} "], capture_output=True, text=True)
    pids = [int(pid) for pid in found.stdout.split()]
    assert pids, f"no postmaster on port {port}"
    for pid in pids:  # SIGQUIT: the postmaster's immediate shutdown, backends included
        os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "postmaster did not stop"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_lost_database_answers_503_and_451(own_postgres: str) -> None:
    settings = fast_settings(own_postgres)
    async with Gateway(settings, mode=Mode.DEV) as gw, api(gw) as client:
        assert (await client.get("/messages")).status_code == 200
        await asyncio.to_thread(_stop_cluster, own_postgres)

        listed = await client.get("/messages")
        assert listed.status_code == 503, listed.text
        assert listed.headers["retry-after"] == "5"
        assert "database is unavailable" in listed.json()["detail"]
        posted = await client.post(
            "/messages", json={"to": "a@example.com", "subject": "s", "text": "t"}
        )
        assert posted.status_code == 503, posted.text
        assert (await client.get("/inbox")).status_code == 503

        assert gw.smtp_address is not None
        host, port = gw.smtp_address

        def send() -> tuple[int, bytes]:
            with smtplib.SMTP(host, port, timeout=20) as smtp:
                smtp.ehlo()
                smtp.mail("a@example.com")
                smtp.rcpt("b@example.com")
                return smtp.data(b"Subject: x\r\n\r\nbody\r\n")

        code, text = await asyncio.to_thread(send)
        assert code == 451, text
