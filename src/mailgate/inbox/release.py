"""Release: send a copy of a captured message on, through the delivery engine.

As Mailpit releases a message (``POST /api/v1/message/{id}/release``): the copy gets a
new ``Date:`` and ``Message-ID:`` and loses its ``Bcc:`` fields, and its envelope
sender is the ``Sender:`` address, else the ``From:`` address. Unlike Mailpit it is
not sent during the request: it is queued like any submitted message (source
``release``) and delivered by the dispatcher, with retries, attempts and reports —
through the account or relay routing picks; ``mailgate dev`` sends it through the
relay when one is set (``MAILGATE_RELAY_URL``) and refuses otherwise.

Recipients are checked against ``inbox.release_allow`` and ``inbox.release_deny``
(domains; each also covers its subdomains): with an allow-list, a recipient whose
domain is not on it is never sent to, and the whole release is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr

from mailgate.clock import Clock
from mailgate.deliver.router import RELEASED
from mailgate.errors import InvalidInput
from mailgate.ids import new_id
from mailgate.ingest.submission import Submissions
from mailgate.mime.headers import without_fields
from mailgate.model import Message
from mailgate.store import CapturedRecord

__all__ = ["Release", "ReleasePolicy", "ReleaseRefused"]

_REPLACED = {b"bcc", b"date", b"message-id"}
#: one bare address: no space, no specials, and no control character (a NUL was relayed
#: as the store's U+FFFD in ``RCPT TO``)
_ADDRESS = re.compile(
    r"^[^@\s<>()\[\],;:\"\x00-\x1f\x7f-\x9f]+@[^@\s<>()\[\],;:\"\x00-\x1f\x7f-\x9f]+$"
)

#: not in an envelope address: a control character, or U+FFFD, what a NUL or bytes that
#: were not text became when the message was captured (it went out in MAIL FROM)
_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ufffd]")


class ReleaseRefused(InvalidInput):
    """The release cannot be done as asked; ``str(exc)`` says why (Mailpit's wording)."""


@dataclass(frozen=True, slots=True)
class ReleasePolicy:
    """Which recipient domains a release may go to."""

    allow: tuple[str, ...] = ()  #: only these domains (and their subdomains); empty: any
    deny: tuple[str, ...] = ()  #: never these domains (and their subdomains)

    def refusal(self, addresses: Sequence[str]) -> str | None:
        """Why ``addresses`` (bare) may not be released to, or None."""
        not_allowed = [a for a in addresses if self.allow and not _listed(a, self.allow)]
        if not_allowed:
            return f"Failed: {_plural(not_allowed)} do not match the allowlist: " + ", ".join(
                not_allowed
            )
        blocked = [a for a in addresses if _listed(a, self.deny)]
        if blocked:
            return f"Failed: {_plural(blocked)} found on blocklist: " + ", ".join(blocked)
        return None


def _listed(address: str, domains: Sequence[str]) -> bool:
    domain = address.rpartition("@")[2].lower().rstrip(".")
    for entry in domains:
        entry = entry.lower().lstrip("*").lstrip(".").rstrip(".")
        if domain == entry or domain.endswith("." + entry):
            return True
    return False


def _plural(items: Sequence[str]) -> str:
    return "Address" if len(items) == 1 else "Addresses"


class Release:
    def __init__(
        self,
        submissions: Submissions,
        clock: Clock,
        *,
        policy: ReleasePolicy = ReleasePolicy(),
        enabled: bool = True,
        hostname: str = "mailgate",
    ) -> None:
        """``enabled``: whether released mail can leave at all (``mailgate dev`` without
        a relay cannot send it anywhere but back into the inbox)."""
        self.submissions = submissions
        self.clock = clock
        self.policy = policy
        self.enabled = enabled
        self.hostname = hostname

    async def release(self, record: CapturedRecord, raw: bytes, to: Sequence[str]) -> str:
        """Queue a copy of ``record`` (its ``raw`` bytes) to ``to``; the queued message's
        id. ``ReleaseRefused`` when it cannot be (nothing is queued then)."""
        addresses = checked_addresses(to)
        refusal = self.policy.refusal(addresses)
        if refusal is not None:
            raise ReleaseRefused(refusal)
        if not addresses:
            raise ReleaseRefused("No valid addresses found")
        if not self.enabled:
            raise ReleaseRefused(
                "Release is not configured: mailgate dev sends released mail only through"
                " a relay (MAILGATE_RELAY_URL)"
            )
        sender = _envelope_sender(record)
        if not sender:
            raise ReleaseRefused("No From header found")
        now = self.clock.now()
        message_id = make_msgid(domain=self.hostname)
        message = Message(
            id=new_id(),
            sender=record.from_header or sender,
            to=tuple(addresses),
            subject=record.subject,
            message_id=message_id,
            created_at=now,
            tenant=record.tenant,
            metadata={"released_from": record.id},
            source=RELEASED,
            raw=rewritten(raw, date=format_datetime(now), message_id=message_id),
            return_path=sender,
        )
        refused = await self.submissions.queue_one(message)
        if refused is not None:
            raise ReleaseRefused(refused)
        return message.id


def checked_addresses(given: Sequence[str]) -> list[str]:
    """The bare addresses of ``given`` (``a@b`` or ``Name <a@b>``), in order, once each;
    ``ReleaseRefused`` naming the first that is not one (``a@b, c@d`` is two: parseaddr
    read the first and dropped the second)."""
    found: dict[str, None] = {}
    for value in given:
        _, address = parseaddr(value) if "\r" not in value and "\n" not in value else ("", "")
        if not _ADDRESS.match(address) or len(getaddresses([value])) != 1:
            raise ReleaseRefused(f"Invalid email address: {value}")
        found.setdefault(address, None)
    return list(found)


def _envelope_sender(record: CapturedRecord) -> str:
    for name in ("Sender", "From"):
        values = [v for k, v in record.headers.items() if k.lower() == name.lower()]
        flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
        for _, address in getaddresses(flat):
            if "@" in address and not _UNSENDABLE.search(address):
                return address
    return record.mail_from


def rewritten(raw: bytes, *, date: str, message_id: str) -> bytes:
    """``raw`` with a new ``Date:`` and ``Message-ID:`` on top and without its ``Bcc:``,
    ``Date:`` and ``Message-ID:`` fields; the body byte for byte."""
    kept, body, _ = without_fields(raw, _REPLACED)
    added = f"Date: {date}\r\nMessage-ID: {message_id}\r\n".encode("ascii")
    return added + kept + body
