"""Captured mail: keep, search and serve everything that arrives in capture mode."""

from mailgate.inbox.service import CaptureMeta, Inbox, capture_event

__all__ = ["CaptureMeta", "Inbox", "capture_event"]
