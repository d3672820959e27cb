"""``QueueStore.client_refs`` on both engines: the client's key and metadata of each
message asked for, by id, in one read; unknown ids are left out."""

from __future__ import annotations

from mailgate.store import Database, QueueStore
from tests.builders import NOW, make_message


async def test_client_refs_are_read_by_message_id(database: Database) -> None:
    queue = QueueStore(database)
    keyed = make_message(key="order-42", metadata={"order": 42, "tags": ["a"]})
    plain = make_message()
    other = make_message(key="order-43")
    await queue.enqueue([keyed, plain, other], NOW)

    refs = await queue.client_refs([keyed.id, plain.id, "no-such-message"])
    assert refs == {keyed.id: ("order-42", {"order": 42, "tags": ["a"]}), plain.id: (None, {})}
    assert await queue.client_refs([]) == {}
