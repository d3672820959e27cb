"""``QueueStore.list`` filters on both engines, as the admin UI's queue page uses them:
every tenant or one, by state and account, and a text that is an id or key, or a piece
of the subject, sender or a To address in any case; a cursor walks the matches newest
first. ``get`` and ``content`` read one message of any tenant."""

from __future__ import annotations

import pytest

from mailgate.errors import NotFound
from mailgate.model import State
from mailgate.store import Database, QueueStore
from tests.builders import NOW, make_message


async def test_filters_narrow_the_list_across_tenants(database: Database) -> None:
    queue = QueueStore(database)
    invoice = make_message(tenant="t1", account="billing", subject="Your Invoice 42")
    welcome = make_message(tenant="t2", subject="Welcome", to=("Zoe@Example.org",))
    odd = make_message(tenant="t1", subject="100% off_now", key="order-7", sender="x@shop.test")
    await queue.enqueue([invoice, welcome, odd], NOW)
    await queue.cancel(welcome.id, "t2", NOW)

    async def ids(tenant: str | None = None, **kw: object) -> list[str]:
        records, _ = await queue.list(tenant, **kw)  # type: ignore[arg-type]
        return [r.id for r in records]

    assert await ids() == [odd.id, welcome.id, invoice.id]
    assert await ids("t1") == [odd.id, invoice.id]
    assert await ids(state=State.CANCELLED) == [welcome.id]
    assert await ids(account="billing") == [invoice.id]
    assert await ids(text="invoice") == [invoice.id]  # any case
    assert await ids(text="zoe@example") == [welcome.id]  # a To address
    assert await ids(text="SHOP.test") == [odd.id]  # the sender
    assert await ids(text="order-7") == [odd.id]  # the key
    assert await ids(text=welcome.id) == [welcome.id]
    assert await ids(text="0% o") == [odd.id]  # % is a character, not a wildcard
    assert await ids(text="f_n") == [odd.id]
    assert await ids(text="f%n") == []
    assert await ids(text="e_o") == []  # _ is not "any character"
    assert await ids("t2", text="invoice") == []
    records, _ = await queue.list(None, text="welcome")
    assert (records[0].tenant, records[0].source) == ("t2", "rest")


async def test_a_nul_or_lone_surrogate_in_the_text_finds_what_is_stored_in_its_place(
    database: Database,
) -> None:
    """The text is cleaned as stored text is (U+FFFD): PostgreSQL refused a NUL bound
    raw beside the cast To JSON, SQLite ended the pattern at it and listed every
    message, and a lone surrogate failed the query on both."""
    queue = QueueStore(database)
    odd = make_message(subject="odd\x00one", sender="s\ud800@example.org")
    await queue.enqueue([make_message(subject="plain"), odd], NOW)
    for text in ("\x00", "odd\x00one", "\ud800", "s\ud800@"):
        records, _ = await queue.list(None, text=text)
        assert [r.id for r in records] == [odd.id], ascii(text)


async def test_a_non_ascii_recipient_is_found(database: Database) -> None:
    """To is JSON text with non-ASCII escaped (``zo\\u00e9``): the text as typed found
    nothing."""
    queue = QueueStore(database)
    zoe = make_message(to=("zoé@example.org",))
    await queue.enqueue([make_message(), zoe], NOW)
    for text in ("zoé", "zoé@example.org"):
        records, _ = await queue.list(None, text=text)
        assert [r.id for r in records] == [zoe.id], text


async def test_a_cursor_pages_the_matches_newest_first(database: Database) -> None:
    queue = QueueStore(database)
    batch = [make_message(subject=f"page {i}" if i % 2 else "other") for i in range(7)]
    await queue.enqueue(batch, NOW)
    wanted = [m.id for m in reversed(batch) if m.subject.startswith("page")]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        records, cursor = await queue.list(None, text="page", limit=2, cursor=cursor)
        seen += [r.id for r in records]
        if cursor is None:
            break
    assert seen == wanted


async def test_get_and_content_of_any_tenant(database: Database) -> None:
    queue = QueueStore(database)
    message = make_message(tenant="t9", text="plain", html="<p>rich</p>")
    await queue.enqueue([message], NOW)
    assert (await queue.get(message.id, None)).tenant == "t9"
    assert await queue.content(message.id) == ("plain", "<p>rich</p>", None)
    with pytest.raises(NotFound):
        await queue.get(message.id, "t1")
