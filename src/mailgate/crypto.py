"""Secrets at rest: account passwords and tokens are stored encrypted with Fernet.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) authenticates what it
decrypts, so a tampered or foreign ciphertext is an error, never garbage. The key
comes from ``MAILGATE_SECRET_KEY``: one or more Fernet keys separated by commas.
The first encrypts; every one decrypts (``MultiFernet``), which is how keys are
rotated: set ``new,old``, run ``mailgate secrets rotate`` (re-encrypts every stored
secret under ``new``), then drop ``old``.

Named ``crypto`` so it never shadows the standard library's ``secrets``. ``cryptography``
is imported on the first encryption or decryption, not at start: a process that never
touches a secret (``mailgate dev`` capturing mail) does without its ~10 MiB.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mailgate.errors import ConfigError, Conflict

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = [
    "KEY_HOWTO",
    "NoSecretKey",
    "SecretBox",
    "generate_key",
    "load_or_create_key_file",
    "parse_keys",
]

#: What to tell someone who has no key yet (shown by every "no key" error).
KEY_HOWTO = (
    "set MAILGATE_SECRET_KEY to a Fernet key: make one with `mailgate secrets generate` "
    "or python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


class NoSecretKey(Conflict):
    """A secret was to be stored or read, but no ``MAILGATE_SECRET_KEY`` is configured.

    A :class:`~mailgate.errors.Conflict`: the request is fine, the server is not set
    up for it (HTTP 409 with :data:`KEY_HOWTO` in the reason).
    """

    def __init__(self, what: str = "store a password or token") -> None:
        super().__init__(f"cannot {what} without a secret key: {KEY_HOWTO}")


def generate_key() -> str:
    """A fresh random Fernet key (32 bytes, URL-safe base64; ``Fernet.generate_key``)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _is_key(key: str) -> bool:
    """What ``Fernet(key)`` accepts: URL-safe base64 of exactly 32 bytes."""
    try:
        return len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32
    except (binascii.Error, ValueError):
        return False


def parse_keys(value: str) -> list[str]:
    """Comma-separated keys, each checked; a bad key is a :class:`ConfigError`
    that never echoes the value."""
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        raise ConfigError(f"MAILGATE_SECRET_KEY is empty: {KEY_HOWTO}")
    for position, key in enumerate(keys, 1):
        if not _is_key(key):
            raise ConfigError(
                f"MAILGATE_SECRET_KEY: key {position} is not a Fernet key "
                f"(32 bytes, URL-safe base64): {KEY_HOWTO}"
            ) from None
    return keys


class SecretBox:
    """Encrypts with the first key, decrypts with any; values never appear in errors."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError(f"no secret key: {KEY_HOWTO}")
        self._keys = tuple(keys)

    @functools.cached_property
    def _fernet(self) -> MultiFernet:
        from cryptography.fernet import Fernet, MultiFernet

        return MultiFernet([Fernet(k) for k in self._keys])

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        return cls(parse_keys(value))

    def __repr__(self) -> str:
        return "SecretBox(<keys hidden>)"

    def encrypt(self, plain: str) -> bytes:
        return self._fernet.encrypt(plain.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken:
            raise ConfigError(
                "a stored secret cannot be decrypted with MAILGATE_SECRET_KEY: "
                "is it the key the secret was stored with (or listed after the new one)?"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """The same secret encrypted under the first key."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise ConfigError(
                "a stored secret cannot be decrypted with any key in MAILGATE_SECRET_KEY: "
                "list the new key first and the old one after it"
            ) from None


def load_or_create_key_file(path: Path) -> str:
    """The key kept in ``path``; on first use a new one, written with mode 0600.

    ``mailgate dev`` keeps its key beside its database so captured accounts keep
    working across restarts without the developer setting anything.
    """
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(key + "\n")
    return key
