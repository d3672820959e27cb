"""The Firestore ``mail`` collection end to end (issue 8), against the official emulator
and a real aiosmtpd upstream: both document contracts, outcomes written back (SENT,
SUCCESS, ERROR with the reply, RETRY then SUCCESS), validation errors on the document,
polling at run time, the listener surviving an emulator restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from google.cloud import firestore

from mailgate.app import Gateway, Mode
from tests.firestore_peer import WRITE_RETRY, Emulator
from tests.integration.conftest import api, fast_settings, wait_for_state
from tests.peers import Upstream

Doc = dict[str, Any]


def _settings(db_url: str, upstream: Upstream, emulator: Emulator, **firestore_: Any) -> Any:
    return fast_settings(
        db_url,
        relay_url=upstream.url,
        firestore={
            "enabled": True,
            "project_id": emulator.project,
            "poll_interval": 0.5,
            "lease_seconds": 5,
            **firestore_,
        },
    )


@contextlib.asynccontextmanager
async def _gateway(
    db_url: str, upstream: Upstream, emulator: Emulator, **firestore_: Any
) -> AsyncIterator[Gateway]:
    async with Gateway(_settings(db_url, upstream, emulator, **firestore_), mode=Mode.SERVE) as gw:
        yield gw


async def _doc_until(
    client: firestore.AsyncClient, path: str, done: Callable[[Doc], bool], limit: float = 20.0
) -> Doc:
    async with asyncio.timeout(limit):
        while True:
            snap = await client.document(path).get()
            data = snap.to_dict() or {}
            if done(data):
                return data
            await asyncio.sleep(0.1)


def _delivery(data: Doc) -> Doc:
    delivery = data.get("delivery") or {}
    assert isinstance(delivery, dict)
    return delivery


async def test_a_simple_document_is_sent_and_marked_sent(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    async with _gateway(db_url, upstream, firestore_emulator, contract="simple"):
        ref = firestore_client.collection("mail").document("welcome-1")
        await ref.set({"to": ["a@example.com", "b@example.com"], "subject": "Welcome",
                       "message": {"html": "<p>Hello</p>"}, "delivery": None})  # fmt: skip
        data = await _doc_until(firestore_client, "mail/welcome-1",
                                lambda d: d.get("state") == "SENT")  # fmt: skip
    [received] = upstream.received
    assert sorted(received.rcpt_tos) == ["a@example.com", "b@example.com"]
    assert received.message["Subject"] == "Welcome"
    assert data["delivery"]["success"] is True and data["delivery"]["error"] is None
    assert data["delivery"]["timestamp"] is not None
    assert data["mailgate"]["final"] is True


async def test_an_extension_document_gets_success_with_nodemailer_info(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    async with _gateway(db_url, upstream, firestore_emulator, ttl_expire_type="day"):
        await (
            firestore_client.collection("mail")
            .document("ext-1")
            .set(
                {
                    "to": "c@example.com",
                    "message": {"subject": "Ext", "text": "plain", "html": "<b>h</b>"},
                }
            )
        )
        data = await _doc_until(firestore_client, "mail/ext-1",
                                lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip
    delivery = data["delivery"]
    assert delivery["attempts"] == 1 and delivery["error"] is None
    assert delivery["info"]["accepted"] == ["c@example.com"]
    assert delivery["info"]["rejected"] == []
    assert delivery["info"]["response"].startswith("250")
    [received] = upstream.received
    assert delivery["info"]["messageId"] == received.message["Message-ID"]
    assert delivery["startTime"] is not None and delivery["endTime"] is not None
    assert delivery["expireAt"] > delivery["endTime"]  # ttl_expire_type: a day later


async def test_an_invalid_document_is_marked_error_with_the_reason(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    async with _gateway(db_url, upstream, firestore_emulator):
        mail = firestore_client.collection("mail")
        await mail.document("bad-to").set(
            {"to": "not an address", "message": {"subject": "x", "text": "y"}}
        )
        await mail.document("neither").set({"hello": "world"})
        bad = await _doc_until(firestore_client, "mail/bad-to",
                               lambda d: _delivery(d).get("state") == "ERROR")  # fmt: skip
        neither = await _doc_until(firestore_client, "mail/neither",
                                   lambda d: _delivery(d).get("state") == "ERROR")  # fmt: skip
    assert "to" in bad["delivery"]["error"]
    assert "contract" in neither["delivery"]["error"]
    assert upstream.received == []


async def test_550_is_error_with_the_reply_and_451_is_retried_to_success(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    upstream.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    upstream.data_replies.append("451 4.3.0 try again later")
    async with _gateway(db_url, upstream, firestore_emulator):
        mail = firestore_client.collection("mail")
        await mail.document("retry").set(
            {"to": "ok@example.com", "message": {"subject": "r", "text": "t"}}
        )
        retried = await _doc_until(firestore_client, "mail/retry",
                                   lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip
        await mail.document("gone").set(
            {"to": "gone@example.com", "message": {"subject": "g", "text": "t"}}
        )
        gone = await _doc_until(firestore_client, "mail/gone",
                                lambda d: _delivery(d).get("state") == "ERROR")  # fmt: skip
    assert retried["delivery"]["attempts"] == 2
    assert "550" in gone["delivery"]["error"] and "no such user" in gone["delivery"]["error"]
    assert gone["delivery"]["info"]["rejected"] == ["gone@example.com"]


async def test_polling_finds_documents_without_the_listener_and_can_be_run_now(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    hourly = {"listen": False, "poll_interval": 3600, "contract": "simple"}
    async with _gateway(db_url, upstream, firestore_emulator, **hourly) as gw, api(gw) as client:
        async with asyncio.timeout(20):  # the poll at start-up is over before the write
            while (await client.get("/stats")).json()["firestore"]["last_poll_at"] is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await (
            firestore_client.collection("mail")
            .document("p1")
            .set(
                {
                    "to": "p@example.com",
                    "subject": "Polled",
                    "message": {"html": "<p>x</p>"},
                    "delivery": None,
                }
            )
        )
        await asyncio.sleep(0.5)
        assert upstream.received == []  # no listener, and the next poll is an hour away
        polled = await client.post("/poll")
        assert polled.status_code == 200 and polled.json()["queued"] == 1
        await _doc_until(firestore_client, "mail/p1", lambda d: d.get("state") == "SENT")
        changed = await client.patch("/settings", json={"poll_interval": 0.2})
        assert changed.json()["poll_interval"] == 0.2
        assert changed.json()["runtime"]["firestore.poll_interval"] == 0.2
        await asyncio.sleep(0.5)  # the old hour-long wait ends at the next poll…
        await client.post("/poll")
        await (
            firestore_client.collection("mail")
            .document("p2")
            .set(
                {
                    "to": "p@example.com",
                    "subject": "Polled 2",
                    "message": {"html": "<p>x</p>"},
                    "delivery": None,
                }
            )
        )
        await _doc_until(firestore_client, "mail/p2", lambda d: d.get("state") == "SENT", 5)
        stats = (await client.get("/stats")).json()["firestore"]
    assert stats["stream"] == "off" and stats["poll_interval"] == 0.2
    assert stats["documents_queued"] == 2 and stats["last_poll_at"] is not None


async def test_a_full_page_that_queued_mail_is_followed_by_the_next_page_at_once(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    """A poll reads 100 documents a query; 150 waiting are all sent after one poll, not
    100 now and 50 an hour later."""
    batch = firestore_client.batch()
    for i in range(150):
        batch.set(firestore_client.document(f"mail/p{i:03}"),
                  {"to": "p@example.com", "message": {"subject": f"p{i}", "text": "t"},
                   "delivery": {"state": "PENDING"}})  # fmt: skip
    await batch.commit(retry=WRITE_RETRY)
    hourly = {"listen": False, "poll_interval": 3600, "sweep_interval": 0}
    async with _gateway(db_url, upstream, firestore_emulator, **hourly):
        async with asyncio.timeout(30):
            while len(upstream.received) < 150:  # noqa: ASYNC110 (the upstream's list)
                await asyncio.sleep(0.1)
    assert len({str(r.message["Subject"]) for r in upstream.received}) == 150


async def test_the_sweep_finds_new_documents_no_query_can_select(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    """Without a listener, extension documents with no ``delivery`` field are found by the
    sweep, page by page (100 documents a page) past documents that need nothing."""
    done = {"to": "old@example.com", "message": {"subject": "old", "text": "t"},
            "delivery": {"state": "SUCCESS"}}  # fmt: skip
    new = {"to": "new@example.com", "message": {"subject": "new", "text": "t"}}
    batch = firestore_client.batch()
    for i in range(230):
        batch.set(firestore_client.document(f"mail/d{i:03}"), done)
    for name in ("a0", "d099x", "d150x", "zz"):  # first page, second, third, last
        batch.set(firestore_client.document(f"mail/{name}"), {**new, "id": name})
    await batch.commit(retry=WRITE_RETRY)
    sweeping = {"listen": False, "poll_interval": 0.1, "sweep_interval": 0.5}
    async with _gateway(db_url, upstream, firestore_emulator, **sweeping) as gw, api(gw) as c:
        for name in ("a0", "d099x", "d150x", "zz"):
            await _doc_until(firestore_client, f"mail/{name}",
                             lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip
        stats = (await c.get("/stats")).json()["firestore"]
    assert sorted(r.message["To"] for r in upstream.received) == ["new@example.com"] * 4
    assert stats["documents_queued"] == 4 and stats["stream"] == "off"
    old = await firestore_client.document("mail/d000").get()
    assert old.to_dict()["delivery"] == {"state": "SUCCESS"}  # needed nothing, left alone


async def test_the_listener_subscribes_again_after_the_emulator_restarts(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    every_second = {"poll_interval": 1, "sweep_interval": 1}
    async with _gateway(db_url, upstream, firestore_emulator, **every_second) as gw:
        assert gw.firestore is not None
        mail = firestore_client.collection("mail")
        await mail.document("before").set(
            {"to": "x@example.com", "message": {"subject": "b", "text": "t"}}
        )
        await _doc_until(firestore_client, "mail/before",
                         lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip
        await firestore_emulator.restart()  # the emulator forgets everything
        async with asyncio.timeout(90):  # the library backs off while the JVM starts
            while gw.firestore.stats.stream_restarts < 1:  # noqa: ASYNC110 (a counter)
                await asyncio.sleep(0.1)
        # found by the resumed stream, or else by the sweep: nothing is missed
        await mail.document("after").set(
            {"to": "y@example.com", "message": {"subject": "a", "text": "t"}}
        )
        await _doc_until(firestore_client, "mail/after",
                         lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip


async def test_a_document_is_sent_once_however_often_it_is_read(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    async with (
        _gateway(db_url, upstream, firestore_emulator, poll_interval=0.05) as gw,
        api(gw) as c,
    ):
        mail = firestore_client.collection("mail")
        for i in range(20):
            await mail.document(f"d{i}").set(
                {"to": f"r{i}@example.com", "message": {"subject": f"s{i}", "text": "t"}}
            )
        for _ in range(5):
            await c.post("/poll")  # the listener, the poll loop and these all read them
        for i in range(20):
            await _doc_until(firestore_client, f"mail/d{i}",
                             lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip
        await asyncio.sleep(0.5)
    subjects = sorted(r.message["Subject"] for r in upstream.received)
    assert subjects == sorted(f"s{i}" for i in range(20))


async def test_an_outcome_not_yet_written_back_is_written_after_a_restart_once(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    ref = firestore_client.collection("mail").document("crash")
    async with _gateway(db_url, upstream, firestore_emulator) as first:
        assert first.firestore_writeback is not None
        await first.firestore_writeback.stop()  # as if it died before writing back
        await ref.set({"to": "z@example.com", "message": {"subject": "c", "text": "t"}})
        await upstream.wait_for(1)
        await asyncio.sleep(0.5)
        data = (await ref.get()).to_dict() or {}
        assert _delivery(data)["state"] == "PROCESSING"  # sent, not yet reported
    async with _gateway(db_url, upstream, firestore_emulator):
        done = await _doc_until(firestore_client, "mail/crash",
                                lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip
    version = (await ref.get()).update_time
    async with _gateway(db_url, upstream, firestore_emulator):
        await asyncio.sleep(1.0)
    assert (await ref.get()).update_time == version  # written once: nothing more to do
    assert done["delivery"]["attempts"] == 1 and len(upstream.received) == 1


async def test_log_lines_name_the_document_and_recipients_never_the_content(
    db_url: str,
    upstream: Upstream,
    firestore_emulator: Emulator,
    firestore_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    doc = {"to": ["p@example.com", "q@example.com"], "subject": "Secret subject",
           "message": {"html": "<p>private words</p>"}, "delivery": None}  # fmt: skip
    async with _gateway(db_url, upstream, firestore_emulator, contract="simple"):
        await firestore_client.document("mail/logged").set(doc)
        await _doc_until(firestore_client, "mail/logged", lambda d: d.get("state") == "SENT")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("mailgate")]
    [queued] = [line for line in lines if "queued as message" in line]
    assert "mail/logged" in queued and "p@example.com, q@example.com" in queued
    assert not [line for line in lines if "Secret subject" in line or "private words" in line]


async def _found(ref: Any) -> tuple[str, Doc, Any]:
    """The document as read, as the source is handed it: path, data, version."""
    snap = await ref.get()
    return snap.reference.path, snap.to_dict() or {}, snap.update_time


def _deferred_once(db_url: str, upstream: Upstream, emulator: Emulator) -> Any:
    """Settings for a race run by hand (no listener, no poll) whose message is deferred
    (451) on its first try and tried again a second later: until then it can be
    withdrawn."""
    upstream.data_replies.append("451 4.3.0 try again later")
    quiet = {"listen": False, "poll_interval": 3600, "sweep_interval": 0}
    settings = _settings(db_url, upstream, emulator, **quiet)
    retry = settings.retry.model_copy(update={"initial_delay": 1.0})
    return settings.model_copy(update={"retry": retry})


async def test_a_lease_lost_to_a_gateway_with_the_same_message_keeps_the_message(
    db_url: str,
    upstream: Upstream,
    firestore_emulator: Emulator,
    firestore_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two gateways on one store read the same version of a document: both queue its
    message under one key (the first queues it, the second finds it queued) and both try
    to lease the document. When the second wins the lease, the first must not withdraw
    the message: it is the one the winner's lease names (withdrawn, the document would
    be stranded, never SUCCESS; seen once in CI with two listening gateways). The first
    try is deferred (451) so that the message can still be withdrawn when the race ends."""
    settings = _deferred_once(db_url, upstream, firestore_emulator)
    async with (
        Gateway(settings, mode=Mode.SERVE) as first,
        Gateway(settings, mode=Mode.SERVE) as second,
        api(first) as c,
    ):
        a, b = first.firestore, second.firestore
        assert a is not None and b is not None
        ref = firestore_client.collection("mail").document("raced")
        await ref.set({"to": "r@example.com", "message": {"subject": "raced", "text": "t"}})
        found = await _found(ref)
        lease = a._lease

        async def lease_after_the_other(*args: Any) -> bool:
            await wait_for_state(c, args[-1], "deferred")  # tried once: it can be withdrawn
            # ``a`` queued the message; ``b`` finds it queued and leases the document first
            assert await b._consider_many([found]) == ["queued"]
            return await lease(*args)

        monkeypatch.setattr(a, "_lease", lease_after_the_other)
        assert await a._consider_many([found]) == ["skipped"]
        assert (a.stats.leases_lost, b.stats.documents_queued) == (1, 1)
        ended = ("SUCCESS", "ERROR")
        done = await _doc_until(firestore_client, "mail/raced",
                                lambda d: _delivery(d).get("state") in ended)  # fmt: skip
    assert _delivery(done)["state"] == "SUCCESS", done
    assert [r.message["Subject"] for r in upstream.received] == ["raced"]


async def test_a_lease_lost_to_a_change_of_the_document_withdraws_the_message(
    db_url: str,
    upstream: Upstream,
    firestore_emulator: Emulator,
    firestore_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The document changed between its read and its lease (its author rewrote it): the
    message queued for the old version is withdrawn, and the new version is sent once."""
    async with (
        Gateway(_deferred_once(db_url, upstream, firestore_emulator), mode=Mode.SERVE) as gw,
        api(gw) as c,
    ):
        source = gw.firestore
        assert source is not None
        ref = firestore_client.collection("mail").document("edited")
        await ref.set({"to": "r@example.com", "message": {"subject": "first", "text": "t"}})
        found = await _found(ref)
        lease = source._lease
        withdrawn: list[str] = []

        async def lease_after_an_edit(*args: Any) -> bool:
            withdrawn.append(args[-1])
            await wait_for_state(c, args[-1], "deferred")
            await ref.update({"message.subject": "second"})
            return await lease(*args)

        monkeypatch.setattr(source, "_lease", lease_after_an_edit)
        assert await source._consider_many([found]) == ["skipped"]
        monkeypatch.setattr(source, "_lease", lease)
        assert (await c.get(f"/messages/{withdrawn[0]}")).json()["state"] == "cancelled"
        # the new version, as the listener hands it over
        assert await source._consider_many([await _found(ref)]) == ["queued"]
        await _doc_until(firestore_client, "mail/edited",
                         lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip
    assert [r.message["Subject"] for r in upstream.received] == ["second"]


async def test_a_document_carrying_another_documents_lease_is_sent_on_its_own(
    db_url: str, upstream: Upstream, firestore_emulator: Emulator, firestore_client: Any
) -> None:
    """A document written with the ``mailgate`` field of another (an app copying a
    document mid-lease: not final, its lease over) was taken over under the other's key:
    the message found under it was the other's, already sent, so the copy stayed
    PROCESSING for ever, leased again each time its lease ran out, and never sent."""
    async with _gateway(db_url, upstream, firestore_emulator, lease_seconds=1):
        mail = firestore_client.collection("mail")
        await mail.document("original").set(
            {"to": "o@example.com", "message": {"subject": "original", "text": "t"}}
        )
        sent = await _doc_until(firestore_client, "mail/original",
                                lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip
        copied = {
            **sent["mailgate"],
            "final": False,
            "leaseExpireTime": sent["delivery"]["endTime"],
        }
        await mail.document("copy").set(
            {"to": "c@example.com", "message": {"subject": "copy", "text": "t"}, "mailgate": copied}
        )
        done = await _doc_until(firestore_client, "mail/copy",
                                lambda d: _delivery(d).get("state") == "SUCCESS")  # fmt: skip
    assert done["mailgate"]["messageId"] != sent["mailgate"]["messageId"]
    assert sorted(r.message["Subject"] for r in upstream.received) == ["copy", "original"]
