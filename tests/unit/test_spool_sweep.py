"""What a crash leaves in the attachment directory's spool (a half-received message, a
message's staged attachments) is swept once it has not been written to for
``SPOOL_STALE`` seconds; what is in use now is left alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mailgate.ids import new_id
from mailgate.inbox.attachment_files import SPOOL_STALE, AttachmentFiles


async def _none_kept(ids: object) -> set[str]:
    return set()


async def test_stale_spool_files_and_staging_go_fresh_ones_stay(tmp_path: Path) -> None:
    files = AttachmentFiles(tmp_path, store_url="sqlite:///x", cleanup_after=3600)
    spool = files.spool_dir
    spool.mkdir(parents=True)
    old_data, new_data = spool / "data-abc_1.eml", spool / "data-def_2.eml"
    old_staged, new_staged = files.staging(new_id()), files.staging(new_id())
    for staging in (old_staged, new_staged):
        with staging.sink(0) as f:
            f.write(b"attachment")
    old_data.write_bytes(b"x")
    new_data.write_bytes(b"y")
    other = spool / "not-ours.txt"  # a name the spool never makes
    other.write_bytes(b"z")
    long_ago = time.time() - SPOOL_STALE - 60
    for path in (old_data, old_staged.folder, other):
        os.utime(path, (long_ago, long_ago))

    assert await files.sweep(_none_kept) == 2
    assert not old_data.exists() and not old_staged.folder.exists()
    assert new_data.exists() and (new_staged.folder / "0").read_bytes() == b"attachment"
    assert other.exists()
