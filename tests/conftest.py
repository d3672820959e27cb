"""Fixtures shared by the integration and e2e suites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.firestore_peer import firestore, firestore_client, firestore_emulator  # noqa: F401
from tests.peers import Upstream
from tests.postgres import postgres_cluster


@pytest.fixture(scope="session", autouse=True)
def _own_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """mailgate's data directory (the dev key, the dev TLS certificate) is the session's
    own, never the developer's ``~/.local/share/mailgate``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        yield


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream() as up:
        yield up


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mailgate.sqlite3'}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One throwaway PostgreSQL cluster for the session; tests reset what they use."""
    with postgres_cluster() as url:
        yield url
