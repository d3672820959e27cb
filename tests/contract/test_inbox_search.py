"""Several inboxes, read/unread, tags and Mailpit's search syntax in the inbox store
(issue 10), on SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import JSON, Connection, LargeBinary, column, insert, select, table

from mailgate.errors import NotFound
from mailgate.ids import new_id
from mailgate.inbox.search import parse_query
from mailgate.store import CapturedRecord, Database, InboxStore
from mailgate.store.database import alembic_config
from mailgate.store.inbox import BoxCount
from mailgate.store.inbox_bulk import InboxBulk
from mailgate.store.schema import UTCDateTime, inbox
from tests.builders import NOW
from tests.contract.conftest import _reset

BASE = CapturedRecord(
    id="", tenant="default", source="smtp", received_at=NOW, remote_addr=None, helo=None,
    mail_from="app@example.com", rcpt_to=["user@example.com"], auth=None, subject="",
    from_header="App <app@example.com>", to_header="user@example.com", headers={},
    text=None, html=None, attachments=[], size=100,
)  # fmt: skip


def _record(subject: str, **fields: Any) -> CapturedRecord:
    return dataclasses.replace(BASE, id=new_id(), subject=subject, **fields)


async def _add(store: InboxStore, *records: CapturedRecord) -> None:
    for record in records:  # one by one: ids are in the order of capture
        await store.add(record, b"raw")


async def _found(store: InboxStore, query: str, *, box: str | None = None) -> list[str]:
    """Subjects of what ``query`` finds, oldest first."""
    page, _ = await store.list("default", box=box, query=parse_query(query), limit=500)
    return sorted(r.subject for r in page)


# --- several inboxes -------------------------------------------------------------


async def test_each_inbox_lists_counts_and_deletes_only_its_own(database: Database) -> None:
    store = InboxStore(database)
    a1, a2 = _record("a1", box="alice"), _record("a2", box="alice")
    b1 = _record("b1", box="bob")
    other_tenant = _record("t2", box="alice", tenant="t2")
    await _add(store, a1, b1, a2, other_tenant)

    page, _ = await store.list("default", box="alice")
    assert [r.subject for r in page] == ["a2", "a1"]  # newest first
    assert [r.subject for r in (await store.list("default", box="bob"))[0]] == ["b1"]
    assert len((await store.list("default"))[0]) == 3  # no box: all of the tenant's
    await store.get(a1.id, "default", mark_read=True)
    assert await store.boxes("default") == (BoxCount("alice", 2, 1), BoxCount("bob", 1, 1))

    with pytest.raises(NotFound):  # another inbox's message is not found through this one
        await store.delete(b1.id, "default", box="alice")
    with pytest.raises(NotFound):
        await store.get(b1.id, "default", box="alice")
    assert await store.clear("default", box="alice") == 2
    assert [r.subject for r in (await store.list("default"))[0]] == ["b1"]
    assert [r.subject for r in (await store.list("t2"))[0]] == ["t2"]  # same name, other tenant


async def test_max_messages_is_kept_per_inbox(database: Database) -> None:
    store = InboxStore(database, max_messages=2)
    await _add(store, *(_record(f"a{i}", box="alice") for i in range(4)))
    await _add(store, _record("b0", box="bob"))
    await _add(store, _record("a4", box="alice"))
    # alice's burst never pushed bob's one message out, and alice keeps her newest two
    assert [r.subject for r in (await store.list("default", box="alice"))[0]] == ["a4", "a3"]
    assert [r.subject for r in (await store.list("default", box="bob"))[0]] == ["b0"]


# --- read / unread and tags ------------------------------------------------------


async def test_read_and_tags_round_trip_and_are_searchable(database: Database) -> None:
    store = InboxStore(database)
    first, second = _record("first", tags=["signup"]), _record("second")
    await _add(store, first, second)
    assert (await store.get(first.id, "default")).read is False  # a plain get reads nothing
    opened = await store.get(first.id, "default", mark_read=True)
    assert opened.read and (await store.get(first.id, "default")).read

    assert await _found(store, "is:read") == ["first"]
    assert await _found(store, "is:unread") == ["second"]
    assert await _found(store, "-is:read") == ["second"]
    assert await _found(store, "!is:unread") == ["first"]

    updated = await store.update(second.id, "default", read=True, tags=["Smoke Test", "qaX1"])
    assert (updated.read, updated.tags) == (True, ["Smoke Test", "qaX1"])
    assert await _found(store, "is:unread") == []
    await store.update(first.id, "default", read=False)  # tags left out: kept
    assert (await store.get(first.id, "default")).tags == ["signup"]
    assert await _found(store, 'tag:"smoke test"') == ["second"]  # whole name, any case
    assert await _found(store, "tag:smoke") == []
    assert await _found(store, "tag:QAx1") == ["second"]
    assert await _found(store, "tag:qa_1") == []  # a LIKE wildcard is literal
    assert await _found(store, "-tag:signup") == ["second"]
    assert await _found(store, "is:tagged") == ["first", "second"]
    await store.update(first.id, "default", tags=[])
    assert await _found(store, "-is:tagged") == ["first"]
    with pytest.raises(NotFound):
        await store.update(first.id, "default", box="elsewhere", read=True)


# --- search ------------------------------------------------------------------------


@pytest.fixture
async def corpus(database: Database) -> InboxStore:
    store = InboxStore(database)
    await _add(
        store,
        _record(
            "Welcome aboard",
            from_header="Shop <shop@example.com>",
            mail_from="bounces@mailer.example",
            to_header="Jane Doe <jane@example.com>",
            rcpt_to=["jane@example.com", "carol@example.com", "hidden@audit.example"],
            headers={"CC": "Carol <carol@example.com>", "Reply-To": "help@example.com"},
            text="Your sign-in link is below",
            message_id="welcome-1@shop.example",
            received_at=NOW - timedelta(days=3),
            size=5000,
        ),
        _record(
            "Grüße aus Köln – 你好",
            text=None,
            html="<p>Ihr Code lautet <b>482913</b></p>",
            attachments=[{"index": 0, "filename": "logo.png", "inline": True}],
            received_at=NOW - timedelta(days=1),
        ),
        _record(
            "Your 50% discount on a_b",
            text="Save 100_000 points",
            attachments=[
                {"index": 0, "filename": "logo.png", "inline": True},
                {"index": 1, "filename": "r.pdf", "inline": False},
            ],
            headers={"Message-ID": "<ignored-here>"},  # the column is what is searched
            message_id="discount@shop.example",
            received_at=NOW,
            size=90_000,
        ),
    )
    return store


WELCOME, GRUSS, DISCOUNT = "Welcome aboard", "Grüße aus Köln – 你好", "Your 50% discount on a_b"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [WELCOME, GRUSS, DISCOUNT]),
        # plain words: subject, addresses, text and html bodies; every word must match
        ("welcome", [WELCOME]),
        ("WELCOME ABOARD", [WELCOME]),
        ("sign-in", [WELCOME]),  # text body
        ("482913", [GRUSS]),  # html body
        ("carol", [WELCOME]),  # a Cc address
        ("hidden@audit", [WELCOME]),  # an envelope-only (Bcc) recipient
        ("bounces@mailer", [WELCOME]),  # the envelope sender
        ("welcome discount", []),
        # phrases match as one string; negation of words and phrases
        ('"sign-in link"', [WELCOME]),
        ('"link sign-in"', []),
        ('-"sign-in link"', [GRUSS, DISCOUNT]),
        ("-welcome", [GRUSS, DISCOUNT]),
        ("!welcome", [GRUSS, DISCOUNT]),
        ('"is:read"', []),  # a quoted filter is a phrase
        # non-ASCII, stored decoded
        ("Köln", [GRUSS]),
        ("subject:你好", [GRUSS]),
        ('subject:"Grüße aus"', [GRUSS]),
        # LIKE wildcards match themselves
        ("50%", [DISCOUNT]),
        ("%", [DISCOUNT]),
        ("a_b", [DISCOUNT]),
        ("100_000", [DISCOUNT]),
        ("5_%", []),
        ("_", [DISCOUNT]),
        # address fields
        ("from:shop@example.com", [WELCOME]),
        ("from:Shop", [WELCOME]),
        ("from:bounces@mailer.example", [WELCOME]),  # envelope sender
        ("-from:shop", [GRUSS, DISCOUNT]),
        ("to:jane", [WELCOME]),
        ('to:"Jane Doe"', [WELCOME]),
        ("to:carol@example.com", [WELCOME]),  # Cc (header spelled CC)
        ("to:hidden@audit.example", [WELCOME]),  # Bcc-only: only in the envelope
        ("-to:hidden", [GRUSS, DISCOUNT]),
        ("cc:carol", [WELCOME]),
        ("cc:jane", []),
        ("bcc:hidden@audit.example", [WELCOME]),
        ("bcc:jane", []),  # named in To: not a Bcc
        ("reply-to:help@", [WELCOME]),
        ("addressed:help@example.com", [WELCOME]),
        ("addressed:user@example.com", [GRUSS, DISCOUNT]),
        ("subject:welcome", [WELCOME]),
        ("subject:link", []),  # only in the body
        ("-subject:welcome", [GRUSS, DISCOUNT]),
        ("message-id:welcome-1@shop.example", [WELCOME]),
        ("message-id:<discount@shop.example>", [DISCOUNT]),
        ("message-id:ignored", []),
        ("-message-id:welcome", [GRUSS, DISCOUNT]),  # a NULL Message-ID is "not welcome"
        # attachments: has:attachment is a part not shown inline, as in Mailpit
        ("has:attachment", [DISCOUNT]),
        ("has:attachments", [DISCOUNT]),
        ("-has:attachment", [WELCOME, GRUSS]),
        ("has:inline", [GRUSS, DISCOUNT]),
        # dates and sizes
        ("after:2026-11-20", [GRUSS, DISCOUNT]),
        ("after:2026/11/20", [GRUSS, DISCOUNT]),
        ("after:11/20/2026", [GRUSS, DISCOUNT]),  # US order, as Mailpit reads it
        ('after:"2026-11-21 11:00"', [DISCOUNT]),
        ("after:2026-11-21T11:00:00+00:00", [DISCOUNT]),
        ("before:2026-11-20", [WELCOME]),
        ("-before:2026-11-20", [GRUSS, DISCOUNT]),
        ("after:2026-11-19 before:2026-11-21", [GRUSS]),
        ("larger:4kb", [WELCOME, DISCOUNT]),
        ("smaller:1kb", [GRUSS]),
        ("-larger:50k", [WELCOME, GRUSS]),
        # past what the size column holds (2**31 - 1, PostgreSQL's INTEGER), or 64 bits:
        # none is larger, all are smaller (bound, they were out of range: a 500)
        ("larger:2147483646", []),
        ("larger:2147483647", []),
        ("larger:2048mb", []),
        ("-larger:2048mb", [WELCOME, GRUSS, DISCOUNT]),
        ("smaller:2147483648", [WELCOME, GRUSS, DISCOUNT]),
        ("smaller:99999999999999999999", [WELCOME, GRUSS, DISCOUNT]),
        ("-smaller:99999999999999999999", []),
        ("larger:" + "9" * 400, []),
        # terms combine
        ("subject:your has:attachment -is:read", [DISCOUNT]),
    ],
)
async def test_search_syntax(corpus: InboxStore, query: str, expected: list[str]) -> None:
    assert await _found(corpus, query) == sorted(expected)


async def test_nul_and_lone_surrogates_search_what_is_stored_in_their_place(
    database: Database,
) -> None:
    """A NUL or a lone surrogate in a search is cleaned as stored text is (U+FFFD), in
    every field. Bound raw, PostgreSQL refused a NUL compared with a header read from
    the ``headers`` JSON (``q=%00``, ``cc:`` ``to:`` ``bcc:`` ``reply-to:``
    ``addressed:``: a 500), and SQLite ended the pattern at the NUL, so ``q=%00``
    matched every message and ``DELETE ?q=%00`` emptied the inbox."""
    store = InboxStore(database)
    await _add(
        store,
        _record("clean"),
        _record(
            "odd\x00one",
            rcpt_to=["user@example.com", "env\x00rcpt@example.com"],
            headers={"Cc": "nul\x00cc@example.com", "Reply-To": "r\ud800@example.com"},
        ),
    )
    queries = ["\x00", "cc:\x00", "to:\x00", "addressed:\x00", "bcc:env\x00rcpt", "\ud800",
               "reply-to:\ud800", "subject:odd\x00one"]  # fmt: skip
    for query in queries:
        assert await _found(store, query) == ["odd\ufffdone"], ascii(query)  # as stored
        assert await _found(store, f"-{query}") == ["clean"], ascii(query)
    assert await store.clear("default", query=parse_query("x\x00y")) == 0
    assert await store.clear("default", query=parse_query("cc:\x00")) == 1
    assert [r.subject for r in (await store.list("default"))[0]] == ["clean"]


async def test_renaming_or_removing_a_tag_named_with_nul_changes_nothing(
    database: Database,
) -> None:
    """``DELETE /tags/%00`` and ``PUT /tags/x%00y``: the name is cleaned as stored text
    is, so it names no tag (tags keep none of those characters); bound raw, PostgreSQL
    refused it (a 500)."""
    store, bulk = InboxStore(database), InboxBulk(database)
    tagged = _record("tagged", tags=["keep", "x y"])
    await _add(store, tagged)
    assert await bulk.retag("default", "\x00", None) == 0
    assert await bulk.retag("default", "x\x00y", "z") == 0
    assert await bulk.retag("default", "x\ud800y", "z") == 0
    assert (await store.get(tagged.id, "default")).tags == ["keep", "x y"]
    assert await bulk.retag("default", "X Y", "z") == 1  # a real name still works
    assert (await store.get(tagged.id, "default")).tags == ["keep", "z"]


async def test_delete_by_search_takes_only_the_matches_of_one_inbox(database: Database) -> None:
    store = InboxStore(database)
    await _add(
        store,
        _record("reset password", box="alice"),
        _record("reset password", box="bob"),
        _record("welcome", box="alice"),
    )
    assert await store.clear("default", box="alice", query=parse_query("subject:reset")) == 1
    left = [(r.box, r.subject) for r in (await store.list("default"))[0]]
    assert sorted(left) == [("alice", "welcome"), ("bob", "reset password")]


async def test_old_captures_get_the_defaults_and_their_message_id(store_url: str) -> None:
    """Migration 0008 on a store holding mail captured before it."""
    db = Database(store_url)
    await _reset(db)
    try:
        async with db.write() as conn:
            await conn.run_sync(_upgrade_to, "0007")
            await conn.execute(
                insert(INBOX_0007),
                [{"id": "01900000", "tenant": "default", "source": "smtp", "received_at": NOW,
                  "mail_from": "a@example.com", "rcpt_to": [], "subject": "old",
                  "from_header": "", "to_header": "", "attachments": [], "size": 1,
                  "raw": b"x", "headers": {"Message-Id": " <old-1@example.com> "}}],
            )  # fmt: skip
        await db.migrate()
        old = await InboxStore(db).get("01900000", "default")
        assert (old.box, old.read, old.tags, old.message_id) == (
            "default", False, [], "old-1@example.com"
        )  # fmt: skip
        assert await InboxStore(db).raw("01900000", "default") == b"x"  # 0011 moved it
        async with db.read() as conn:
            assert (await conn.execute(select(inbox.c.box))).scalar_one() == "default"
    finally:
        await db.aclose()


def _upgrade_to(conn: Connection, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


#: the columns of ``inbox`` at revision 0007
INBOX_0007 = table(
    "inbox", column("id"), column("tenant"), column("source"),
    column("received_at", UTCDateTime), column("mail_from"), column("rcpt_to", JSON),
    column("subject"), column("from_header"), column("to_header"), column("headers", JSON),
    column("attachments", JSON), column("size"), column("raw", LargeBinary),
)  # fmt: skip
