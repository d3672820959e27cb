"""Hot INSERTs compiled once and run through SQLite's own cursor.

Capturing a 1 KB message spent half its CPU in SQLAlchemy's statement execution: the
cache-key walk, a new execution context and result for every statement, each value
through the execution context's processors (docs/benchmarks.md). A :class:`Prepared`
statement is compiled once per dialect; each row's values go through the same bind
processors SQLAlchemy would use (the column types': sanitising, JSON, UTC datetimes),
so the stored bytes are the same, and the rows go to ``sqlite3``'s ``executemany``.

Only on SQLite through the ``sqlite3`` driver (the database thread and
:meth:`~mailgate.store.database.Database.small_transaction`); anywhere else, PostgreSQL
included, :meth:`Prepared.run` is ``conn.execute`` as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Insert
from sqlalchemy.engine import Dialect

__all__ = ["Prepared", "sqlite_driver"]

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    names: tuple[str, ...]  #: each positional parameter's bind name, in order
    processors: tuple[_Processor, ...]
    literals: Mapping[str, Any]  #: values the statement itself holds (``literal()``)


class Prepared:
    """One INSERT (``insert(table)`` given every column a row has, or an
    ``insert().from_select()`` with bind parameters) for many rows."""

    def __init__(self, statement: Insert, column_keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys is not None else None
        self._plans: dict[str, _Plan] = {}

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute for each of ``rows`` (bind name → value)."""
        if not rows:
            return
        driver = sqlite_driver(conn)
        if driver is None:
            conn.execute(self.statement, list(rows))
            return
        plan = self._plan(conn.dialect)
        driver.executemany(plan.sql, [self._values(plan, row) for row in rows])

    def insert_ids(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert ``rows`` one by one and return their new row ids (a table with an
        ``INTEGER PRIMARY KEY``); only on SQLite (elsewhere ask with ``RETURNING``)."""
        driver = sqlite_driver(conn)
        assert driver is not None, "insert_ids is for sqlite3 connections"
        plan = self._plan(conn.dialect)
        cursor = driver.cursor()
        ids = []
        for row in rows:
            cursor.execute(plan.sql, self._values(plan, row))
            assert cursor.lastrowid is not None
            ids.append(cursor.lastrowid)
        cursor.close()
        return ids

    @staticmethod
    def _values(plan: _Plan, row: Mapping[str, Any]) -> tuple[Any, ...]:
        if plan.literals:
            literals = plan.literals
            row = {n: row[n] if n in row else literals[n] for n in plan.names}
        values = map(row.__getitem__, plan.names)
        return tuple(
            [v if p is None else p(v) for p, v in zip(plan.processors, values, strict=True)]
        )

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.column_keys)
            names = tuple(getattr(compiled, "positiontup", None) or ())
            binds = getattr(compiled, "binds", {})
            processors = tuple(binds[n].type.dialect_impl(dialect).bind_processor(dialect)
                               for n in names)  # fmt: skip
            literals = {n: binds[n].value for n in names if not binds[n].required}
            plan = self._plans[dialect.name] = _Plan(compiled.string, names, processors, literals)
        return plan


def sqlite_driver(conn: Connection) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under ``conn``, or None (another driver or engine)."""
    driver = conn.connection.driver_connection
    return driver if isinstance(driver, sqlite3.Connection) else None
