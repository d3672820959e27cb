"""AccountStore and TokenStore on SQLite and a real PostgreSQL: secrets sealed at rest,
the enable-after-test rule, versions, tenants, key rotation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mailgate.crypto import NoSecretKey, SecretBox, generate_key
from mailgate.errors import ConfigError, Conflict, NotFound
from mailgate.model import Account, AccountImap, AccountLimits, AccountTransport, SmtpSecurity
from mailgate.store import AccountStore, Database, TokenStore
from mailgate.store.schema import accounts, api_tokens, events

PASSWORD = "s3cret-Pa55word-for-the-store"
TOKEN = "postmark-token-9d1f"
IMAP_PASSWORD = "imap-Pa55-7c2"


class StepClock:
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


def account(id: str = "agent1", tenant: str = "t1", **changes: object) -> Account:
    base = Account(
        id=id,
        tenant=tenant,
        transport=AccountTransport.SMTP,
        from_=("agent1@example.com", "@agents.example"),
        smtp_host="smtp.example.com",
        smtp_port=587,
        smtp_username="agent1",
        smtp_password=PASSWORD,
        limits=AccountLimits(per_minute=60, pool_size=2),
        imap=AccountImap(host="imap.example.com", password=IMAP_PASSWORD),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([generate_key()])


@pytest.fixture
def store(database: Database, box: SecretBox) -> AccountStore:
    return AccountStore(database, box, StepClock())


async def test_round_trip_decrypts_and_stores_only_ciphertext(
    store: AccountStore, database: Database
) -> None:
    created = await store.create(account(postmark_token=TOKEN))
    assert created.smtp_password == PASSWORD and created.postmark_token == TOKEN
    assert created.imap.password == IMAP_PASSWORD and created.imap.host == "imap.example.com"
    assert created.imap.security is SmtpSecurity.SSL
    assert created.limits == AccountLimits(per_minute=60, pool_size=2)
    assert created.version == 1 and not created.is_outbound_enabled
    assert PASSWORD not in repr(created)
    async with database.read() as conn:
        row = (await conn.execute(select(accounts))).mappings().one()
    stored = repr(dict(row)).encode()
    for secret in (PASSWORD, TOKEN, IMAP_PASSWORD):
        assert secret.encode() not in stored
    assert row["smtp_password_enc"] is not None


async def test_tenants_see_only_their_own(store: AccountStore) -> None:
    await store.create(account())
    assert await store.get("t2", "agent1") is None
    assert await store.list("t2") == []
    await store.create(account(tenant="t2"))  # the same id in another tenant is fine
    with pytest.raises(Conflict):
        await store.create(account())
    with pytest.raises(NotFound):
        await store.delete("t3", "agent1")
    await store.delete("t2", "agent1")
    assert [a.tenant for a in await store.list("t1")] == ["t1"]


async def test_enable_only_after_a_test_since_the_settings_changed(store: AccountStore) -> None:
    await store.create(account())
    with pytest.raises(Conflict, match="connection test"):
        await store.set_enabled("t1", "agent1", True)
    failing_at = store.clock.now()
    await store.record_test("t1", "agent1", passed=False, error="535 nope", at=failing_at)
    with pytest.raises(Conflict):
        await store.set_enabled("t1", "agent1", True)
    await store.record_test("t1", "agent1", passed=True, error=None, at=store.clock.now())
    enabled = await store.set_enabled("t1", "agent1", True)
    assert enabled.is_outbound_enabled and enabled.connection_error is None
    assert enabled.connection_last_ok_at is not None and enabled.tested_since_change
    # a new password needs a new test, and switches outbound off meanwhile
    changed = await store.update(replace(enabled, smtp_password="other"), settings_changed=True)
    assert not changed.is_outbound_enabled and not changed.tested_since_change
    with pytest.raises(Conflict):
        await store.set_enabled("t1", "agent1", True)
    # other changes (limits) keep the test
    await store.record_test("t1", "agent1", passed=True, error=None, at=store.clock.now())
    await store.set_enabled("t1", "agent1", True)
    limited = await store.update(
        replace(changed, limits=AccountLimits(per_minute=5), is_outbound_enabled=True),
        settings_changed=False,
    )
    assert limited.is_outbound_enabled and limited.limits.per_minute == 5


async def test_every_change_bumps_the_version_health_does_not(store: AccountStore) -> None:
    first = await store.create(account())
    updated = await store.update(replace(first, from_=("x@example.com",)), settings_changed=False)
    assert updated.version == 2
    await store.record_health("t1", "agent1", ok_at=None, error="421 busy")
    health = await store.get("t1", "agent1")
    assert health is not None and health.version == 2 and health.connection_error == "421 busy"
    disabled = await store.set_enabled("t1", "agent1", False)
    assert disabled.version == 3


async def test_for_sender_picks_an_enabled_match_by_id(store: AccountStore) -> None:
    for name in ("b", "a", "c"):
        await store.create(account(id=name, from_=("@example.com",)))
    assert await store.for_sender("t1", "x@example.com") is None  # none enabled yet
    for name in ("c", "b"):
        await store.record_test("t1", name, passed=True, error=None, at=store.clock.now())
        await store.set_enabled("t1", name, True)
    chosen = await store.for_sender("t1", "X@Example.com")
    assert chosen is not None and chosen.id == "b" and chosen.smtp_password == PASSWORD
    assert await store.for_sender("t1", "x@elsewhere.org") is None
    assert await store.for_sender("t2", "x@example.com") is None


async def test_no_key_refuses_to_store_a_secret(database: Database) -> None:
    store = AccountStore(database, None, StepClock())
    with pytest.raises(NoSecretKey, match="mailgate secrets generate"):
        await store.create(account())
    plain = await store.create(account(smtp_password=None, imap=AccountImap()))
    assert plain.smtp_password is None


async def test_rotate_reencrypts_every_secret_under_the_new_key(
    database: Database, box: SecretBox
) -> None:
    old_key, new_key = generate_key(), generate_key()
    old = AccountStore(database, SecretBox([old_key]), StepClock())
    await old.create(account(postmark_token=TOKEN))
    await old.create(account(id="agent2", tenant="t2"))
    rotated = await old.rotate(SecretBox([new_key, old_key]))
    assert rotated == 5  # 2 SMTP passwords, 2 IMAP passwords, 1 token
    only_new = AccountStore(database, SecretBox([new_key]), StepClock())
    got = await only_new.get("t1", "agent1")
    assert got is not None and got.smtp_password == PASSWORD and got.postmark_token == TOKEN
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        await old.get("t1", "agent1")


async def test_tokens_are_stored_as_digests_and_resolve_to_their_tenant(
    database: Database,
) -> None:
    tokens = TokenStore(database, StepClock())
    record, token = await tokens.create("t1", "ci")
    _, other = await tokens.create("t2")
    assert await tokens.tenant_of(token) == "t1" and await tokens.tenant_of(other) == "t2"
    assert await tokens.tenant_of(token + "x") is None
    assert [t.name for t in await tokens.list("t1")] == ["ci"]
    async with database.read() as conn:
        stored = repr((await conn.execute(select(api_tokens))).all())
    assert token not in stored and other not in stored
    with pytest.raises(NotFound):
        await tokens.delete("t2", record.id)
    await tokens.delete("t1", record.id)
    assert await tokens.tenant_of(token) is None


async def test_a_tokens_use_is_noted_at_most_once_a_minute(database: Database) -> None:
    clock = StepClock()  # one second later at every look
    tokens = TokenStore(database, clock)
    record, token = await tokens.create("t1", "ci")
    assert [t.last_used_at for t in await tokens.list("t1")] == [None]
    await tokens.tenant_of(token)
    [first] = [t.last_used_at for t in await tokens.list("t1")]
    assert first is not None and first > record.created_at
    await tokens.tenant_of(token)  # a second later: not written again
    assert [t.last_used_at for t in await tokens.list("t1")] == [first]
    clock.at += timedelta(minutes=1)
    await tokens.tenant_of(token)
    [later] = [t.last_used_at for t in await tokens.list("t1")]
    assert later is not None and later - first >= timedelta(minutes=1)


async def test_a_change_of_health_is_reported_once_as_an_outbox_event(
    store: AccountStore, database: Database
) -> None:
    """account.failing when a working account fails, account.recovered when it works
    again; repeated failures (a message each) report nothing more."""
    await store.create(account())
    ok = datetime(2026, 11, 3, 10, 30, tzinfo=UTC)
    await store.record_health("t1", "agent1", ok_at=ok, error=None)  # fine: nothing to say
    await store.record_health("t1", "agent1", ok_at=None, error="535 5.7.8 bad credentials")
    await store.record_health("t1", "agent1", ok_at=None, error="535 5.7.8 bad credentials")
    await store.record_health("t1", "agent1", ok_at=ok + timedelta(minutes=5), error=None)
    await store.record_health("nobody", "gone", ok_at=None, error="x")  # a deleted account
    async with database.read() as conn:
        rows = (await conn.execute(select(events).order_by(events.c.id))).mappings().all()
    assert [(r["kind"], r["tenant"], r["payload"]) for r in rows] == [
        ("account.failing", "t1", {"account": "agent1", "error": "535 5.7.8 bad credentials"}),
        (
            "account.recovered",
            "t1",
            {"account": "agent1", "error_was": "535 5.7.8 bad credentials"},
        ),
    ]
    assert rows[1]["created_at"] == ok + timedelta(minutes=5)
