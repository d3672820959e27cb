"""Resolve a message's ``url`` and ``path`` attachments when it is sent, within the limits.

The queue keeps only the reference; the bytes are fetched (``url``) or read from a
configured directory (``path`` as ``volume:sub/path``) for each attempt, so a large
file is not copied into the database. Limits (settings): each attachment at most
``max_attachment_size`` bytes, all of a message's attachments together at most
``max_message_size``. A failure is an :class:`AttachmentUnavailable`: the dispatcher
fails the message when retrying cannot help (404, an address refused, a file outside
its volume, too big) and defers it otherwise (network, 5xx, time-out).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from mailgate.deliver.fetch import FetchFailed, UrlFetcher
from mailgate.errors import UnbuildableMessage
from mailgate.model import Attachment, FailureClass, Message, Outcome, SendResult
from mailgate.settings import AttachmentSettings

__all__ = [
    "AttachmentResolver",
    "AttachmentUnavailable",
    "check_volume_path",
    "read_volume_file",
    "unavailable_result",
]

_VOLUME_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class AttachmentUnavailable(UnbuildableMessage):
    """An attachment could not be had at send time; ``temporary``: a later try may work."""

    def __init__(self, reason: str, *, temporary: bool) -> None:
        super().__init__(reason)
        self.temporary = temporary


def check_volume_path(spec: str) -> tuple[str, PurePosixPath]:
    """``volume:sub/path`` split into the volume name and a relative path; ``ValueError``
    for anything that could leave the volume by its spelling (absolute, ``..``, a drive)."""
    name, sep, sub = spec.partition(":")
    if not sep or not _VOLUME_NAME.fullmatch(name):
        raise ValueError("a path is volume:sub/path, the volume a configured name")
    if not sub or "\x00" in sub or "\\" in sub:
        raise ValueError("the path inside the volume is empty or has NUL or backslash")
    relative = PurePosixPath(sub)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError("the path inside the volume must be relative, without '..'")
    return name, relative


def read_volume_file(spec: str, volumes: Mapping[str, Path], limit: int) -> bytes:
    """The file's bytes: it must resolve (symlinks followed) to a regular file inside its
    volume's directory, and be at most ``limit`` bytes. Blocking: run it in a thread."""
    try:
        name, relative = check_volume_path(spec)
    except ValueError as exc:
        raise AttachmentUnavailable(f"path {spec!r}: {exc}", temporary=False) from None
    if name not in volumes:
        raise AttachmentUnavailable(f"path {spec!r}: no volume named {name!r}", temporary=False)
    root = volumes[name].resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        reason = f"path {spec!r} leads outside its volume (a symlink out): refused"
        raise AttachmentUnavailable(reason, temporary=False)
    return _read_regular(target, spec, limit)


def _read_regular(target: Path, spec: str, limit: int) -> bytes:
    """Open without following a last-moment symlink, then check and read what was opened."""
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise AttachmentUnavailable(f"path {spec!r}: {exc.strerror}", temporary=False) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise AttachmentUnavailable(f"path {spec!r} is not a regular file", temporary=False)
    with os.fdopen(fd, "rb") as file:
        content = file.read(limit + 1)
    if len(content) > limit:
        reason = f"path {spec!r}: over the attachment limit of {limit} bytes"
        raise AttachmentUnavailable(reason, temporary=False)
    return content


class AttachmentResolver:
    """Fills in a message's ``url``/``path`` attachments; inline ones are left as queued."""

    def __init__(self, settings: AttachmentSettings, fetcher: UrlFetcher) -> None:
        self.settings = settings
        self.fetcher = fetcher

    async def resolve(self, message: Message) -> Message:
        """The message with every attachment's bytes, or :class:`AttachmentUnavailable`."""
        if not any(a.deferred for a in message.attachments):
            return message
        budget = self.settings.max_message_size - sum(
            len(a.content) for a in message.attachments if not a.deferred
        )
        resolved: list[Attachment] = []
        for index, att in enumerate(message.attachments):
            if att.deferred:
                limit = min(self.settings.max_attachment_size, budget)
                att = dataclasses.replace(att, content=await self._content(index, att, limit))
                budget -= len(att.content)
            resolved.append(att)
        return dataclasses.replace(message, attachments=tuple(resolved))

    async def _content(self, index: int, att: Attachment, limit: int) -> bytes:
        if limit < 0:
            raise AttachmentUnavailable(
                f"attachments.{index}: the message's attachments are over the limit of"
                f" {self.settings.max_message_size} bytes",
                temporary=False,
            )
        if att.url is not None:
            try:
                return await self.fetcher.fetch(att.url, limit)
            except FetchFailed as exc:
                reason = f"attachments.{index}: {exc}"
                raise AttachmentUnavailable(reason, temporary=exc.temporary) from exc
        assert att.path is not None
        return await asyncio.to_thread(read_volume_file, att.path, self.settings.volumes, limit)


def unavailable_result(exc: AttachmentUnavailable) -> SendResult:
    """The attempt's outcome when an attachment could not be had: a content failure,
    deferred when a later try may get it (network, 5xx), failed otherwise (404, refused)."""
    status = Outcome.DEFERRED if exc.temporary else Outcome.FAILED
    return SendResult(status, None, None, str(exc), failure_class=FailureClass.CONTENT)
