"""Conditional updates committed together, against the emulator: one document changed
since it was read costs only its own update, and each caller gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

from mailgate.sources.firestore.batching import UpdateBatcher
from tests.firestore_peer import Emulator


async def test_updates_asked_together_share_a_commit_and_a_conflict_stays_its_own(
    firestore_emulator: Emulator, firestore_client: Any
) -> None:
    mail = firestore_client.collection("mail")
    for name in ("a", "b", "c", "d"):
        await mail.document(name).set({"n": 0})
    versions = {name: (await mail.document(name).get()).update_time for name in "abcd"}
    await mail.document("b").update({"n": 1})  # changed since it was read
    await mail.document("d").delete()  # gone since it was read
    batcher = UpdateBatcher(firestore_client)
    answers = await asyncio.gather(
        *(batcher.update(f"mail/{name}", {"leased": True}, versions[name]) for name in "abcd")
    )
    assert answers == [True, False, True, False]
    docs = {name: (await mail.document(name).get()).to_dict() for name in "abcd"}
    assert docs == {"a": {"n": 0, "leased": True}, "b": {"n": 1}, "c": {"n": 0, "leased": True},
                    "d": None}  # fmt: skip
    # the refused commit, then a/c together again: no commit per document
    assert batcher.commits == 2


async def test_a_second_update_of_one_document_waits_for_the_first(
    firestore_emulator: Emulator, firestore_client: Any
) -> None:
    doc = firestore_client.document("mail/x")
    await doc.set({"n": 0})
    version = (await doc.get()).update_time
    batcher = UpdateBatcher(firestore_client)
    first, second = await asyncio.gather(
        batcher.update("mail/x", {"n": 1}, version), batcher.update("mail/x", {"n": 2}, version)
    )
    assert (first, second) == (True, False)  # the second was asked of the version before
    assert (await doc.get()).to_dict() == {"n": 1}
