"""The tables, in SQLAlchemy Core; the same schema serves SQLite and PostgreSQL.

Migrations in ``migrations/versions`` must produce exactly this; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["attachments", "attempts", "events", "inbox", "messages", "metadata"]


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
    Column("id", String(36), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("key", String(255)),  # the client's idempotency key
    Column("account", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("sender", Text, nullable=False),
    Column("to_addrs", JSON, nullable=False),
    Column("cc_addrs", JSON, nullable=False),
    Column("bcc_addrs", JSON, nullable=False),
    Column("reply_to", Text),
    Column("subject", Text, nullable=False),
    Column("text_body", Text),
    Column("html_body", Text),
    Column("headers", JSON, nullable=False),
    Column("meta", JSON, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("pending", JSON, nullable=False),  # envelope recipients still to deliver
    Column("delivered", Integer, nullable=False, default=0),
    Column("attempt_count", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("send_at", UTCDateTime),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime),
    Column("last_error", Text),
    UniqueConstraint("tenant", "key", name="uq_messages_tenant_key"),
    Index("ix_messages_due", "state", "next_attempt_at"),
    Index("ix_messages_tenant_state", "tenant", "state", "id"),
)

attachments = Table(
    "attachments",
    metadata,
    Column(
        "message_id", String(36), ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("idx", Integer, primary_key=True),
    Column("filename", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("cid", Text),
    Column("content", LargeBinary, nullable=False),
)

attempts = Table(
    "attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("message_id", String(36), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("transport", String(64), nullable=False),
    Column("code", Integer),
    Column("enhanced_code", String(16)),
    Column("text", Text, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("recipients", JSON, nullable=False),
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
    Column("message_id", String(36), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("source", String(16), nullable=False),  # smtp | api
    Column("received_at", UTCDateTime, nullable=False),
    Column("remote_addr", Text),
    Column("helo", Text),
    Column("mail_from", Text, nullable=False),
    Column("rcpt_to", JSON, nullable=False),
    Column("auth", JSON),
    Column("subject", Text, nullable=False),
    Column("from_header", Text, nullable=False),
    Column("to_header", Text, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("text_body", Text),
    Column("html_body", Text),
    Column("attachments", JSON, nullable=False),  # metadata only; bytes come from raw
    Column("size", Integer, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Index("ix_inbox_tenant_id", "tenant", "id"),
)
