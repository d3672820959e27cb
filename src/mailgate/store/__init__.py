"""Persistence: one schema and one set of queries for SQLite and PostgreSQL."""

from mailgate.store.database import Database
from mailgate.store.inbox import CapturedRecord, InboxStore
from mailgate.store.queue import Enqueued, Job, MessageRecord, QueueStore

__all__ = [
    "CapturedRecord",
    "Database",
    "Enqueued",
    "InboxStore",
    "Job",
    "MessageRecord",
    "QueueStore",
]
