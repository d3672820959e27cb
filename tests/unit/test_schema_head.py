"""The store's head revision is known without Alembic, and an up-to-date store is opened
without importing it (about 10 MiB of an idle process's memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from mailgate.store.database import SCHEMA_HEAD, alembic_config

OPEN_TWICE = """
import asyncio, sys
from mailgate.store import Database

async def main(url):
    for _ in range(2):
        db = Database(url)
        await db.migrate()
        print("check", await db.check(), "alembic" in sys.modules)
        await db.aclose()
        sys.modules.pop("alembic", None)  # the second open must not need it again

asyncio.run(main(sys.argv[1]))
"""


def test_schema_head_is_alembics_head() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == SCHEMA_HEAD


def test_an_up_to_date_store_is_opened_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    done = subprocess.run(
        [sys.executable, "-c", OPEN_TWICE, url], capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[:2] == ["check None True", "check None False"]
