"""mailgate.blockwise: the stdlib's results for base64, UTF-8 and JSON, made of C calls on
blocks of at most ``BLOCK``, so a worker thread doing them never holds the GIL (and the
event loop waiting for it) for a whole big value."""

from __future__ import annotations

import base64
import json
import os
import tracemalloc
from typing import Any

import pytest

from mailgate import blockwise
from mailgate.blockwise import BLOCK, b64_text, json_blocks, utf8_text


def _dumped(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@pytest.mark.parametrize("size", [0, 1, 2, 3, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 2])
def test_base64_is_the_stdlib_s(size: int) -> None:
    data = os.urandom(size)
    assert b64_text(data) == base64.b64encode(data).decode()


def test_base64_encodes_a_block_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = base64.b64encode

    def watched(data: bytes) -> bytes:
        sizes.append(len(data))
        return real(data)

    monkeypatch.setattr(base64, "b64encode", watched)
    b64_text(bytes(5 * BLOCK + 7))
    assert sizes == [BLOCK] * 5 + [7]


# a sequence cut by a block's end, an invalid byte at one, a sequence left unfinished
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"a" + "é".encode() * BLOCK,  # 2 octets each after one: every block ends in one
        b"a" + "€".encode() * BLOCK,
        b"x" * (BLOCK - 1) + b"\xff" + b"y" * BLOCK,
        b"x" * (BLOCK - 1) + "😀".encode() + b"\xe2\x82",
        b"caf\xe9 \xff\xfe" * 100_000,
    ],
)
def test_utf8_is_the_stdlib_s(data: bytes) -> None:
    assert utf8_text(data) == data.decode("utf-8", "replace")


def test_utf8_strict_raises_as_the_stdlib_does() -> None:
    assert utf8_text("é".encode() * BLOCK, "strict") == "é" * BLOCK
    with pytest.raises(UnicodeDecodeError):
        utf8_text(b"x" * (2 * BLOCK) + b"\xe9", "strict")
    with pytest.raises(UnicodeDecodeError):  # unfinished at the very end
        utf8_text(b"x" * BLOCK + b"\xe2\x82", "strict")


_BIG = 'a"\\\n\x00é€😀\u2028' * (BLOCK // 4) + "tail"


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        "",
        None,
        True,
        0,
        -1.5,
        {"a": 1, "b": [1, 2.5, None, False, "x"], "c": {"d": {}}},
        _BIG,
        {"attachments": [{"content": "QUJD" * BLOCK, "size": 3}], "raw": _BIG, "n": None},
        [[_BIG, {'k\u00e9y"': _BIG}], (1, 2)],
        {1: "an int key", None: "null", 2.5: "f"},  # dumped whole, as json converts them
    ],
)
def test_json_is_the_stdlib_s(value: Any) -> None:
    assert b"".join(json_blocks(value)) == _dumped(value)


def test_json_escapes_a_long_string_a_block_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    longest = 0
    real = blockwise._dumps

    def watched(value: Any) -> str:
        nonlocal longest
        longest = max(longest, len(value) if isinstance(value, str) else len(repr(value)))
        return real(value)

    monkeypatch.setattr(blockwise, "_dumps", watched)
    blocks = json_blocks({"attachments": [{"content": "x" * (10 * BLOCK)}], "raw": _BIG})
    assert longest <= BLOCK
    assert max(map(len, blocks)) <= 4 * BLOCK  # UTF-8 of a block's characters


def test_json_joins_small_pieces_into_blocks() -> None:
    """Each block is one write of the webhook's POST: a key, a comma or a number is not
    one of its own."""
    value = {f"X-Header-{n}": [f"value {n}", n] for n in range(40_000)}
    blocks = json_blocks(value)
    assert b"".join(blocks) == _dumped(value)
    assert len(blocks) <= len(_dumped(value)) // (BLOCK // 2) + 1  # not 200,000 pieces
    assert max(map(len, blocks)) <= BLOCK


def test_json_refuses_what_the_stdlib_refuses() -> None:
    with pytest.raises(ValueError):
        json_blocks({"n": float("nan")})
    with pytest.raises(TypeError):
        json_blocks({"b": b"bytes"})


def test_json_holds_the_blocks_and_not_every_piece_beside_them() -> None:
    """A 16 MiB string (an attachment's base64 in a capture event) is escaped a block at a
    time into blocks: what is allocated at the peak is about the blocks, not the escaped
    pieces too (which doubled the webhook's peak for a 50 MiB attachment)."""
    value = {"content": "A" * (16 << 20)}
    tracemalloc.start()
    try:
        blocks = json_blocks(value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = sum(len(block) for block in blocks)
    assert size == len(_dumped(value))
    assert peak < 1.3 * size
