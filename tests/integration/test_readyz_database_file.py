"""``/readyz`` turns 503 naming the store when the SQLite file is made unreadable while a
gateway runs (issue 7).

The tests run as root, so ``chmod`` would not stop a read: the file is taken away or
spoilt instead, the ways it happens to an operator (a cleanup job, a restore over the
wrong path, a disk error). The connections the gateway already holds keep reading the
old file through their descriptors and page caches, so a query through the pool alone
still answers; the check has to look at the file at the configured path (it does:
``Database.check``). A file made unreadable by its mode is checked end to end, with a
gateway stripped of root's power to ignore modes: ``tests/e2e/test_readyz_permissions.py``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import GatewayFactory


def replaced_by_text(path: Path) -> None:
    spare = path.with_name("spare")
    spare.write_bytes(b"not a database\n" * 300)
    spare.replace(path)


def replaced_by_a_directory(path: Path) -> None:
    path.rename(path.with_name("moved-away"))
    path.mkdir()


def removed(path: Path) -> None:
    path.unlink()


def overwritten_in_place(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(b"\0" * os.path.getsize(path))


def truncated(path: Path) -> None:
    os.truncate(path, 0)


@pytest.mark.parametrize(
    "spoil", [replaced_by_text, replaced_by_a_directory, removed, overwritten_in_place, truncated]
)
async def test_readyz_is_503_naming_the_store_when_the_database_file_is_unreadable(
    start_gateway: GatewayFactory, db_url: str, spoil: Callable[[Path], None]
) -> None:
    path = Path(db_url.removeprefix("sqlite:///"))
    async with start_gateway() as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=30) as client:
        assert (await client.get("/readyz")).json()["checks"]["store"] == "ok"
        spoil(path)
        not_ready = await client.get("/readyz")
        assert (await client.get("/healthz")).status_code == 200  # alive all the same
    assert not_ready.status_code == 503
    body = not_ready.json()
    assert body["status"] == "not ready"
    assert body["checks"]["store"] != "ok"
    assert body["checks"]["dispatcher"] == "ok"  # the store is the part named
