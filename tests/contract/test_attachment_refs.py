"""URL and path attachments keep their reference through the queue, on both engines."""

from __future__ import annotations

from mailgate.model import Attachment
from mailgate.store import Database, QueueStore
from tests.builders import NOW, make_message


async def test_url_and_path_attachments_come_back_from_a_lease(database: Database) -> None:
    queue = QueueStore(database)
    files = (
        Attachment("a.txt", "text/plain", b"inline\x00bytes"),
        Attachment("b.pdf", "application/pdf", b"", url="https://files.example/b.pdf?x=1"),
        Attachment("c.png", "image/png", b"", "logo", path="docs:img/c.png"),
    )
    message = make_message(attachments=files, html="<img src=cid:logo>")
    await queue.enqueue([message], NOW)
    [job] = await queue.lease("w1", NOW, 1, 60)
    assert job.message.attachments == files
    assert [a.deferred for a in job.message.attachments] == [False, True, True]
