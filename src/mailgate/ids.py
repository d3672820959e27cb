"""Identifiers for messages and captured mail.

IDs are UUIDv7 (RFC 9562 §5.7): the first 48 bits are the Unix time in
milliseconds, so IDs sort by creation time and listings page by ID alone.
Within one process they are also strictly increasing (RFC 9562 §6.2,
method 3: a later ID in the same millisecond is the previous one plus one),
so "newest first" is exact even for messages created in the same millisecond.

Lease owners (:func:`new_lease_owner`) name one running dispatcher.
"""

from __future__ import annotations

import os
import secrets
import threading
import time

__all__ = ["new_id", "new_lease_owner"]

_lock = threading.Lock()
_last = 0
_VERSION_VARIANT = (0x7 << 76) | (0b10 << 62)
_RAND_A = ((1 << 12) - 1) << 64
_RAND_B = (1 << 62) - 1


_RANDOM_BYTES = 10  #: per id: 80 bits read, 74 used
_random = b""  #: CSPRNG bytes read ahead (one ``os.urandom`` call per 400 ids, not per id)
_random_at = 0


def _forget_random() -> None:
    """A forked child must not reuse its parent's read-ahead: their ids would collide."""
    global _random, _random_at
    _random, _random_at = b"", 0


os.register_at_fork(after_in_child=_forget_random)


def new_id() -> str:
    global _last, _random, _random_at
    ms = time.time_ns() // 1_000_000
    value = ((ms & ((1 << 48) - 1)) << 80) | _VERSION_VARIANT
    with _lock:
        if _random_at + _RANDOM_BYTES > len(_random):
            _random, _random_at = os.urandom(4000), 0
        rand = int.from_bytes(_random[_random_at : _random_at + _RANDOM_BYTES], "big") >> 6
        _random_at += _RANDOM_BYTES
        value |= ((rand >> 62) << 64) & _RAND_A | (rand & _RAND_B)
        if value <= _last:
            value = _next_after(_last)
        _last = value
    h = f"{value:032x}"  # the canonical 8-4-4-4-12 form, without uuid.UUID's checks
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _next_after(value: int) -> int:
    """The next valid v7 value: increment the random bits, skipping version/variant."""
    rand_b = (value & _RAND_B) + 1
    rand_a = (value & _RAND_A) >> 64
    ms = value >> 80
    if rand_b > _RAND_B:
        rand_b, rand_a = 0, rand_a + 1
        if rand_a > 0xFFF:
            rand_a, ms = 0, ms + 1
    return (ms << 80) | _VERSION_VARIANT | (rand_a << 64) | rand_b


def new_lease_owner() -> str:
    """A dispatcher's lease owner: 16 random hex characters (64 bits), fixed size.

    It only has to be unique among the dispatchers sharing a queue (a collision
    among even a million is about 1 in 4 × 10⁷). ``hostname:pid:random`` grew
    with the host's name and overflowed ``messages.lease_owner`` (64 characters)
    on Kubernetes-style hosts (names up to 63 characters, FQDNs up to 253); the
    composition root logs which host and process each owner is instead.
    """
    return secrets.token_hex(8)
