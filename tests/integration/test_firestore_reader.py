"""DocumentReader against the official Firestore emulator: users by uid, templates with
partials, the template cache, and Firestore failures told apart from bad documents."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import firestore as firestore_module

from mailgate.errors import ConfigError
from mailgate.sources.firestore.contracts import Contract, ContractOptions, InvalidDocument
from mailgate.sources.firestore.reader import DocumentReader, FirestoreUnavailable
from tests.builders import parse_submitted
from tests.firestore_peer import WRITE_RETRY, Emulator, firestore, firestore_emulator

#: pytest finds fixtures by name in the test's module (until tests/conftest.py imports them)
FIXTURES = (firestore, firestore_emulator)

Client = firestore_module.AsyncClient
OPTIONS = ContractOptions(default_from="app@example.com", templates_collection="templates")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _put(client: Client, docs: dict[str, dict[str, Any]]) -> None:
    batch = client.batch()
    for path, data in docs.items():
        batch.set(client.document(path), data)
    await batch.commit(retry=WRITE_RETRY)


async def test_users_are_read_by_uid_with_only_their_email(firestore: Client) -> None:
    await _put(firestore, {"users/u1": {"email": "one@example.com", "name": "One"},
                           "users/u2": {"name": "no email"}})  # fmt: skip
    users = await DocumentReader(firestore, OPTIONS).users(["u1", "u2", "u3", "bad/id", ""])
    assert users == {"u1": {"email": "one@example.com"}, "u2": {}}


async def test_many_uids_are_read_in_batches(firestore: Client) -> None:
    for start in range(0, 650, 325):
        await _put(firestore, {f"people/u{i}": {"email": f"u{i}@example.com"}
                               for i in range(start, start + 325)})  # fmt: skip
    reader = DocumentReader(firestore, ContractOptions(users_collection="people"))
    users = await reader.users(f"u{i}" for i in range(700))
    assert len(users) == 650 and users["u649"] == {"email": "u649@example.com"}


async def test_a_template_with_a_partial_and_uids_becomes_a_message(firestore: Client) -> None:
    await _put(
        firestore,
        {
            "users/ann": {"email": "ann@example.com"},
            "users/bob": {"email": "bob@example.com"},
            "templates/welcome": {
                "subject": "Welcome, {{name}}",
                "html": "<p>Hello {{name}}</p>{{> footer}}",
                "text": "Hello {{name}}\n{{> footer}}",
            },
            "templates/footer": {
                "partial": True,
                "html": "<small>{{company}}</small>",
                "text": "-- {{company}}",
            },
        },
    )
    data = {"name": "Ann & co", "company": "<ACME>"}
    doc = {"toUids": ["ann", "ghost"], "ccUids": ["bob"], "cc": "carol@example.com",
           "template": {"name": "welcome", "data": data}}  # fmt: skip
    item = await DocumentReader(firestore, OPTIONS).message(doc, Contract.EXTENSION, "mail/m1")
    assert item["to"] == ["ann@example.com"]
    assert item["cc"] == ["carol@example.com", "bob@example.com"]
    assert item["subject"] == "Welcome, Ann & co"
    assert item["html"] == "<p>Hello Ann &amp; co</p><small>&lt;ACME&gt;</small>"
    assert item["text"] == "Hello Ann & co\n-- <ACME>"
    assert item["metadata"]["firestore"]["missingUids"] == ["ghost"]
    message = parse_submitted(item)
    assert message.envelope_recipients == (
        "ann@example.com",
        "carol@example.com",
        "bob@example.com",
    )


async def test_a_simple_document_needs_no_reads(firestore: Client) -> None:
    doc = {"to": "a@example.com", "subject": "Hi", "message": {"html": "<p>x</p>"}}
    reader = DocumentReader(firestore, OPTIONS)
    item = await reader.message(doc, Contract.SIMPLE, "mail/s1")
    assert item["html"] == "<p>x</p>" and item["from"] == "app@example.com"
    assert reader._cache is None


async def test_a_template_written_after_the_cache_was_filled_is_found(firestore: Client) -> None:
    await _put(firestore, {"templates/a": {"subject": "A", "text": "a"}})
    reader = DocumentReader(firestore, OPTIONS, clock=Clock())
    first = await reader.message(_templated("a"), Contract.EXTENSION, "mail/1")
    await _put(firestore, {"templates/b": {"subject": "B", "text": "b"}})
    second = await reader.message(_templated("b"), Contract.EXTENSION, "mail/2")
    assert (first["subject"], second["subject"]) == ("A", "B")


async def test_an_edited_template_is_used_once_the_cache_expires(firestore: Client) -> None:
    await _put(firestore, {"templates/a": {"subject": "old", "text": "x"}})
    clock = Clock()
    reader = DocumentReader(firestore, OPTIONS, cache_seconds=10, clock=clock)
    assert (await reader.message(_templated("a"), Contract.EXTENSION, "m"))["subject"] == "old"
    await _put(firestore, {"templates/a": {"subject": "new", "text": "x"}})
    clock.now += 9
    assert (await reader.message(_templated("a"), Contract.EXTENSION, "m"))["subject"] == "old"
    clock.now += 2
    assert (await reader.message(_templated("a"), Contract.EXTENSION, "m"))["subject"] == "new"


async def test_a_missing_template_or_a_partial_by_name_is_invalid(firestore: Client) -> None:
    await _put(firestore, {"templates/footer": {"partial": True, "html": "f"}})
    reader = DocumentReader(firestore, OPTIONS)
    for name in ("nope", "footer"):
        with pytest.raises(InvalidDocument, match=f"no template '{name}' in 'templates'"):
            await reader.message(_templated(name), Contract.EXTENSION, "mail/x")


async def test_without_a_templates_collection_a_template_is_invalid(firestore: Client) -> None:
    reader = DocumentReader(firestore, ContractOptions())
    assert await reader.templates(_templated("a")) == {}
    with pytest.raises(InvalidDocument, match="no templates collection is configured"):
        await reader.message(_templated("a"), Contract.EXTENSION, "mail/x")


async def test_an_unreachable_firestore_is_unavailable_not_an_invalid_document(
    firestore_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = Emulator(firestore_emulator.java, firestore_emulator.jar, firestore_emulator.workdir)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)  # a port nothing listens on
    client = Client(project="demo-test")
    try:
        reader = DocumentReader(client, OPTIONS, timeout=1.0)
        with pytest.raises(FirestoreUnavailable, match="reading 'users'"):
            await reader.users(["u1"])
        with pytest.raises(FirestoreUnavailable, match="reading 'templates'"):
            await reader.message(_templated("a"), Contract.EXTENSION, "mail/x")
    finally:
        await client._firestore_api.transport.close()


async def test_collection_names_that_are_not_collections_are_a_config_error(
    firestore: Client,
) -> None:
    with pytest.raises(ConfigError, match="firestore"):
        DocumentReader(firestore, ContractOptions(users_collection="users/u1"))


async def test_the_emulator_restarts_on_its_port_and_forgets(
    firestore_emulator: Emulator, firestore: Client
) -> None:
    await _put(firestore, {"users/u1": {"email": "one@example.com"}})
    port = firestore_emulator.port
    await firestore_emulator.restart()
    assert firestore_emulator.port == port
    reader = DocumentReader(firestore, OPTIONS)
    assert await reader.users(["u1"]) == {}
    await _put(firestore, {"users/u1": {"email": "again@example.com"}})
    assert await reader.users(["u1"]) == {"u1": {"email": "again@example.com"}}


def _templated(name: str) -> dict[str, Any]:
    return {"to": "a@example.com", "template": {"name": name, "data": {}}}
