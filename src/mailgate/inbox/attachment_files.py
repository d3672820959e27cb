"""Captured attachments as files (``smtp.attachment_storage.mode = tempfile``).

The capture handlers then get each attachment's ``path`` instead of its content in
base64. Layout: ``<temp_dir>/mailgate-<store>/<capture id>/<n>-<name>``.

* ``<store>`` is a hash of the database URL: gateways on different databases may share
  a ``temp_dir`` (by default the data directory's ``attachments``) without one sweeping
  away the other's files, since each can only ask its own inbox what is still kept.
* ``<n>-<name>``: the attachment's index, then its filename cut down to
  ``[A-Za-z0-9._-]``. A filename is other people's input, never a path: ``../../x``,
  ``/etc/passwd`` or an empty name all become plain names inside the message's
  directory, and two attachments never share a file.
* Directories are 0700 and files 0600, created with ``O_EXCL | O_NOFOLLOW``: they hold
  other people's mail.

A message's directory goes when the message is deleted (:meth:`AttachmentFiles.remove`)
and, through :meth:`AttachmentFiles.sweep`, when the inbox no longer has the message
(pruned by ``inbox.max_messages``, at once, or ``inbox.max_age_days``) or it is older
than ``cleanup_after``. The sweep touches only names this module makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from mailgate.mime import ParsedAttachment

__all__ = ["AttachmentFiles", "Existing", "Staging", "file_name"]

log = logging.getLogger(__name__)

#: which of these capture ids the inbox still keeps (:meth:`InboxStore.existing`)
Existing = Callable[[Sequence[str]], Awaitable[set[str]]]

_CAPTURE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STORE_DIR = re.compile(r"mailgate-[0-9a-f]{16}")
_SPOOLED = re.compile(r"data-[A-Za-z0-9_]+\.eml")  #: tempfile.mkstemp's names in the spool
_STAGED = re.compile(rf"att-{_CAPTURE_ID.pattern}")  #: a message's staged attachments
#: seconds after its last write a spool file counts as left behind (the client's DATA,
#: however slow, writes to it at least every read_timeout)
SPOOL_STALE = 3600.0
#: seconds at least between two sweeps that :meth:`AttachmentFiles.sweep_soon` asked for
SWEEP_GAP = 0.5
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 100  #: characters of the filename kept (its end: the extension survives)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def file_name(index: int, filename: str | None) -> str:
    """The file attachment ``index`` is written to: never a path, never a dot file."""
    name = _UNSAFE.sub("_", filename or "").strip("._")[-_MAX_NAME:]
    return f"{index}-{name or 'attachment'}"


class AttachmentFiles:
    """The attachment files of one inbox."""

    def __init__(self, temp_dir: Path, *, store_url: str, cleanup_after: float) -> None:
        self.root = temp_dir.absolute()  #: paths in the capture event are absolute
        digest = hashlib.sha256(store_url.encode()).hexdigest()[:16]
        self.dir = self.root / f"mailgate-{digest}"  #: this inbox's message directories
        self.cleanup_after = cleanup_after
        #: where the SMTP server writes big messages as they arrive (each file removed
        #: once captured; one a crash left is swept after ``SPOOL_STALE`` seconds)
        self.spool_dir = self.dir / "spool"
        self._wake = asyncio.Event()  #: :meth:`sweep_soon` was asked

    async def write(self, capture_id: str, attachments: Sequence[ParsedAttachment]) -> list[str]:
        """Write each attachment to its file (in a worker thread: never on the event
        loop); their paths, in order. Nothing is left behind when one cannot be written."""
        return await asyncio.to_thread(self._write, capture_id, attachments)

    def staging(self, capture_id: str) -> Staging:
        """Where a spooled message's attachments are written while it is parsed, before
        it is committed (:meth:`adopt` then gives them their place)."""
        if not _CAPTURE_ID.fullmatch(capture_id):
            raise ValueError(f"not a capture id: {capture_id!r}")
        return Staging(self.spool_dir / f"att-{capture_id}")

    async def adopt(
        self, capture_id: str, staging: Staging, attachments: Sequence[ParsedAttachment]
    ) -> list[str]:
        """Move a committed message's staged attachment files to where :meth:`write`
        would have written them; their paths, in order."""
        return await asyncio.to_thread(self._adopt, capture_id, staging, attachments)

    def _adopt(
        self, capture_id: str, staging: Staging, attachments: Sequence[ParsedAttachment]
    ) -> list[str]:
        if not attachments:
            staging.discard()
            return []
        self.dir.mkdir(mode=0o700, exist_ok=True)
        folder = self.dir / capture_id
        try:
            staging.folder.rename(folder)
            paths = []
            for i, a in enumerate(attachments):
                path = folder / file_name(i, a.filename)
                (folder / str(i)).rename(path)
                paths.append(str(path))
        except BaseException:
            staging.discard()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return paths

    async def remove(self, capture_id: str) -> None:
        """Remove the files of a deleted message (none written: nothing to do)."""
        if _CAPTURE_ID.fullmatch(capture_id):
            await asyncio.to_thread(shutil.rmtree, self.dir / capture_id, ignore_errors=True)

    async def sweep(self, existing: Existing, now: float | None = None) -> int:
        """Remove the directories of messages the inbox no longer has or older than
        ``cleanup_after`` (in another store's directory: only the latter); how many.

        A directory is made only after its message is committed, so a message being
        captured now is never taken for a deleted one.
        """
        now = time.time() if now is None else now
        ours, theirs = await asyncio.to_thread(self._listing)
        kept = await existing(list(ours)) if ours else set()
        old = now - self.cleanup_after
        doomed = [self.dir / i for i, made in ours.items() if i not in kept or made < old]
        doomed += [path for path, made in theirs if made < old]
        await asyncio.to_thread(_remove_all, doomed)
        stale = await asyncio.to_thread(_remove_stale, self.spool_dir, now - SPOOL_STALE)
        return len(doomed) + stale

    def sweep_soon(self) -> None:
        """Have :meth:`sweep_every` sweep now (messages left the inbox: ``max_messages``
        made room). Asks made while a sweep runs, or within ``SWEEP_GAP`` of the last,
        are one sweep: a prune on every capture must not list the directory each time."""
        self._wake.set()

    async def sweep_every(self, existing: Existing) -> None:
        """:meth:`sweep` at start, then every half ``cleanup_after`` (a minute at most)
        or when :meth:`sweep_soon` asks, ``SWEEP_GAP`` apart at least."""
        interval = min(max(self.cleanup_after / 2, 0.05), 60.0)
        while True:
            self._wake.clear()
            try:
                if gone := await self.sweep(existing):
                    log.debug("removed the attachment files of %d captured messages", gone)
            except Exception:
                log.exception("attachment file sweep failed; trying again in %g s", interval)
            await asyncio.sleep(min(SWEEP_GAP, interval))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(interval - SWEEP_GAP, 0))

    def _write(self, capture_id: str, attachments: Sequence[ParsedAttachment]) -> list[str]:
        if not _CAPTURE_ID.fullmatch(capture_id):
            raise ValueError(f"not a capture id: {capture_id!r}")
        if not attachments:
            return []
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        folder = self.dir / capture_id
        folder.mkdir(mode=0o700)
        try:
            return [_write_file(folder / file_name(i, a.filename), a.content)
                    for i, a in enumerate(attachments)]  # fmt: skip
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _listing(self) -> tuple[dict[str, float], list[tuple[Path, float]]]:
        """This inbox's message directories (id → modified time), and other stores'."""
        ours: dict[str, float] = {}
        theirs: list[tuple[Path, float]] = []
        for store in _entries(self.root, _STORE_DIR):
            for entry in _entries(Path(store.path), _CAPTURE_ID):
                try:
                    made = entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:  # removed meanwhile (its message was deleted)
                    continue
                if store.path == str(self.dir):
                    ours[entry.name] = made
                else:
                    theirs.append((Path(entry.path), made))
        return ours, theirs


class Staging:
    """A spooled message's attachment files while it is parsed: ``<n>`` for attachment
    ``n``, private, in ``att-<capture id>`` of the spool directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def sink(self, index: int) -> BinaryIO:
        """The file attachment ``index`` is decoded into (:data:`AttachmentSink`)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.folder / str(index), (_CREATE & ~os.O_WRONLY) | os.O_RDWR, 0o600)
        return os.fdopen(fd, "w+b")

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _remove_stale(folder: Path, before: float) -> int:
    """Remove the spool files and staging directories last written before ``before``:
    a crash left them."""
    gone = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as scan:
        for entry in scan:
            if entry.stat(follow_symlinks=False).st_mtime >= before:
                continue
            if _SPOOLED.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
            elif _STAGED.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                continue
            gone += 1
    return gone


def _entries(folder: Path, name: re.Pattern[str]) -> list[os.DirEntry[str]]:
    """The directories (not symlinks) in ``folder`` with a name this module makes."""
    try:
        with os.scandir(folder) as scan:
            return [e for e in scan
                    if name.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]  # fmt: skip
    except FileNotFoundError:
        return []


def _write_file(path: Path, content: bytes) -> str:
    with os.fdopen(os.open(path, _CREATE, 0o600), "wb") as f:
        f.write(content)
    return str(path)


def _remove_all(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
