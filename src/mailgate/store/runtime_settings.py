"""Settings changed at run time: one row per dotted name, its JSON value (issue 11).

What is stored is only what an operator changed; each process merges it over its
configured defaults (:mod:`mailgate.services.runtime`). :meth:`RuntimeSettingsStore.
version` is cheap enough to ask every few seconds, so a change made through one
process reaches the others sharing the database.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from mailgate.store.database import Database
from mailgate.store.schema import runtime_settings, upsert

__all__ = ["RuntimeSettingsStore", "Version"]

#: what changes when any stored setting does: (rows, the latest change)
Version = tuple[int, datetime | None]


class RuntimeSettingsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def load(self) -> dict[str, Any]:
        """Every stored setting by its dotted name."""
        c = runtime_settings.c
        async with self.db.read() as conn:
            rows = (await conn.execute(select(c.name, c.value))).all()
        return {name: value for name, value in rows}

    async def version(self) -> Version:
        c = runtime_settings.c
        async with self.db.read() as conn:
            row = (await conn.execute(select(func.count(), func.max(c.updated_at)))).one()
        return int(row[0]), row[1]

    async def save(self, values: Mapping[str, Any], now: datetime) -> None:
        """Store each setting (replacing what was stored), in one transaction."""
        if not values:
            return
        async with self.db.write() as conn:
            for name, value in values.items():
                statement = upsert(conn.dialect, runtime_settings).values(
                    name=name, value=value, updated_at=now
                )
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[runtime_settings.c.name],
                        set_={"value": value, "updated_at": now},
                    )
                )

    async def forget(self, names: Collection[str]) -> int:
        """Drop stored settings (back to the configured defaults at the next start);
        how many were stored."""
        if not names:
            return 0
        async with self.db.write() as conn:
            gone = await conn.execute(
                delete(runtime_settings).where(runtime_settings.c.name.in_(list(names)))
            )
        return int(gone.rowcount)
