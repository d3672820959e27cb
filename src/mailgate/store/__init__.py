"""Persistence: one schema and one set of queries for SQLite and PostgreSQL."""

from mailgate.store.accounts import AccountStore
from mailgate.store.database import Database
from mailgate.store.inbox import CapturedRecord, InboxStore
from mailgate.store.queue import Activity, Enqueued, Job, LastError, MessageRecord, QueueStore
from mailgate.store.tokens import ApiToken, TokenStore

__all__ = [
    "AccountStore",
    "Activity",
    "ApiToken",
    "CapturedRecord",
    "Database",
    "Enqueued",
    "InboxStore",
    "Job",
    "LastError",
    "MessageRecord",
    "QueueStore",
    "TokenStore",
]
