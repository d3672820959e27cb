"""Prepared INSERTs (store/prepared.py) store what SQLAlchemy's own execution stores:
the same values, the same SQLite types, byte for byte, including what the column
types do to them (NUL sanitised, JSON, UTC datetimes without a zone)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, insert

from mailgate.store.prepared import Prepared, sqlite_driver
from mailgate.store.schema import events, inbox, inbox_raw, metadata


def _inbox_row(i: int) -> dict[str, Any]:
    return {
        "id": f"id-{i}",
        "tenant": "t\x00nul",
        "source": "smtp",
        "received_at": datetime(2026, 12, 6, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=2))),
        "remote_addr": None,
        "helo": "h\ud800lone",
        "mail_from": "a@example.com",
        "rcpt_to": ["b@example.com", "ü@exämple.com"],
        "auth": {"mechanism": "PLAIN", "username": "u\x00", "password": None},
        "subject": "Grüße ✓",
        "from_header": "",
        "to_header": "",
        "headers": {"Subject": ["a", "b"], "X-N": "1"},
        "text_body": None,
        "html_body": "<p>x</p>",
        "attachments": [],
        "size": 1234,
        "box": "default",
        "read": False,
        "tags": ["x"],
        "message_id": None,
    }


def _dump(path: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as plain:
        columns = [r[1] for r in plain.execute(f"PRAGMA table_info({table})")]
        select = ", ".join(f"typeof({c}), {c}" for c in columns)
        return plain.execute(f"SELECT {select} FROM {table} ORDER BY rowid").fetchall()


@pytest.mark.parametrize("table", ["inbox", "inbox_raw", "events"])
def test_prepared_rows_are_stored_as_sqlalchemy_stores_them(tmp_path: Path, table: str) -> None:
    rows: list[dict[str, Any]]
    if table == "inbox":
        rows, statement = [_inbox_row(1), _inbox_row(2)], insert(inbox)
    elif table == "inbox_raw":
        rows = [{"id": f"id-{i}", "raw": b"\x00\xff raw"} for i in range(2)]
        statement = insert(inbox_raw)
    else:
        at = datetime(2026, 12, 6, 5, 6, 7, tzinfo=UTC)
        rows = [{"tenant": "default", "message_id": None, "inbox_id": "x", "source": "smtp",
                 "kind": "inbox.received", "payload": {"n": i, "s": "\x00"}, "created_at": at}
                for i in range(3)]  # fmt: skip
        statement = insert(events)
    dumps = []
    for name in ("sqlalchemy", "prepared"):
        path = tmp_path / f"{name}.sqlite3"
        engine = create_engine(f"sqlite:///{path}")
        metadata.create_all(engine)
        with engine.begin() as conn:
            if name == "sqlalchemy":
                conn.execute(statement, rows)
            else:
                assert sqlite_driver(conn) is not None
                Prepared(statement, list(rows[0])).run(conn, rows)
        engine.dispose()
        dumps.append(_dump(path, table))
    assert dumps[0] == dumps[1]
    assert len(dumps[0]) == len(rows)


def test_insert_ids_are_the_new_rows_ids(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'ids.sqlite3'}")
    metadata.create_all(engine)
    at = datetime(2026, 12, 6, tzinfo=UTC)
    row: dict[str, Any] = {
        "tenant": "default", "message_id": "m", "inbox_id": None, "source": "rest",
        "kind": "message.queued", "payload": {}, "created_at": at,
    }  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(events), [row] * 5)
        conn.exec_driver_sql("DELETE FROM events WHERE id = 5")  # a gap at the top
        prepared = Prepared(insert(events), list(row))
        ids = prepared.insert_ids(conn, [row | {"message_id": f"n{i}"} for i in range(3)])
        stored: dict[int, str] = dict(
            conn.exec_driver_sql("SELECT id, message_id FROM events").fetchall()
        )
    assert [stored[i] for i in ids] == ["n0", "n1", "n2"]


def test_elsewhere_it_is_plain_execute(tmp_path: Path) -> None:
    """Not a ``sqlite3`` connection (PostgreSQL): SQLAlchemy executes it."""
    seen: list[int] = []

    class Spy:
        def __init__(self, conn: Connection) -> None:
            self.conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

        @property
        def connection(self) -> Any:
            class NotSqlite:
                driver_connection = object()

            return NotSqlite()

        def execute(self, statement: Any, rows: Any) -> Any:
            seen.append(len(rows))
            return self.conn.execute(statement, rows)

    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        Prepared(insert(inbox), list(_inbox_row(1))).run(Spy(conn), [_inbox_row(1)])  # type: ignore[arg-type]
    assert seen == [1]
