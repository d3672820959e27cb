"""What a ``mail`` document can ask for, end to end (issue 8): in-process gateways against
the official Firestore emulator and real aiosmtpd upstreams.

Templates with partials; recipients by uid with one of them missing; attachments given
as content and as a URL (fetched from a real HTTP server, under the SSRF rules of the
delivery engine); a document routed through a stored account; the simple contract's
ERROR tried again up to ``max_retry_count``, counted on the document.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from google.cloud import firestore

from mailgate.app import Gateway, Mode
from mailgate.crypto import generate_key
from mailgate.errors import StoreUnavailable
from tests.accounts_peers import PASSWORD, smtp_account
from tests.content_peers import FileServer, body
from tests.firestore_peer import WRITE_RETRY, Emulator
from tests.integration.conftest import api, fast_settings
from tests.peers import Received, Upstream

Doc = dict[str, Any]
Client = firestore.AsyncClient


@contextlib.asynccontextmanager
async def _gateway(
    db_url: str, upstream: Upstream, emulator: Emulator, **settings: Any
) -> AsyncIterator[Gateway]:
    """A gateway watching ``mail`` (templates in ``templates``), polling every 0.2 s and
    sweeping every second (the emulator's listener now and then misses a write)."""
    firestore_settings = {
        "enabled": True,
        "project_id": emulator.project,
        "poll_interval": 0.2,
        "sweep_interval": 1,
        "lease_seconds": 5,
        "templates_collection": "templates",
        **settings.pop("firestore", {}),
    }
    config = fast_settings(db_url, relay_url=upstream.url, firestore=firestore_settings, **settings)
    async with Gateway(config, mode=Mode.SERVE) as gateway:
        yield gateway


async def _until(
    client: Client, path: str, done: Callable[[Doc], bool], limit: float = 20.0
) -> Doc:
    async with asyncio.timeout(limit):
        while True:
            data = (await client.document(path).get()).to_dict() or {}
            if done(data):
                return data
            await asyncio.sleep(0.05)


def _state(data: Doc) -> Any:
    return (data.get("delivery") or {}).get("state")


def _settled(data: Doc) -> bool:
    return _state(data) in ("SUCCESS", "ERROR")


def _by_subject(upstream: Upstream) -> dict[str, Received]:
    return {str(r.message["Subject"]): r for r in upstream.received}


async def _put(client: Client, docs: dict[str, Doc]) -> None:
    batch = client.batch()
    for path, data in docs.items():
        batch.set(client.document(path), data)
    await batch.commit(retry=WRITE_RETRY)


# --- templates ------------------------------------------------------------------------


TEMPLATES: dict[str, Doc] = {
    "templates/order": {
        "subject": "{{> brand}}: order {{order.id}}",
        "html": "<h1>{{> brand}}</h1><ul>{{#each order.items}}{{> line}}{{/each}}</ul>",
        "text": "{{#each order.items}}{{> line}}\n{{/each}}{{> brand}}",
    },
    "templates/brand": {
        "partial": True,
        "subject": "{{shop}}",
        "html": "{{shop}}",
        "text": "{{shop}}",
    },
    "templates/line": {
        "partial": True,
        "html": "<li>{{name}} × {{qty}}</li>",
        "text": "* {{name}} × {{qty}}",
    },
    "templates/broken": {"subject": "s", "html": "{{> nowhere}}"},
}


async def test_a_template_with_partials_is_rendered_per_part(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Client
) -> None:
    """Each part renders the partial's part of the same name; html escapes the data,
    subject and text do not (as the extension compiles them). A partial that does not
    exist is written back as ERROR naming it."""
    await _put(firestore_client, TEMPLATES)
    data = {
        "shop": "Bits & Bobs",
        "order": {"id": 42, "items": [{"name": "<Cable>", "qty": 2}, {"name": "Plug", "qty": 1}]},
    }
    async with _gateway(db_url, upstream, firestore_emulator):
        await _put(
            firestore_client,
            {
                "mail/order": {
                    "to": "buyer@example.com",
                    "template": {"name": "order", "data": data},
                },
                "mail/broken": {"to": "buyer@example.com", "template": {"name": "broken"}},
            },
        )
        sent = await _until(firestore_client, "mail/order", _settled)
        broken = await _until(firestore_client, "mail/broken", _settled)

    assert _state(sent) == "SUCCESS", sent
    [received] = upstream.received
    message = received.message
    assert message["Subject"] == "Bits & Bobs: order 42"
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None and text is not None
    assert html.get_content().strip() == (
        "<h1>Bits &amp; Bobs</h1><ul><li>&lt;Cable&gt; × 2</li><li>Plug × 1</li></ul>"
    )
    assert text.get_content().splitlines() == ["* <Cable> × 2", "* Plug × 1", "Bits & Bobs"]
    assert _state(broken) == "ERROR" and "nowhere" in broken["delivery"]["error"], broken


# --- recipients by uid ----------------------------------------------------------------


async def test_a_missing_uid_is_skipped_and_the_others_get_the_mail(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Client
) -> None:
    """As the extension does: a uid without a user document (or without an email) is
    left out and the mail goes to the rest; with nobody left, ERROR naming the uid."""
    await _put(
        firestore_client,
        {
            "users/ann": {"email": "ann@example.com"},
            "users/bob": {"email": "bob@example.com"},
            "users/nomail": {"name": "No Mail"},
        },
    )
    message = {"subject": "Hello", "text": "hi"}
    async with _gateway(db_url, upstream, firestore_emulator):
        await _put(
            firestore_client,
            {
                "mail/some": {
                    "toUids": ["ann", "ghost"],
                    "ccUids": ["bob", "nomail"],
                    "message": message,
                },
                "mail/none": {"toUids": ["ghost"], "message": {**message, "subject": "Nobody"}},
            },
        )
        some = await _until(firestore_client, "mail/some", _settled)
        none = await _until(firestore_client, "mail/none", _settled)

    assert _state(some) == "SUCCESS", some
    [received] = upstream.received
    assert sorted(received.rcpt_tos) == ["ann@example.com", "bob@example.com"]
    assert received.message["To"] == "ann@example.com"
    assert received.message["Cc"] == "bob@example.com"
    assert some["delivery"]["info"]["accepted"] == ["ann@example.com", "bob@example.com"]
    assert _state(none) == "ERROR" and "'ghost'" in none["delivery"]["error"]


# --- attachments ----------------------------------------------------------------------


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


def _attachments(received: Received) -> dict[str, tuple[str, bytes]]:
    found = {}
    for part in received.message.iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found[str(part.get_filename())] = (part.get_content_type(), payload)
    return found


async def test_attachments_from_content_and_from_a_url(
    db_url: str,
    upstream: Upstream,
    firestore_emulator: Emulator,
    firestore_client: Client,
    files: FileServer,
) -> None:
    """nodemailer's keys: ``content`` with ``encoding: base64``, ``content`` as text, and
    ``href`` fetched at send time (the server is on 127.0.0.1: allowed here as an
    operator would, ``attachments.allow_private_networks``)."""
    csv = b"sku,qty\r\nA-1,2\r\n"
    pdf = bytes(range(256))
    attachments = [
        {"filename": "order.csv", "content": base64.b64encode(csv).decode(), "encoding": "base64"},
        {
            "filename": "invoice.pdf",
            "content": base64.b64encode(pdf).decode(),
            "encoding": "base64",
            "contentType": "application/pdf",
        },
        {"filename": "note.txt", "content": "thanks — the shop"},
        {"href": files.url("/file/3000"), "filename": "catalog.bin"},
    ]
    doc = {
        "to": "buyer@example.com",
        "message": {"subject": "Files", "text": "attached", "attachments": attachments},
    }
    allowed = {"allow_private_networks": True}
    async with _gateway(db_url, upstream, firestore_emulator, attachments=allowed):
        await _put(firestore_client, {"mail/files": doc})
        data = await _until(firestore_client, "mail/files", _settled)

    assert _state(data) == "SUCCESS", data
    [received] = upstream.received
    assert _attachments(received) == {
        "order.csv": ("text/csv", csv),
        "invoice.pdf": ("application/pdf", pdf),
        "note.txt": ("text/plain", "thanks — the shop".encode()),
        "catalog.bin": ("application/octet-stream", body(3000)),
    }


async def test_a_url_attachment_on_a_private_address_is_refused_by_default(
    db_url: str,
    upstream: Upstream,
    firestore_emulator: Emulator,
    firestore_client: Client,
    files: FileServer,
) -> None:
    doc = {
        "to": "buyer@example.com",
        "message": {
            "subject": "Files",
            "text": "attached",
            "attachments": [{"href": files.url("/file/10"), "filename": "x.bin"}],
        },
    }
    async with _gateway(db_url, upstream, firestore_emulator):
        await _put(firestore_client, {"mail/ssrf": doc})
        data = await _until(firestore_client, "mail/ssrf", _settled)

    assert _state(data) == "ERROR", data
    assert "127.0.0.1 is a loopback address" in data["delivery"]["error"]
    assert upstream.received == [] and files.hosts == []  # never fetched


# --- a stored account -----------------------------------------------------------------


async def _ready_account(client: httpx.AsyncClient, account: Doc) -> None:
    """Create, test and enable an account (enable is refused until a test passed)."""
    assert (await client.post("/accounts", json=account)).status_code == 201
    tested = await client.post(f"/accounts/{account['id']}/test")
    assert tested.json()["ok"] is True, tested.text
    assert (await client.post(f"/accounts/{account['id']}/enable")).status_code == 200


async def test_a_document_naming_an_account_is_sent_through_it(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Client
) -> None:
    """``account`` routes through one of mailgate's stored accounts (the extension has a
    single SMTP connection); a document without it goes through the default relay."""
    key = generate_key()
    async with (
        Upstream(credentials={"agent": PASSWORD}) as billing,
        _gateway(db_url, upstream, firestore_emulator, secret_key=key) as gw,
        api(gw) as client,
    ):
        await _ready_account(client, smtp_account(billing, "billing"))
        await _put(
            firestore_client,
            {
                "mail/invoice": {
                    "to": "c@example.com",
                    "account": "billing",
                    "message": {"subject": "Invoice", "text": "due"},
                },
                "mail/hello": {
                    "to": "c@example.com",
                    "message": {"subject": "Hello", "text": "hi"},
                },
            },
        )
        invoice = await _until(firestore_client, "mail/invoice", _settled)
        hello = await _until(firestore_client, "mail/hello", _settled)
        message_id = invoice["mailgate"]["messageId"]
        shown = (await client.get(f"/messages/{message_id}")).json()

    assert _state(invoice) == "SUCCESS" and _state(hello) == "SUCCESS"
    assert [r.message["Subject"] for r in billing.received] == ["Invoice"]
    assert [r.message["Subject"] for r in upstream.received] == ["Hello"]
    assert billing.logins[-1] == "agent"  # the account's login, not the relay's
    assert shown["attempts"][0]["account"] == "billing"


# --- the simple contract's retries ----------------------------------------------------


async def test_a_simple_document_in_error_is_tried_again_up_to_max_retry_count(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Client
) -> None:
    """The old agent's rule: ``state == "ERROR"`` is sent again while ``retryCount`` is
    below MAX_RETRY_COUNT. Every try is refused with 550, so each one ends ERROR with the
    reply and one more count, and after the third nothing is tried again."""
    upstream.data_replies.extend(["550 5.7.1 message refused"] * 10)
    retries = {"max_retry_count": 3}
    async with _gateway(db_url, upstream, firestore_emulator, firestore=retries):
        await _put(
            firestore_client,
            {
                "mail/refused": {
                    "to": "x@example.com",
                    "subject": "Refused",
                    "message": {"html": "<p>no</p>"},
                    "delivery": None,
                }
            },
        )
        data = await _until(firestore_client, "mail/refused", lambda d: d.get("retryCount") == 3)
        await asyncio.sleep(1.0)  # five more polls: none may try it again
        after = (await firestore_client.document("mail/refused").get()).to_dict() or {}

    assert upstream.transactions == 3 and upstream.received == []  # one count per try
    assert after == data  # left alone: final
    assert data["state"] == "ERROR" and data["retryCount"] == 3
    assert data["delivery"]["success"] is False
    assert data["delivery"]["error"] == "550 5.7.1 message refused"
    assert data["mailgate"]["final"] is True


# --- nothing missed -------------------------------------------------------------------


async def test_polling_reaches_documents_past_a_full_page_of_ones_needing_nothing(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Client
) -> None:
    """The simple contract's ``state == "ERROR"`` matches every document that ended in
    ERROR for good (its tries used up), for ever. A poll reads 100 documents per query:
    with 100 such documents before it, one still to be tried again must be reached by a
    later page, not left behind them (no listener here, so only polling can find it)."""
    used_up = {
        "state": "ERROR",
        "retryCount": 3,
        "subject": "Old",
        "to": "old@example.com",
        "message": {"html": "<p>old</p>"},
        "delivery": {"success": False, "error": "550 gone"},
    }
    await _put(firestore_client, {f"mail/dead-{i:03}": used_up for i in range(100)})
    await _put(
        firestore_client, {"mail/retry-me": {**used_up, "retryCount": 1, "subject": "Again"}}
    )
    polling = {"listen": False, "max_retry_count": 3}
    async with _gateway(db_url, upstream, firestore_emulator, firestore=polling):
        data = await _until(
            firestore_client, "mail/retry-me", lambda d: d.get("state") == "SENT", limit=10
        )
    assert [r.message["Subject"] for r in upstream.received] == ["Again"]
    assert data["delivery"]["success"] is True


async def test_a_document_only_the_listener_finds_is_tried_again_after_a_failure(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Client
) -> None:
    """A new Trigger Email document has no ``delivery``: no query can select it, only the
    listener sees it, once. When queueing it fails for a passing reason (the store was
    busy), it must be tried again, as the log line says, not wait for a restart."""
    async with _gateway(db_url, upstream, firestore_emulator) as gw:
        source = gw.firestore
        assert source is not None
        submit, failures = source.submit, list[int]()

        async def busy_once(*args: Any, **kwargs: Any) -> Any:
            if not failures:
                failures.append(1)
                raise StoreUnavailable("database is locked")
            return await submit(*args, **kwargs)

        source.submit = busy_once
        await _put(
            firestore_client,
            {"mail/new": {"to": "n@example.com", "message": {"subject": "New", "text": "t"}}},
        )
        data = await _until(firestore_client, "mail/new", _settled, limit=10)
    assert failures and _state(data) == "SUCCESS"
    assert [r.message["Subject"] for r in upstream.received] == ["New"]
