"""The tables, in SQLAlchemy Core; the same schema serves SQLite and PostgreSQL.

Migrations in ``migrations/versions`` must produce exactly this; a test compares them.

Every text and JSON column is declared with a sanitising type (:class:`SafeText`,
:class:`SafeString`, :class:`SafeJSON`). PostgreSQL cannot store NUL in ``text`` or
``json``, and no UTF-8 database can store a lone surrogate (``"\\ud800"``, what
``surrogateescape`` decoding or a broken JSON escape leaves behind); either made
asyncpg raise, which failed a whole group commit for the sake of one upstream
reply or one captured subject (issue 5, item 10). Both become U+FFFD REPLACEMENT
CHARACTER on the way in, on every engine, so SQLite and PostgreSQL keep the same
text: the character Unicode reserves for "something was here that could not be
represented", one code point for one, never an escape that could be mistaken for
what the sender wrote. Bytes columns (``raw``, attachment content) keep NUL as sent.
Because the column types do it, where-clauses get the same treatment: a lookup by
a key containing NUL finds the row stored under it instead of raising.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    text,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.dialects import postgresql, sqlite

#: queued or deferred, written out: a partial index is only used by a query whose WHERE
#: repeats its condition with the same literal values (SQLite and PostgreSQL alike)
WAITING_SQL = text("state IN ('queued', 'deferred')")

__all__ = [
    "MAX_STORED_MESSAGE",
    "WAITING_SQL",
    "SafeJSON",
    "SafeString",
    "SafeText",
    "accounts",
    "api_tokens",
    "attachments",
    "attempts",
    "auth_failures",
    "delete_unlocked",
    "ended_sessions",
    "events",
    "inbox",
    "inbox_raw",
    "messages",
    "metadata",
    "outbox_consumers",
    "outbox_deliveries",
    "rate_buckets",
    "sanitize_json",
    "sanitize_text",
    "smtp_users",
    "upsert",
    "webhook_attempts",
    "webhooks",
]

_REPLACEMENT = "\ufffd"


def upsert(dialect: Dialect, table: Table) -> sqlite.Insert | postgresql.Insert:
    """The dialect's own ``INSERT`` construct, the one with ``ON CONFLICT``: both engines
    spell the clause alike, but SQLAlchemy offers it per dialect. PostgreSQL's is
    imported only there (2.7 MiB that a SQLite process never needs)."""
    if dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    return postgresql_insert(table)


def delete_unlocked(conn: Connection, key: Column[Any], keys: Select[Any]) -> None:
    """Delete the rows of ``key``'s table whose ``key`` ``keys`` selects, but those
    another transaction has locked (``SKIP LOCKED`` on PostgreSQL; SQLite's writers are
    serialised already): two processes pruning at once never wait for each other."""
    locked = keys.with_for_update(skip_locked=True).scalar_subquery()
    conn.execute(delete(key.table).where(key.in_(locked)))


def sanitize_text(value: str) -> str:
    """``value`` with NUL and lone surrogates replaced by U+FFFD; the same object if clean.

    Runs for every bound text value, so the common case is one C-speed scan (measured:
    about 0.1 µs for a subject, 10 µs for 1 MB of ASCII): ``isascii`` is O(1) in CPython
    and an ASCII string cannot hold a surrogate; only other strings pay for a trial
    encode (1–3 ms per MB, the same order as the driver's own UTF-8 encoding of it).
    A well-formed surrogate *pair* becomes the character it encodes.
    """
    if "\x00" in value:
        value = value.replace("\x00", _REPLACEMENT)
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 joins valid pairs and turns each lone surrogate into U+FFFD.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def sanitize_json(value: Any) -> Any:
    """A JSON value with :func:`sanitize_text` applied to every string, keys included."""
    if isinstance(value, str):
        return sanitize_text(value)
    if isinstance(value, dict):
        return {sanitize_json(k): sanitize_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize_json(v) for v in value]
    return value


class SafeText(TypeDecorator[str]):
    """``Text`` that stores NUL and lone surrogates as U+FFFD (see the module docstring)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else sanitize_text(value)


class SafeString(TypeDecorator[str]):
    """``String(n)`` with the same sanitising as :class:`SafeText`."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else sanitize_text(value)


class SafeJSON(TypeDecorator[Any]):
    """``JSON`` whose strings, keys included, are sanitised like :class:`SafeText`."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return sanitize_json(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on both engines (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("id", SafeString(36), primary_key=True),
    Column("tenant", SafeString(64), nullable=False),
    Column("key", SafeString(255)),  # the client's idempotency key
    Column("account", SafeString(64), nullable=False),
    Column("state", SafeString(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("sender", SafeText, nullable=False),
    Column("to_addrs", SafeJSON, nullable=False),
    Column("cc_addrs", SafeJSON, nullable=False),
    Column("bcc_addrs", SafeJSON, nullable=False),
    Column("reply_to", SafeText),
    Column("subject", SafeText, nullable=False),
    Column("text_body", SafeText),
    Column("html_body", SafeText),
    Column("headers", SafeJSON, nullable=False),
    Column("meta", SafeJSON, nullable=False),
    Column("message_id", SafeText, nullable=False),
    Column("pending", SafeJSON, nullable=False),  # envelope recipients still to deliver
    Column("delivered", Integer, nullable=False, default=0),
    Column("attempt_count", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("send_at", UTCDateTime),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_owner", SafeString(64)),
    Column("lease_expires_at", UTCDateTime),
    Column("last_error", SafeText),
    Column("wait_reason", SafeText),  # why a due message is held (account disabled, paced…)
    Column("source", SafeText, nullable=False, server_default="rest"),  # rest, smtp, firestore:…
    # SMTP submission: the message as the client sent it (sent as it is), and MAIL FROM
    Column("raw", LargeBinary),
    Column("return_path", SafeText),
    UniqueConstraint("tenant", "key", name="uq_messages_tenant_key"),
    Index("ix_messages_due", "state", "next_attempt_at"),
    # an account's next messages in send order, for fair leasing (store/leasing.py): only
    # the waiting ones, so a lease never walks past the sent mail kept for retention
    Index(
        "ix_messages_waiting",
        "tenant",
        "account",
        "priority",
        "next_attempt_at",
        "id",
        # partial on PostgreSQL too (migration 0003 says so; a contract test checks both
        # engines): ``postgresql_where`` here would import PostgreSQL's dialect, 2.7 MiB,
        # into every SQLite process
        sqlite_where=WAITING_SQL,
    ),
    Index("ix_messages_tenant_state", "tenant", "state", "id"),
    # what finished when: the activity figures of GET /api/v1/stats, and retention
    Index("ix_messages_state_updated", "state", "updated_at", "tenant"),
)

attachments = Table(
    "attachments",
    metadata,
    Column(
        "message_id",
        SafeString(36),
        ForeignKey("messages.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("idx", Integer, primary_key=True),
    Column("filename", SafeText, nullable=False),
    Column("content_type", SafeText, nullable=False),
    Column("cid", SafeText),
    Column("content", LargeBinary, nullable=False),  # empty for url/path attachments
    Column("url", SafeText),  # fetched at send time (issue 6)
    Column("path", SafeText),  # volume:sub/path, read at send time
)

attempts = Table(
    "attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "message_id", SafeString(36), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
    ),
    Column("at", UTCDateTime, nullable=False),
    Column("transport", SafeString(64), nullable=False),
    Column("code", Integer),
    Column("enhanced_code", SafeString(16)),
    Column("text", SafeText, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("recipients", SafeJSON, nullable=False),
    Column("failure_class", SafeString(24)),  # model.FailureClass; None when sent
    Column("counted", Boolean, nullable=False, default=True),  # spent one of the tries?
    Column("remote_id", SafeText),  # the next hop's id for the message (Postmark MessageID…)
    Column("account", SafeString(64)),  # the account it went through; None: captured
    Index("ix_attempts_message", "message_id", "id"),
)

# The outbox: a state change and the event that reports it commit together;
# reporters (webhooks, Firestore write-back) drain it.
events = Table(
    "events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant", SafeString(64), nullable=False, server_default="default"),
    Column("message_id", SafeString(36)),  # a queued message's events
    Column("inbox_id", SafeString(36)),  # a captured message's
    Column("source", SafeText),  # the message's source: rest, smtp, firestore:<path>
    Column("kind", SafeString(32), nullable=False),  # an outbox.EventKind
    Column("payload", SafeJSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Who drains the outbox (webhooks, report sync, the Firestore write-back): one delivery
# row per consumer and event, written with the event (store/outbox.py).
# A consumer may take only one tenant's events (``tenant``), only some kinds (``kinds``:
# " message.sent message.failed ", spaces around each; None: all) and only those of
# messages from one source (``source_prefix``, "firestore:"); an
# inactive one (a disabled webhook) gets no new deliveries and keeps its pending ones.
outbox_consumers = Table(
    "outbox_consumers",
    metadata,
    Column("name", SafeString(64), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("tenant", SafeString(64)),
    Column("kinds", SafeText),
    Column("active", Boolean, nullable=False, default=True, server_default=text("true")),
    Column("source_prefix", SafeText),  # only events whose source starts with this
)

outbox_deliveries = Table(
    "outbox_deliveries",
    metadata,
    Column("consumer", SafeString(64), primary_key=True),
    Column(
        "event_id",
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("events.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("state", SafeString(16), nullable=False),  # pending, done, dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),  # also the end of a claim
    Column("last_error", SafeText),
    Column("updated_at", UTCDateTime, nullable=False),
    # the event's message (or captured mail): a consumer gets one message's events in order
    Column("ordering_key", SafeString(36)),
    Index("ix_outbox_deliveries_due", "consumer", "state", "next_attempt_at", "event_id"),
    Index("ix_outbox_deliveries_order", "consumer", "ordering_key", "event_id"),
)

# Webhook endpoints (per tenant); each is the outbox consumer ``webhook:<id>``. The
# signing secret is stored encrypted.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", SafeString(36), primary_key=True),
    Column("tenant", SafeString(64), nullable=False),
    Column("url", SafeText, nullable=False),
    Column("kinds", SafeJSON),  # event kinds it takes; None: all
    Column("description", SafeText, nullable=False, default=""),
    Column("secret_enc", LargeBinary, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("disabled_reason", SafeText),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_webhooks_tenant", "tenant", "id"),
)

# Every POST of an event to a webhook, with what came back.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("webhook_id", SafeString(36), nullable=False),
    Column("event_id", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("kind", SafeString(32), nullable=False),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("outcome", SafeString(16), nullable=False),  # delivered, failed, dead, gone
    Column("status", Integer),  # the HTTP status; None: no answer
    Column("error", SafeText),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_webhook_attempts_webhook", "webhook_id", "id"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", SafeString(36), primary_key=True),
    Column("tenant", SafeString(64), nullable=False),
    Column("source", SafeString(16), nullable=False),  # smtp | api
    Column("received_at", UTCDateTime, nullable=False),
    Column("remote_addr", SafeText),
    Column("helo", SafeText),
    Column("mail_from", SafeText, nullable=False),
    Column("rcpt_to", SafeJSON, nullable=False),
    Column("auth", SafeJSON),
    Column("subject", SafeText, nullable=False),
    Column("from_header", SafeText, nullable=False),
    Column("to_header", SafeText, nullable=False),
    Column("headers", SafeJSON, nullable=False),
    Column("text_body", SafeText),
    Column("html_body", SafeText),
    Column("attachments", SafeJSON, nullable=False),  # metadata only; bytes come from raw
    Column("size", Integer, nullable=False),
    # issue 10: the inbox it was sorted into (inbox.sort_by), read or not, its tags
    # (plus-addresses, X-Tags, the API) and its Message-ID for ``message-id:`` searches
    Column("box", SafeString(64), nullable=False, server_default="default"),
    Column("read", Boolean, nullable=False, default=False, server_default=text("false")),
    Column("tags", SafeJSON, nullable=False, server_default=text("'[]'")),
    Column("message_id", SafeText),
    Index("ix_inbox_tenant_id", "tenant", "id"),
    Index("ix_inbox_tenant_box_id", "tenant", "box", "id"),  # one inbox, newest first
    Index("ix_inbox_tenant_box_read", "tenant", "box", "read"),  # each inbox's counts
)

# A captured message's bytes, apart from its row: SQLite writes a big message in with
# incremental blob I/O into a zeroblob, and only a zeroblob in a record's last column is
# left unwritten (elsewhere SQLite makes the message's size in zeros in memory, twice)
MAX_STORED_MESSAGE = 999_000_000
"""Octets of the largest message a store keeps (``inbox_raw.raw``, ``messages``' bytes):
SQLite's blobs and rows end at 10^9 (``SQLITE_MAX_LENGTH``), PostgreSQL's ``bytea`` at
1 GiB; one MB is left for the rest of the row. The SMTP server announces no larger SIZE
(552 past it), so a message no store can take is refused for good, never retried."""

inbox_raw = Table(
    "inbox_raw",
    metadata,
    Column("id", SafeString(36), ForeignKey("inbox.id", ondelete="CASCADE"), primary_key=True),
    Column("raw", LargeBinary, nullable=False),  # last: see above
)

# Sending identities (issue 6): an SMTP account or a provider, per tenant. Secrets are
# stored encrypted (the ``*_enc`` columns); nothing else here is secret.
accounts = Table(
    "accounts",
    metadata,
    Column("tenant", SafeString(64), primary_key=True),
    Column("id", SafeString(64), primary_key=True),
    Column("from_addrs", SafeJSON, nullable=False),  # addresses or domains it may send as
    Column("transport", SafeString(16), nullable=False),  # smtp | postmark
    Column("smtp_host", SafeText),
    Column("smtp_port", Integer),
    Column("smtp_security", SafeString(16), nullable=False),  # ssl | starttls | none
    Column("smtp_auth", SafeString(16), nullable=False),  # plain | login | none
    Column("smtp_username", SafeText),
    Column("smtp_password_enc", LargeBinary),
    Column("smtp_options", SafeJSON, nullable=False),  # verify_tls, opportunistic_tls…
    Column("postmark_token_enc", LargeBinary),
    Column("is_outbound_enabled", Boolean, nullable=False, default=False),
    Column("limits", SafeJSON, nullable=False),  # per_minute/hour/day, pool_size, retry…
    Column("imap", SafeJSON, nullable=False),  # stored for later: host, port, security…
    Column("imap_password_enc", LargeBinary),
    Column("dkim", SafeJSON),  # {"domain", "selector"} when signing; the key is below
    Column("dkim_key_enc", LargeBinary),
    Column("connection_last_ok_at", UTCDateTime),
    Column("connection_error", SafeText),
    Column("tested_at", UTCDateTime),  # last passing test since the settings changed
    Column("settings_changed_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False, default=1),  # bumped on every change
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Per-tenant API tokens (the configured MAILGATE_API_TOKEN stays the admin token).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", SafeString(36), primary_key=True),
    Column("tenant", SafeString(64), nullable=False),
    Column("name", SafeText, nullable=False),
    Column("token_hash", SafeString(64), nullable=False, unique=True),  # SHA-256 hex
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
)

# SMTP submission users (issue 9): who may hand mail to the gateway over SMTP, as whom.
# A username is global (AUTH comes before anything says the tenant); the password is
# kept only as a scrypt hash (services/smtp_users.py).
smtp_users = Table(
    "smtp_users",
    metadata,
    Column("id", SafeString(36), primary_key=True),
    Column("tenant", SafeString(64), nullable=False),
    Column("username", SafeString(255), nullable=False, unique=True),
    Column("password_hash", SafeText, nullable=False),
    Column("senders", SafeJSON, nullable=False),  # addresses or @domains; [] = any
    Column("account", SafeString(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_smtp_users_tenant", "tenant", "username"),
)

# Token buckets shared by every process: one row per (tenant, account, window).
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key", SafeString(200), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Failed SMTP AUTH attempts, one row each, shared by every process on the store so that
# the limit per client address holds across them (ingest/auth_throttle.py). Rows older
# than the window go as new ones are written, and the table never holds more than
# store/auth_failures.py's cap.
auth_failures = Table(
    "auth_failures",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("client", SafeString(100), nullable=False),  # the client's IP address
    Column("failed_at", UTCDateTime, nullable=False),
    Index("ix_auth_failures_client", "client", "failed_at"),  # one address's newest
    Index("ix_auth_failures_failed_at", "failed_at"),  # the expired, oldest first
)

# Admin UI sessions ended by a logout before their expiry (a session is a signed cookie:
# without this a copy of it kept opening the UI); every process refuses the ids here.
# Rows past their expiry go as new ones are written (store/ended_sessions.py).
ended_sessions = Table(
    "ended_sessions",
    metadata,
    Column("id", SafeString(64), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_ended_sessions_expires_at", "expires_at"),  # the expired, oldest first
)

# Settings changed at run time (issue 11): the dotted name of each one changed, its JSON
# value; merged over the configured defaults by every process (services/runtime.py).
runtime_settings = Table(
    "runtime_settings",
    metadata,
    Column("name", SafeString(100), primary_key=True),
    Column("value", SafeJSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
