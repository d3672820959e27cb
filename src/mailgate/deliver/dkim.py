"""DKIM signing (RFC 6376) of the bytes an account sends, with dkimpy.

An account that has a DKIM domain, selector and private key signs every message it
sends: ``rsa-sha256`` (RFC 8301: at least 1024-bit keys, 2048 recommended), relaxed
header and body canonicalization (RFC 6376 §3.4.2, §3.4.4: survives the re-folding
and trailing-space changes relays make). The signature covers the fields a reader
trusts (From, To, Subject, Date, Message-ID, …) and, as RFC 8058 §4 requires for
one-click unsubscribe, ``List-Unsubscribe`` and ``List-Unsubscribe-Post``. ``From``
is signed once more than it occurs (RFC 6376 §8.15), so a second From cannot be
added after signing without breaking the signature.
"""

from __future__ import annotations

import functools

from mailgate.deliver.transport import Sign
from mailgate.model import Account

__all__ = ["SIGNED_FIELDS", "check_private_key", "sign", "signer_for"]

#: Fields signed when present, lower-case (RFC 6376 §5.4.1's recommended set and RFC 8058).
SIGNED_FIELDS = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "in-reply-to",
    "references",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-mailgate-id",
)


def sign(raw: bytes, *, domain: str, selector: str, private_key: str) -> bytes:
    """``raw`` with a ``DKIM-Signature`` field prepended (RFC 6376 §3.5).

    ``private_key`` is an RSA key in PEM (PKCS#1 or PKCS#8). Raises ``ValueError`` if
    the key cannot be used; :func:`check_private_key` finds that out before sending.
    """
    import dkim  # dkimpy and dnspython: loaded only by a process that signs

    key = private_key.encode("ascii")
    try:
        signature = dkim.sign(
            raw,
            selector.encode("ascii"),
            domain.encode("ascii"),
            key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=_fields_to_sign(raw),
        )
    except dkim.DKIMException as exc:
        raise ValueError(f"DKIM signing failed: {type(exc).__name__}") from None
    return bytes(signature) + raw


def check_private_key(private_key: str) -> None:
    """``ValueError`` unless ``private_key`` can sign (checked when an account is saved).

    The error names the problem, never the key.
    """
    try:
        sign(
            b"From: a@example.com\r\n\r\n",
            domain="example.com",
            selector="s",
            private_key=private_key,
        )
    except (ValueError, UnicodeError):
        raise ValueError("the DKIM private key is not a PEM RSA private key") from None


def signer_for(account: Account) -> Sign | None:
    """The account's signer, or None when it has no complete DKIM configuration."""
    if not (account.dkim_domain and account.dkim_selector and account.dkim_private_key):
        return None
    return functools.partial(
        sign,
        domain=account.dkim_domain,
        selector=account.dkim_selector,
        private_key=account.dkim_private_key,
    )


def _fields_to_sign(raw: bytes) -> list[bytes]:
    """The present fields of :data:`SIGNED_FIELDS`, plus one more ``from`` (§8.15)."""
    header = raw.split(b"\r\n\r\n", 1)[0]
    present = {
        line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        for line in header.split(b"\r\n")
        if line[:1] not in (b" ", b"\t") and b":" in line
    }
    fields = [name.encode("ascii") for name in SIGNED_FIELDS if name in present]
    return [*fields, b"from"]
