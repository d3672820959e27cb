"""``list_unsubscribe`` in a submission: the RFC 2369 and RFC 8058 header fields.

``{"url": "https://…", "mailto": "unsub@…", "one_click": true}`` becomes
``List-Unsubscribe: <https://…>, <mailto:unsub@…>`` and, with ``one_click``,
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. RFC 8058 §3.1: one-click needs
exactly one HTTPS URI in the field (a mail client POSTs to it); the field and the
``-Post`` field must be covered by a DKIM signature (``deliver.dkim`` signs both).
The fields are stored with the message's custom headers, so every retry sends them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from mailgate.errors import InvalidMessage

__all__ = ["ListUnsubscribeIn", "list_unsubscribe_headers"]

#: An URI inside ``<…>`` (RFC 2369 §2): visible ASCII without the brackets, the list comma
#: or white space, and short enough never to be split by folding (RFC 5322 §2.1.1).
_URI = re.compile(r"^[!-+\--;=?-~]{1,800}$")
_ADDRESS = re.compile(r"^[^\s<>,@]+@[^\s<>,@]+$")
ONE_CLICK = "List-Unsubscribe=One-Click"


class ListUnsubscribeIn(BaseModel):
    """How a recipient leaves the list: a web address, a mail address, or both."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=800, description="https:// (or http://) URL")
    mailto: str | None = Field(
        None, max_length=800, description="an address, or a mailto: URI (RFC 6068)"
    )
    one_click: bool = Field(False, description="RFC 8058 one-click (POST to the https url)")


def list_unsubscribe_headers(
    value: ListUnsubscribeIn, headers: Mapping[str, str]
) -> dict[str, str]:
    """The fields to add to ``headers``; :class:`InvalidMessage` naming what is wrong."""
    taken = {name.lower() for name in headers} & {"list-unsubscribe", "list-unsubscribe-post"}
    if taken:
        raise InvalidMessage("list_unsubscribe: give it here or in headers, not both")
    uris = [_url(value.url)] if value.url is not None else []
    if value.mailto is not None:
        uris.append(_mailto(value.mailto))
    if not uris:
        raise InvalidMessage("list_unsubscribe: url or mailto is required")
    fields = {"List-Unsubscribe": ", ".join(f"<{uri}>" for uri in uris)}
    if value.one_click:
        if value.url is None or not value.url.lower().startswith("https://"):
            raise InvalidMessage("list_unsubscribe.one_click: needs an https url (RFC 8058 §3.1)")
        fields["List-Unsubscribe-Post"] = ONE_CLICK
    return fields


def _url(url: str) -> str:
    if not url.lower().startswith(("https://", "http://")) or not _URI.fullmatch(url):
        raise InvalidMessage(
            "list_unsubscribe.url: an http(s) URL of visible ASCII without '<', '>', ','"
            " or spaces (percent-encode them)"
        )
    return url


def _mailto(mailto: str) -> str:
    uri = mailto if mailto.lower().startswith("mailto:") else f"mailto:{mailto}"
    address = uri[len("mailto:") :].partition("?")[0]
    if not _URI.fullmatch(uri) or not _ADDRESS.fullmatch(address):
        raise InvalidMessage("list_unsubscribe.mailto: an address or a mailto: URI (RFC 6068)")
    return uri
