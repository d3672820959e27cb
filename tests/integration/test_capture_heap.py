"""After big messages the SMTP server gives the C heap's free memory back (glibc's
``malloc_trim``), once none has ended for a second: fifty 10 MB messages left `mailgate
dev` at 140-310 MB with nothing to do, now 128-138 MB (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mailgate import heap
from mailgate.app import Mode
from mailgate.heap import HeapTrim
from mailgate.ingest.chunking import HELD_WHOLE
from tests.integration.conftest import GatewayFactory, send_raw
from tests.integration.test_capture_spool import _message, _tempfile

SMALL = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: small\r\n\r\nbody\r\n"


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each trim the process's HeapTrim makes, which waits a hundredth of a second here."""
    made: list[str] = []
    monkeypatch.setattr(heap, "TRIM", HeapTrim(after=0.01))
    monkeypatch.setattr(heap, "trim", lambda: made.append("trim"))
    return made


@pytest.mark.parametrize("mode", ["memory", "tempfile"])
async def test_a_big_message_is_followed_by_a_trim_a_small_one_is_not(
    start_gateway: GatewayFactory, trims: list[str], tmp_path: Path, mode: str
) -> None:
    big = _message("big")
    assert len(big) > HELD_WHOLE > len(SMALL)
    smtp = _tempfile(tmp_path) if mode == "tempfile" else {}
    async with start_gateway(Mode.DEV, smtp=smtp) as gw:
        await send_raw(gw, SMALL)
        await asyncio.sleep(0.1)
        assert trims == []
        await send_raw(gw, big)
        for _ in range(200):
            if trims:
                break
            await asyncio.sleep(0.01)
    assert trims == ["trim"]


async def test_big_messages_ending_together_make_one_trim(trims: list[str]) -> None:
    for _ in range(5):
        heap.TRIM.soon()
    await asyncio.sleep(0.2)
    assert trims == ["trim"]
    heap.TRIM.soon()  # the next one, after that trim
    await asyncio.sleep(0.2)
    assert trims == ["trim", "trim"]


def test_glibc_s_malloc_trim_is_found() -> None:
    """This machine's C library is glibc (Debian): the trim is not a silent no-op here."""
    if os.uname().sysname != "Linux" or not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.fail("the suite runs on Linux with glibc")
    assert heap._malloc_trim() is not None
    heap.trim()
