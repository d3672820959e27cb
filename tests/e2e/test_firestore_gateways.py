"""``mailgate serve --firestore`` as operators run it (issue 8): real processes against
the official Firestore emulator and real aiosmtpd upstreams.

* two gateways on one collection, sharing one PostgreSQL store (the supported
  multi-gateway setup), deliver each of 500 documents exactly once;
* a gateway killed (SIGKILL) while it holds leases: the other one, on the same store,
  finishes its documents once the leases ran out, each exactly once;
* the old agent's ``.env`` and the Trigger Email extension's parameters work unchanged.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

import httpx
import pytest
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from tests.e2e.conftest import AsyncMailgate, StartAsync, Workspace
from tests.firestore_peer import WRITE_RETRY, Emulator
from tests.peers import Upstream

pytestmark = pytest.mark.e2e

Doc = dict[str, Any]
WAIT = 60.0  #: seconds for every document to reach its outcome (they need 2–10 s idle)


def _env(emulator: Emulator, **extra: str) -> dict[str, str]:
    """A gateway on the emulator's project, polling and dispatching often."""
    return {
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "MAILGATE_FIRESTORE__PROJECT_ID": emulator.project,
        "MAILGATE_FIRESTORE__POLL_INTERVAL": "0.5",
        "MAILGATE_DELIVERY__POLL_INTERVAL": "0.1",
        **extra,
    }


def _serve(db: str, upstream: Upstream) -> tuple[str, ...]:
    return ("serve", "--firestore", "--http", "127.0.0.1:0", "--db", db, "--relay", upstream.url)


async def _start_together(
    amailgate: StartAsync, *runs: tuple[tuple[str, ...], dict[str, str]]
) -> list[AsyncMailgate]:
    """Start the processes one after the other (each its own log), wait for all at once."""
    started = [await amailgate(*args, env=env, ready=False) for args, env in runs]
    await asyncio.gather(*(mg.wait_ready() for mg in started))
    return started


async def _firestore_stats(mg: AsyncMailgate) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        stats = (await http.get(f"{mg.web}/api/v1/stats")).json()["firestore"]
    assert isinstance(stats, dict)
    return stats


async def _until_live(*gateways: AsyncMailgate) -> None:
    """Until each gateway's listener had its first snapshot (so each can take part)."""
    async with asyncio.timeout(30):
        for mg in gateways:
            while True:
                if (await _firestore_stats(mg))["stream"] == "live":
                    break
                await asyncio.sleep(0.05)


def _extension_doc(i: int) -> Doc:
    return {"to": f"r{i}@example.com", "message": {"subject": f"doc {i}", "text": f"body {i}"}}


async def _write(
    client: firestore.AsyncClient,
    collection: str,
    docs: dict[str, Doc],
    size: int = 500,
    pause: float = 0.0,
) -> None:
    """Write the documents in batches of ``size`` (500 at most: Firestore's limit on one
    batch), ``pause`` seconds apart."""
    items = list(docs.items())
    for start in range(0, len(items), size):
        batch = client.batch()
        for doc_id, doc in items[start : start + size]:
            batch.set(client.collection(collection).document(doc_id), doc)
        await batch.commit(retry=WRITE_RETRY)
        await asyncio.sleep(pause)


async def _count(query: Any) -> int:
    [[result]] = await query.count().get()
    return int(result.value)


async def _until_count(query: Any, expected: int, limit: float = WAIT) -> None:
    deadline = time.monotonic() + limit
    while (seen := await _count(query)) < expected:
        assert time.monotonic() < deadline, f"{seen} of {expected} documents after {limit} s"
        await asyncio.sleep(0.2)


async def _docs(mail: Any) -> dict[str, Doc]:
    return {snap.id: snap.to_dict() or {} async for snap in mail.stream()}


def _where(mail: Any, field: str, value: str) -> Any:
    return mail.where(filter=FieldFilter(field, "==", value))


def _assert_each_once(upstream: Upstream, subjects: list[str]) -> None:
    seen = Counter(str(r.message["Subject"]) for r in upstream.received)
    twice = [s for s, n in seen.items() if n > 1]
    assert not twice, f"sent more than once: {twice[:10]} (of {len(twice)})"
    assert sorted(seen) == sorted(subjects)


def _assert_success_once(docs: dict[str, Doc], ids: list[str]) -> None:
    assert sorted(docs) == sorted(ids)
    wrong = {
        doc_id: (d.get("delivery") or {}).get("state")
        for doc_id, d in docs.items()
        if (d.get("delivery") or {}).get("state") != "SUCCESS"
        or d["delivery"].get("attempts") != 1
        or d["mailgate"].get("final") is not True
    }
    assert not wrong, f"{len(wrong)} documents not SUCCESS after one attempt: {list(wrong)[:10]}"


@pytest.mark.parametrize(
    ("listen", "count"),
    [
        pytest.param(False, 500, id="polling-500"),
        pytest.param(True, 500, id="listening-500"),
    ],
)
async def test_two_gateways_on_one_collection_send_each_document_once(
    pg_database: str,
    upstream: Upstream,
    amailgate: StartAsync,
    firestore_emulator: Emulator,
    firestore_client: firestore.AsyncClient,
    listen: bool,
    count: int,
) -> None:
    """Both gateways read every document at about the same time: polling, both query
    the same first 100 PENDING documents every 0.2 s; listening, both get each new
    document within milliseconds. Each gateway handles the documents it found together
    and leases them in one commit, refused whole when another gateway leased one of
    them first."""
    env = _env(
        firestore_emulator,
        MAILGATE_FIRESTORE__LISTEN=str(listen).lower(),
        MAILGATE_FIRESTORE__POLL_INTERVAL="0.2",
    )
    args = _serve(pg_database, upstream)
    a, b = await _start_together(amailgate, (args, env), (args, env))
    if listen:
        await _until_live(a, b)
    mail = firestore_client.collection("mail")
    # the Trigger Email extension's new documents have no delivery (found by listening);
    # PENDING is what polling finds
    pending = {} if listen else {"delivery": {"state": "PENDING"}}
    docs = {f"m{i:03}": {**_extension_doc(i), **pending} for i in range(count)}
    # listening: 25 at a time, so that each snapshot is a new race; polling: all at once,
    # a backlog both gateways page through (each polls again at once after a full page)
    await _write(firestore_client, "mail", docs, size=25 if listen else 500, pause=0.05)

    await _until_count(_where(mail, "delivery.state", "SUCCESS"), count)
    await asyncio.sleep(1.0)  # a late duplicate would arrive now
    stats = [await _firestore_stats(mg) for mg in (a, b)]
    shares = [s["documents_queued"] for s in stats]

    _assert_each_once(upstream, [f"doc {i}" for i in range(count)])
    _assert_success_once(await _docs(mail), list(docs))
    # each lease is one document taken by one gateway: never more leases than documents
    # (fewer when both leases of a document failed on a busy emulator: it is then sent
    # unleased, once, through the shared queue)
    assert sum(shares) <= count, shares
    # both took part in the race: each won leases or lost some to the other (a gateway
    # draining a backlog back to back may win every one); one that never tried would
    # make this race no race
    tried = [s["documents_queued"] + s["leases_lost"] for s in stats]
    assert min(tried) > 0, stats


async def test_a_gateway_killed_while_holding_leases_leaves_its_documents_to_the_other(
    pg_database: str,
    upstream: Upstream,
    amailgate: StartAsync,
    firestore_emulator: Emulator,
    firestore_client: firestore.AsyncClient,
) -> None:
    """Gateway A only queues and leases (its dispatcher is off); killed with SIGKILL while
    it holds the leases, it releases nothing. Gateway B, started once those leases ran
    out, on the same store: its poll and its listener's first snapshot take the leases
    over under the key A queued with, its dispatcher sends what A queued, and every
    document is sent and written back once, the ones written while no gateway ran too."""
    lease = 3.0
    args = _serve(pg_database, upstream)
    common = {"MAILGATE_FIRESTORE__LEASE_SECONDS": str(lease)}
    a = await amailgate(
        *args, env=_env(firestore_emulator, MAILGATE_DELIVERY__ENABLED="false", **common)
    )
    mail = firestore_client.collection("mail")
    held = {f"a{i:02}": _extension_doc(i) for i in range(50)}
    await _write(firestore_client, "mail", held)
    await _until_count(_where(mail, "delivery.state", "PROCESSING"), len(held))
    await a.kill()  # the process group, SIGKILL: no lease is given back
    leased = await _docs(mail)
    owners = {d["mailgate"]["owner"] for d in leased.values()}
    assert len(owners) == 1 and upstream.received == []
    expires = max(d["mailgate"]["leaseExpireTime"] for d in leased.values())
    later = {f"b{i:02}": _extension_doc(100 + i) for i in range(10)}
    await _write(firestore_client, "mail", later)  # while no gateway runs

    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()))
    await amailgate(*args, env=_env(firestore_emulator, **common))
    await _until_count(_where(mail, "delivery.state", "SUCCESS"), len(held) + len(later))
    await asyncio.sleep(1.0)  # a late duplicate would arrive now

    _assert_each_once(upstream, [f"doc {i}" for i in [*range(50), *range(100, 110)]])
    docs = await _docs(mail)
    _assert_success_once(docs, [*held, *later])
    # each document kept the message A queued for it: the takeover found it by its key
    assert all(docs[i]["mailgate"]["messageId"] == leased[i]["mailgate"]["messageId"] for i in held)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(ref: Any, done: Callable[[Doc], bool], limit: float = 30.0) -> Doc:
    async with asyncio.timeout(limit):
        while True:
            data = (await ref.get()).to_dict() or {}
            if done(data):
                return data
            await asyncio.sleep(0.1)


def _without_project(workspace: Workspace) -> None:
    """Nothing tells the gateway the project but what the test gives it."""
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"):
        workspace.env.pop(name, None)


AGENT_ENV = """\
# the old agent's .env, as it was
FIREBASE_SERVICE_ACCOUNT_PATH=/etc/agent/service-account.json
FIREBASE_DATABASE_URL=https://{project}.firebaseio.com
SMTP_SERVER=127.0.0.1
SMTP_PORT={smtp_port}
SMTP_USE_TLS=false
SMTP_FROM_EMAIL=noreply@example.com
SMTP_FROM_NAME=Acme, Inc.
POLL_INTERVAL=1
MAX_RETRY_COUNT=3
LOG_LEVEL=INFO
ADMIN_PORT={admin_port}
ADMIN_USER=admin
ADMIN_PASS=Agent-Admin-Pw-8rT2
"""


async def test_the_old_agents_env_file_works_unchanged(
    upstream: Upstream,
    amailgate: StartAsync,
    workspace: Workspace,
    firestore_emulator: Emulator,
    firestore_client: firestore.AsyncClient,
) -> None:
    """Only ``FIRESTORE_EMULATOR_HOST`` is added (where the agent ran against production);
    the project comes from ``FIREBASE_DATABASE_URL``, the account and the sender from
    ``SMTP_*``, the web port from ``ADMIN_PORT``. The agent relays through a local MTA
    without a login (with one, and no TLS on offer, mailgate refuses to send the password
    in clear; test_legacy_env covers the login over STARTTLS)."""
    _without_project(workspace)
    admin_port = _free_port()
    (workspace.root / ".env").write_text(
        AGENT_ENV.format(
            project=firestore_emulator.project, smtp_port=upstream.port, admin_port=admin_port
        ),
        encoding="utf-8",
    )
    mg = await amailgate(
        "serve", "--firestore", env={"FIRESTORE_EMULATOR_HOST": firestore_emulator.host}
    )
    assert mg.web == f"http://127.0.0.1:{admin_port}"
    ref = firestore_client.collection("mail").document("welcome")
    await ref.set(
        {
            "to": "ann@example.com",
            "subject": "Welcome aboard",
            "message": {"html": "<p>Hello Ann</p>"},
            "delivery": None,
        }
    )

    data = await _until(ref, lambda d: d.get("state") == "SENT")
    [received] = upstream.received
    assert data["delivery"]["success"] is True and data["delivery"]["error"] is None
    assert isinstance(data["delivery"]["timestamp"], datetime)
    assert received.rcpt_tos == ["ann@example.com"] and received.mail_from == "noreply@example.com"
    message = received.message
    assert parseaddr(message["From"]) == ("Acme, Inc.", "noreply@example.com")
    assert message["Subject"] == "Welcome aboard"
    html = message.get_body(("html",))
    assert html is not None and "<p>Hello Ann</p>" in html.get_content()


async def test_the_extensions_parameters_work_unchanged(
    upstream: Upstream,
    amailgate: StartAsync,
    workspace: Workspace,
    firestore_emulator: Emulator,
    firestore_client: firestore.AsyncClient,
) -> None:
    """The Trigger Email extension's parameters as its function had them, and a document
    it would send: recipients by uid, a template with a partial, the default From and
    Reply-To, and a TTL on the outcome."""
    _without_project(workspace)
    env = {
        "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
        "GOOGLE_CLOUD_PROJECT": firestore_emulator.project,  # a function's environment has it
        "SMTP_CONNECTION_URI": f"smtp://127.0.0.1:{upstream.port}",
        "DEFAULT_FROM": "Acme <noreply@acme.test>",
        "DEFAULT_REPLY_TO": "support@acme.test",
        "MAIL_COLLECTION": "emails",
        "USERS_COLLECTION": "people",
        "TEMPLATES_COLLECTION": "mail_templates",
        "TTL_EXPIRE_TYPE": "day",
        "TTL_EXPIRE_VALUE": "2",
    }
    db = firestore_client
    await db.document("people/u1").set({"email": "ann@example.com", "name": "Ann"})
    await db.document("people/u2").set({"email": "bob@example.com"})
    await db.document("mail_templates/welcome").set(
        {
            "subject": "Welcome, {{name}}!",
            "html": "<h1>Hi {{name}}</h1>{{> footer}}",
            "text": "Hi {{name}}\n{{> footer}}",
        }
    )
    await db.document("mail_templates/footer").set(
        {"partial": True, "html": "<p>{{company}} team</p>", "text": "-- {{company}} team"}
    )
    await amailgate("serve", "--http", "127.0.0.1:0", "--firestore", env=env)
    ref = db.collection("emails").document("e1")
    await ref.set(
        {
            "toUids": ["u1", "u2"],
            "template": {"name": "welcome", "data": {"name": "Ann & Bob", "company": "Acme"}},
        }
    )

    data = await _until(ref, lambda d: (d.get("delivery") or {}).get("state") == "SUCCESS")
    [received] = upstream.received
    message = received.message
    assert sorted(received.rcpt_tos) == ["ann@example.com", "bob@example.com"]
    assert received.mail_from == "noreply@acme.test"
    assert parseaddr(message["From"]) == ("Acme", "noreply@acme.test")
    assert message["Reply-To"] == "support@acme.test"
    assert message["Subject"] == "Welcome, Ann & Bob!"  # subject and text are not escaped
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None and text is not None
    assert "<h1>Hi Ann &amp; Bob</h1><p>Acme team</p>" in html.get_content()
    assert text.get_content().splitlines() == ["Hi Ann & Bob", "-- Acme team"]
    delivery = data["delivery"]
    assert delivery["attempts"] == 1 and delivery["error"] is None
    assert delivery["info"]["accepted"] == ["ann@example.com", "bob@example.com"]
    assert abs(delivery["expireAt"] - delivery["endTime"] - timedelta(days=2)) < timedelta(
        minutes=1
    )
