"""A DATA block spooled to a file (tempfile mode) is the block held in memory: the same
octets unstuffed, the same refusals, the same line endings counted, whatever the chunks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mailgate.ingest.smtp_data import DataEnd, DataReader, Spool
from mailgate.ingest.smtp_session import Refusal

BLOCKS = [
    b"Subject: x\r\n\r\nbody\r\n",
    b"..leading dot\r\n...two dots\r\n..\r\n...\r\nmiddle.dot\r\n",  # stuffed as clients do
    b"bare\nlf\r\nbare\rcr\r\n\r\n.\n.x\r\n",
    b"a" * 1001 + b"\r\n" + b"." + b"b" * 1000 + b"\r\n",  # as long as a line may be
    b"\r\n" * 50 + b"." * 7 + b"\r\n",
]
TOO_LONG = [b"x" * 1002 + b"\r\n", b"ok\r\n" + b"y" * 5000 + b"\r\nend\r\n"]


def _feed(reader: DataReader, stream: bytes, rng: random.Random) -> DataEnd:
    pos = 0
    while True:
        step = rng.choice([1, 2, 3, 5, 8, 64, 1000])
        end = reader.feed(stream[pos : pos + step])
        pos += step
        if end is not None:
            return end
        assert pos < len(stream) + 10


def test_spooled_blocks_are_the_blocks_held_in_memory(tmp_path: Path) -> None:
    files = 0
    for seed in range(60):
        rng = random.Random(seed)
        body = b"".join(rng.choice(BLOCKS) for _ in range(rng.randint(1, 6)))
        stream = body + b".\r\nNOOP\r\n"
        held = _feed(DataReader(0), stream, random.Random(seed))
        spool = Spool(tmp_path, threshold=rng.choice([0, 1, 7, 100]))
        end = _feed(DataReader(0, spool), stream, random.Random(seed))
        assert held.content is not None and held.refusal is None and end.refusal is None
        assert end.rest == held.rest and b"NOOP\r\n".startswith(held.rest)
        if end.spooled is None:  # it all came in one chunk: nothing to spool
            assert end.content == held.content
            continue
        files += 1
        assert end.content is None
        spooled = end.spooled
        on_disk = spooled.path.read_bytes()
        assert on_disk == held.content, seed
        assert spooled.size == len(held.content)
        assert (spooled.crlf, spooled.lf, spooled.cr) == (
            held.content.count(b"\r\n"),
            held.content.count(b"\n"),
            held.content.count(b"\r"),
        )
        assert spooled.path.stat().st_mode & 0o777 == 0o600
        spooled.path.unlink()
    assert files > 40


@pytest.mark.parametrize("long", TOO_LONG)
def test_a_line_too_long_is_refused_and_its_file_removed(tmp_path: Path, long: bytes) -> None:
    stream = b"x" * 10 + b"\r\n" + long + b".\r\n"
    for seed in range(5):
        held = _feed(DataReader(0), stream, random.Random(seed))
        spooled = _feed(DataReader(0, Spool(tmp_path, threshold=4)), stream, random.Random(seed))
        assert held.refusal is spooled.refusal is Refusal.LINE_TOO_LONG
        assert list(tmp_path.iterdir()) == []


def test_too_big_is_refused_and_its_file_removed(tmp_path: Path) -> None:
    reader = DataReader(1000, Spool(tmp_path, threshold=100))
    end = _feed(reader, b"y" * 500 + b"\r\n" + b"z" * 900 + b"\r\n.\r\n", random.Random(1))
    assert end.refusal is Refusal.TOO_BIG
    assert list(tmp_path.iterdir()) == []


def test_below_the_threshold_nothing_is_written(tmp_path: Path) -> None:
    end = _feed(DataReader(0, Spool(tmp_path, threshold=10_000)), BLOCKS[0] + b".\r\n",
                random.Random(2))  # fmt: skip
    assert end.content is not None and end.spooled is None
    assert list(tmp_path.iterdir()) == []


def test_discard_removes_a_half_written_block(tmp_path: Path) -> None:
    """The client went away in the middle of DATA."""
    reader = DataReader(0, Spool(tmp_path, threshold=10))
    assert reader.feed(b"Subject: gone\r\n\r\n" + b"x" * 100) is None
    assert len(list(tmp_path.iterdir())) == 1
    reader.discard()
    assert list(tmp_path.iterdir()) == []
