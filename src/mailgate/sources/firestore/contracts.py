"""Firestore ``mail`` documents, pure: which contract, whether to send, and what to send.

Two contracts (DESIGN §3, issue 8) become one message JSON, the shape
:func:`mailgate.ingest.submission.parse_message_json` validates:

* **simple** (the hand-written agent): ``to``, ``subject``, ``message.html``; optional
  ``message.text``, ``cc``, ``bcc``, ``reply_to``, ``message.attachments``, ``type``,
  ``account``. Its bookkeeping: ``state``, ``delivery {success, timestamp, error} | null``
  and :data:`RETRY_COUNT_FIELD` (``retryCount``, top level: the tries that ended in
  ``ERROR``, so it survives ``delivery`` being rewritten).
* **extension** (Trigger Email 0.2.8, ``firestore-send-email``): ``to``, ``cc``, ``bcc``
  (a string or a list), ``toUids``/``ccUids``/``bccUids`` (the users collection's
  ``email``), ``from``, ``replyTo``, ``headers``, ``categories``, ``message {subject,
  text, html, amp, attachments, messageId}``, ``template {name, data}``, ``account``.

Where mailgate cannot carry a field it says so in ``metadata.firestore`` rather than
failing the document: ``categories`` (SendGrid-only in the extension), ``messageId``
(mailgate sets its own Message-ID; a ``Message-ID`` header is refused at submission),
``amp`` (no AMP part: listed under ``ignored``, and an AMP template is not rendered),
and uids without a user or an email (``missingUids``; the extension also skips them
and sends to the rest, failing only when nobody is left).

Templates are Handlebars, rendered in a sandbox by :mod:`.templates`.
"""

from __future__ import annotations

import base64
import binascii
import math
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from mailgate.errors import MailgateError
from mailgate.sources.firestore.templates import (
    MAX_RENDERED_CHARS,
    MAX_TAG_CHARS,
    MAX_TEMPLATE_CHARS,
    TemplateError,
    js_number,
    render,
    show,
)

__all__ = [
    "MAX_RENDERED_CHARS",
    "MAX_TAG_CHARS",
    "MAX_TEMPLATE_CHARS",
    "RETRY_COUNT_FIELD",
    "Contract",
    "ContractOptions",
    "InvalidDocument",
    "detect",
    "is_document_id",
    "needs_work",
    "require_contract",
    "template_names",
    "to_message",
    "uids_of",
]

#: simple contract: tries that ended in ``ERROR``, on the document's top level
RETRY_COUNT_FIELD = "retryCount"
_MAX_DATA_DEPTH = 64

_UID_FIELDS = ("toUids", "ccUids", "bccUids")
_EXTENSION_MESSAGE_KEYS = ("subject", "text", "html", "amp", "messageId")
_LEASED = ("PROCESSING", "RETRY")


class Contract(StrEnum):
    SIMPLE = "simple"  #: the hand-written agent: to, subject, message.html, state, delivery
    EXTENSION = "extension"  #: the Trigger Email extension 0.2.8 (firestore-send-email)


class InvalidDocument(MailgateError):
    """The document cannot become a message; ``str(exc)`` is the reason written back to it
    and names the field."""


@dataclass(frozen=True)
class ContractOptions:
    default_from: str | None = None  #: ``from`` when the document has none
    default_reply_to: str | None = None  #: ``reply_to``/``replyTo`` when it has none
    max_retry_count: int = 3  #: simple contract: tries before ERROR is final
    users_collection: str = "users"  #: where ``toUids`` … are looked up (``email``)
    templates_collection: str | None = None  #: None: documents with ``template`` are invalid


# --- which contract, and is there work ------------------------------------------------


def detect(doc: Mapping[str, Any]) -> Contract | None:
    """The contract a document follows (setting ``auto``), or None if it fits neither.

    The extension's marks are checked first: a ``message`` holding the content with no
    top-level ``subject``, a ``template``, uids, or ``delivery.state``. The simple
    contract's: a top-level ``subject`` with ``message.html``, a ``state``, or
    ``delivery.success``.
    """
    message, delivery = doc.get("message"), doc.get("delivery")
    if (
        (
            isinstance(message, Mapping)
            and any(k in message for k in _EXTENSION_MESSAGE_KEYS)
            and "subject" not in doc
        )
        or doc.get("template") is not None
        or any(doc.get(k) is not None for k in _UID_FIELDS)
        or (isinstance(delivery, Mapping) and "state" in delivery)
    ):
        return Contract.EXTENSION
    if (
        ("subject" in doc and isinstance(message, Mapping) and "html" in message)
        or doc.get("state") is not None
        or (isinstance(delivery, Mapping) and "success" in delivery)
    ):
        return Contract.SIMPLE
    return None


def require_contract(doc: Mapping[str, Any]) -> Contract:
    """:func:`detect`, or :class:`InvalidDocument` saying what either contract needs."""
    contract = detect(doc)
    if contract is None:
        raise InvalidDocument(
            "the document fits neither contract: the simple one needs to, subject and"
            " message.html; the Trigger Email one needs to/cc/bcc or toUids/ccUids/bccUids"
            " and message {subject, text or html} or template {name, data}"
        )
    return contract


def needs_work(
    doc: Mapping[str, Any], contract: Contract, *, now: datetime, max_retry_count: int
) -> bool:
    """Whether the document should be (re)sent now, judged from its fields alone.

    simple: ``delivery`` missing or null, or ``state == "ERROR"`` with fewer than
    ``max_retry_count`` tries counted in :data:`RETRY_COUNT_FIELD` (missing counts 0);
    never when ``delivery.success`` is true.

    extension: no ``delivery`` (or one without a ``state``), ``PENDING``, or
    ``PROCESSING``/``RETRY`` whose ``leaseExpireTime`` is before ``now`` or missing (an
    abandoned lease; the extension clears the lease when it finishes, so a ``RETRY`` a
    user sets by hand has none); never ``SUCCESS`` or ``ERROR``.
    """
    delivery = doc.get("delivery")
    if contract is Contract.SIMPLE:
        if isinstance(delivery, Mapping) and delivery.get("success") is True:
            return False
        if delivery is None:
            return True
        return doc.get("state") == "ERROR" and _count(doc.get(RETRY_COUNT_FIELD)) < max_retry_count
    if delivery is None:
        return True
    if not isinstance(delivery, Mapping):
        return False
    state = delivery.get("state")
    if state is None or state == "PENDING":
        return True
    if state in _LEASED:
        lease = delivery.get("leaseExpireTime")
        return not isinstance(lease, datetime) or _utc(lease) < _utc(now)
    return False


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(int(value), 0)


def _utc(moment: datetime) -> datetime:
    """Firestore gives aware UTC times; a naive one (a test, a hand-made value) is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- what the reader must fetch -------------------------------------------------------


def uids_of(doc: Mapping[str, Any]) -> set[str]:
    """Every user id in ``toUids``, ``ccUids`` and ``bccUids`` that can be looked up
    (malformed entries are left to :func:`to_message` to report)."""
    found: set[str] = set()
    for key in _UID_FIELDS:
        value = doc.get(key)
        if isinstance(value, list):
            found.update(u for u in value if isinstance(u, str) and is_document_id(u))
    return found


def template_names(doc: Mapping[str, Any]) -> set[str]:
    """The template the document names, if it names one that can be looked up."""
    template = doc.get("template")
    name = template.get("name") if isinstance(template, Mapping) else None
    return {name} if isinstance(name, str) and is_document_id(name) else set()


def is_document_id(value: str) -> bool:
    """A Firestore document id: 1–1500 bytes of UTF-8, no ``/``, not ``.``, ``..`` or
    ``__…__``."""
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return False
    return (
        0 < size <= 1500
        and "/" not in value
        and value not in (".", "..")
        and not (value.startswith("__") and value.endswith("__"))
    )


# --- the message ----------------------------------------------------------------------


def to_message(
    doc: Mapping[str, Any],
    contract: Contract,
    *,
    path: str,
    options: ContractOptions,
    users: Mapping[str, Mapping[str, Any]] = {},
    templates: Mapping[str, Mapping[str, Any]] = {},
) -> dict[str, Any]:
    """The message JSON for ``parse_message_json``, without ``id`` (the caller's key).

    ``users``: uid → user document, ``templates``: name → template document (both as
    :class:`~mailgate.sources.firestore.reader.DocumentReader` reads them). Raises only
    :class:`InvalidDocument`, whatever the field values are.
    """
    info: dict[str, Any] = {"path": path, "contract": contract.value}
    if contract is Contract.SIMPLE:
        item = _simple(doc, options, info)
    else:
        item = _extension(doc, options, users, templates, info)
    account = doc.get("account")
    if account is not None:
        item["account"] = _text(account, "account", nonempty=True)
    item["metadata"] = {"firestore": info}
    return item


def _simple(
    doc: Mapping[str, Any], options: ContractOptions, info: dict[str, Any]
) -> dict[str, Any]:
    message = _map(doc.get("message"), "message", required=True)
    to = _addresses(doc.get("to"), "to")
    if not to:
        raise InvalidDocument("to: required (an address or a list of addresses)")
    html = _text(message.get("html"), "message.html", nonempty=True)
    kind = doc.get("type")
    if kind is not None:
        info["type"] = _text(kind, "type")
    ignored: list[str] = []
    item = {
        "to": to,
        "cc": _addresses(doc.get("cc"), "cc"),
        "bcc": _addresses(doc.get("bcc"), "bcc"),
        "subject": _text(doc.get("subject"), "subject"),
        "html": html,
        "attachments": _attachments(message.get("attachments"), "message.attachments", ignored),
    }
    text = _optional_text(message.get("text"), "message.text")
    if text:
        item["text"] = text
    _sender(item, None, _optional_text(doc.get("reply_to"), "reply_to"), options)
    if ignored:
        info["ignored"] = ignored
    return item


def _extension(
    doc: Mapping[str, Any],
    options: ContractOptions,
    users: Mapping[str, Mapping[str, Any]],
    templates: Mapping[str, Mapping[str, Any]],
    info: dict[str, Any],
) -> dict[str, Any]:
    templated = doc.get("template") is not None
    message = _map(doc.get("message"), "message", required=not templated)
    if templated:
        message = _apply_template(doc.get("template"), message, options, templates)
    subject = message.get("subject")
    subject = _text("" if subject is None and templated else subject, "message.subject")
    text = _optional_text(message.get("text"), "message.text")
    html = _optional_text(message.get("html"), "message.html")
    if not text and not html:
        raise InvalidDocument("message: text or html is required (both are missing or empty)")
    ignored: list[str] = []
    item: dict[str, Any] = {
        **_recipients(doc, users, options, info),
        "subject": subject,
        "headers": _headers(doc.get("headers")),
        "attachments": _attachments(message.get("attachments"), "message.attachments", ignored),
    }
    item.update({k: v for k, v in (("text", text), ("html", html)) if v})
    _sender(
        item,
        _optional_text(doc.get("from"), "from"),
        _optional_text(doc.get("replyTo"), "replyTo"),
        options,
    )
    _extension_info(doc, message, info, ignored)
    return item


def _extension_info(
    doc: Mapping[str, Any], message: Mapping[str, Any], info: dict[str, Any], ignored: list[str]
) -> None:
    categories = doc.get("categories")
    if categories is not None:
        info["categories"] = _string_list(categories, "categories")
    message_id = message.get("messageId")
    if message_id is not None:
        info["messageId"] = _text(message_id, "message.messageId")
    if message.get("amp"):
        ignored.insert(0, "message.amp")
    if ignored:
        info["ignored"] = ignored


def _sender(
    item: dict[str, Any], sender: str | None, reply_to: str | None, options: ContractOptions
) -> None:
    """An empty ``from``/``replyTo`` falls back to the default, as ``||`` does in the
    extension."""
    sender = sender or options.default_from
    reply_to = reply_to or options.default_reply_to
    if sender:
        item["from"] = sender
    if reply_to:
        item["reply_to"] = reply_to


def _recipients(
    doc: Mapping[str, Any],
    users: Mapping[str, Mapping[str, Any]],
    options: ContractOptions,
    info: dict[str, Any],
) -> dict[str, list[str]]:
    """to/cc/bcc plus the emails of their uids, in the extension's order. A uid with no
    user document or no ``email`` is skipped and listed in ``missingUids``."""
    lists = {k: _addresses(doc.get(k), k) for k in ("to", "cc", "bcc")}
    missing: dict[str, None] = {}  # ordered, each uid once
    for key, field in zip(_UID_FIELDS, ("to", "cc", "bcc"), strict=True):
        for uid in _uids(doc.get(key), key):
            email = _email(users.get(uid))
            if email:
                lists[field].append(email)
            else:
                missing[uid] = None
    if missing:
        info["missingUids"] = list(missing)[:100]
    if not lists["to"]:
        raise InvalidDocument(_no_to(lists, list(missing)[:10], options))
    return lists


def _no_to(lists: Mapping[str, list[str]], missing: list[str], options: ContractOptions) -> str:
    if lists["cc"] or lists["bcc"]:
        reason = (
            "to: no recipient; mailgate needs at least one To address (cc/bcc alone is not sent)"
        )
    else:
        reason = "no recipients: to, cc, bcc and their uids give no address"
    if missing:
        shown = ", ".join(show(u) for u in missing)
        reason += f"; uid(s) {shown} have no document with an email in {options.users_collection!r}"
    return reason


def _email(user: object) -> str | None:
    email = user.get("email") if isinstance(user, Mapping) else None
    return email.strip() or None if isinstance(email, str) else None


def _uids(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidDocument(f"{where}: must be a list of user ids (got {_kind(value)})")
    for i, uid in enumerate(value):
        if not isinstance(uid, str):
            raise InvalidDocument(f"{where}[{i}]: must be a user id string (got {_kind(uid)})")
        if not is_document_id(uid):
            raise InvalidDocument(f"{where}[{i}]: {show(uid)} is not a user id (a document id)")
    return list(value)


def _headers(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidDocument(f"headers: must be a map of header name to text (got {_kind(value)})")
    out = {}
    for name, header in value.items():
        where = f"headers.{str(name)[:60]}"
        if isinstance(header, int) and not isinstance(header, bool) and abs(header) >= 1e21:
            raise InvalidDocument(f"{where}: the number is too large for a header")
        if isinstance(header, int | float) and not isinstance(header, bool):
            header = js_number(header)
        elif not isinstance(header, str):
            raise InvalidDocument(f"{where}: must be a string (got {_kind(header)})")
        out[str(name)] = header
    return out


# --- field readers --------------------------------------------------------------------


def _kind(value: object) -> str:
    """A value's type in Firestore's words, for reasons."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, datetime):
        return "a timestamp"
    if isinstance(value, bytes | bytearray):
        return "bytes"
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _map(value: object, where: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidDocument(f"{where}: must be a map (got {_kind(value)})")
    return value


def _text(value: object, where: str, *, nonempty: bool = False) -> str:
    if value is None:
        raise InvalidDocument(f"{where}: required")
    if not isinstance(value, str):
        raise InvalidDocument(f"{where}: must be a string (got {_kind(value)})")
    if nonempty and not value.strip():
        raise InvalidDocument(f"{where}: must not be empty")
    return value


def _optional_text(value: object, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidDocument(f"{where}: must be a list of strings (got {_kind(value)})")
    return [_text(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _addresses(value: object, where: str) -> list[str]:
    """A string or a list of strings; empty entries are dropped (apps write ``cc: ""``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if not isinstance(value, list):
        raise InvalidDocument(
            f"{where}: must be a string or a list of strings (got {_kind(value)})"
        )
    return [a for a in _string_list(value, where) if a.strip()]


# --- attachments (nodemailer's keys) --------------------------------------------------

_ENCODINGS = {
    "utf8": "utf8",
    "utf16le": "utf16le",
    "ucs2": "utf16le",
    "latin1": "latin1",
    "binary": "latin1",
    "ascii": "latin1",  # Node encodes "ascii" strings as latin1
    "base64": "base64",
    "base64url": "base64",
    "hex": "hex",
}


def _attachments(value: object, where: str, ignored: list[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidDocument(f"{where}: must be a list of attachments (got {_kind(value)})")
    return [_attachment(a, f"{where}[{i}]", ignored) for i, a in enumerate(value)]


def _attachment(value: object, where: str, ignored: list[str]) -> dict[str, Any]:
    """nodemailer's ``filename``, ``content`` (+ ``encoding``), ``path``/``href`` (an
    http(s) or ``data:`` URL; never a local file), ``contentType``, ``cid``,
    ``contentDisposition``; mailgate's own ``content_type`` and ``url`` are read too."""
    att = _map(value, where, required=True)
    if att.get("raw") is not None:
        raise InvalidDocument(
            f"{where}.raw: a raw MIME part is not supported; give content or path"
        )
    given = [k for k in ("content", "path", "href", "url") if att.get(k) is not None]
    if len(given) != 1:
        raise InvalidDocument(f"{where}: give exactly one of content, path or href")
    filename = _optional_text(att.get("filename"), f"{where}.filename")
    type_key = "contentType" if att.get("contentType") is not None else "content_type"
    content_type = _optional_text(att.get(type_key), f"{where}.{type_key}")
    out: dict[str, Any] = {}
    if given[0] == "content":
        data: bytes | None = _content(att["content"], att.get("encoding"), where)
    else:
        link = _text(att[given[0]], f"{where}.{given[0]}", nonempty=True)
        data, link_type = _link(link, f"{where}.{given[0]}")
        content_type = content_type or link_type
        filename = filename or (None if data is not None else _url_name(link))
        if data is None:
            out["url"] = link
    filename = filename or "attachment"
    out["filename"] = filename
    out["content_type"] = _media_type(content_type, filename)
    if data is not None:
        out["content"] = base64.b64encode(data).decode("ascii")
    cid = _optional_text(att.get("cid"), f"{where}.cid")
    if cid:
        out["cid"] = cid
    _disposition(att.get("contentDisposition"), cid, where, ignored)
    return out


def _disposition(value: object, cid: str | None, where: str, ignored: list[str]) -> None:
    """mailgate makes a part inline when it has a ``cid``: ``inline`` without one is
    noted as ignored; anything but attachment/inline is refused."""
    if value is None:
        return
    disposition = _text(value, f"{where}.contentDisposition").strip().lower()
    if disposition not in ("attachment", "inline"):
        raise InvalidDocument(f"{where}.contentDisposition: must be attachment or inline")
    if (disposition == "inline") != bool(cid):
        ignored.append(f"{where}.contentDisposition")


def _content(value: object, encoding: object, where: str) -> bytes:
    if isinstance(value, bytes | bytearray):  # a Firestore Bytes field
        return bytes(value)
    if not isinstance(value, str):
        raise InvalidDocument(f"{where}.content: must be a string or bytes (got {_kind(value)})")
    name = "utf8" if encoding is None else _text(encoding, f"{where}.encoding")
    codec = _ENCODINGS.get(name.strip().lower().replace("-", ""))
    if codec is None:
        raise InvalidDocument(
            f"{where}.encoding: {show(name)} is not one of base64, hex, utf-8, utf-16le, latin1"
        )
    try:
        return _decode(value, codec)
    except (ValueError, binascii.Error):  # UnicodeError is a ValueError
        raise InvalidDocument(f"{where}.content: not valid {show(name.strip().lower())}") from None


def _decode(value: str, codec: str) -> bytes:
    if codec == "utf8":
        return value.encode()
    if codec == "utf16le":
        return value.encode("utf-16-le")
    if codec == "latin1":
        return bytes(ord(c) & 0xFF for c in value)  # as Node's Buffer.from(s, "latin1")
    if codec == "hex":
        return bytes.fromhex(value)
    return _base64(value)


def _base64(value: str) -> bytes:
    """Standard or URL-safe alphabet, whitespace and missing padding allowed (as Node)."""
    compact = "".join(value.split()).translate(str.maketrans("-_", "+/")).rstrip("=")
    return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)


def _link(link: str, where: str) -> tuple[bytes | None, str | None]:
    """``(content, type)`` of a ``data:`` URL, ``(None, None)`` for an http(s) URL; the
    fetch and its address checks happen at delivery, as for ``url`` attachments."""
    try:
        scheme = urlsplit(link).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme in ("http", "https"):
        return None, None
    if scheme == "data":
        return _data_url(link, where)
    raise InvalidDocument(
        f"{where}: {show(link)} is not an http(s) or data: URL; local files cannot be"
        " attached (give the content, or a URL)"
    )


def _data_url(link: str, where: str) -> tuple[bytes, str | None]:
    """RFC 2397: ``data:[<mediatype>][;base64],<data>``."""
    header, comma, payload = link[5:].partition(",")
    if not comma:
        raise InvalidDocument(f"{where}: a data: URL needs a comma before its data")
    params = header.split(";")
    try:
        if params[-1].strip().lower() == "base64":
            return _base64(unquote(payload)), params[0].strip() or None
        return unquote_to_bytes(payload), params[0].strip() or None
    except (ValueError, binascii.Error):
        raise InvalidDocument(f"{where}: the data: URL's content is not valid") from None


def _url_name(link: str) -> str | None:
    try:
        return PurePosixPath(unquote(urlsplit(link).path)).name or None
    except ValueError:
        return None


def _media_type(value: str | None, filename: str) -> str:
    """``type/subtype`` without parameters (mailgate writes those itself); guessed from
    the file name when not given, as nodemailer does."""
    media = (value or "").split(";")[0].strip().lower()
    return media or mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"


# --- templates ------------------------------------------------------------------------

#: part → HTML-escaped? (the extension compiles subject and text with ``noEscape``)
_PARTS = (("subject", False), ("html", True), ("text", False))


def _apply_template(
    value: object,
    message: Mapping[str, Any],
    options: ContractOptions,
    templates: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """``message`` with the template's rendered parts put over it (the extension's
    ``Object.assign``): a part the template has replaces the message's, even when it
    renders empty; the template's ``attachments`` replace the message's."""
    template = _map(value, "template", required=True)
    name = _text(template.get("name"), "template.name", nonempty=True)
    if options.templates_collection is None:
        raise InvalidDocument(
            "template: no templates collection is configured (TEMPLATES_COLLECTION)"
        )
    source = templates.get(name)
    if not isinstance(source, Mapping) or _truthy(source.get("partial")):
        raise InvalidDocument(
            f"template.name: no template {show(name)} in {options.templates_collection!r}"
        )
    data = template.get("data")
    context = _plain({} if data is None else _map(data, "template.data", required=True), 0)
    partials = {
        n: p for n, p in templates.items() if isinstance(p, Mapping) and _truthy(p.get("partial"))
    }
    merged = dict(message)
    for part, escape in _PARTS:
        text = source.get(part)
        if not _truthy(text):
            continue
        where = f"template {show(name)} {part}"
        sources = {n: p[part] for n, p in partials.items() if _is_text(p.get(part))}
        merged[part] = _render(_text(text, where), context, sources, escape, False, where)
    if _truthy(source.get("attachments")):
        merged["attachments"] = _template_attachments(source["attachments"], context, name)
    if _truthy(source.get("amp")):
        merged["amp"] = source["amp"]  # not rendered: mailgate sends no AMP part
    return merged


def _template_attachments(value: object, context: object, name: str) -> list[Any]:
    """Each string of each attachment rendered (strict: an unknown variable is an
    error). The extension renders the JSON text of the list, HTML-escaped, and parses
    it back; rendering the strings themselves cannot produce broken JSON."""
    where = f"template {show(name)} attachments"
    if not isinstance(value, list):
        raise InvalidDocument(f"{where}: must be a list (got {_kind(value)})")
    rendered: list[Any] = []
    for i, att in enumerate(value):
        if not isinstance(att, Mapping):
            rendered.append(att)  # reported with its index by _attachments
            continue
        rendered.append(
            {
                k: _render(v, context, {}, False, True, f"{where}[{i}].{k}")
                if isinstance(v, str)
                else v
                for k, v in att.items()
            }
        )
    return rendered


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _truthy(value: object) -> bool:
    """JavaScript's truthiness, which the extension's checks use."""
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value) if value is None or isinstance(value, bool | int | float | str) else True


def _plain(value: object, depth: int) -> Any:
    """Template data as plain JSON-like values: what the sandboxed lookup can walk.
    Timestamps become ISO 8601 text, bytes base64; other Firestore types (references,
    geo points) render as nothing."""
    if depth > _MAX_DATA_DEPTH:
        raise InvalidDocument(f"template.data: nested deeper than {_MAX_DATA_DEPTH} levels")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime):
        return _utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    return None


def _render(
    source: str,
    context: object,
    partials: Mapping[str, str],
    escape: bool,
    strict: bool,
    where: str,
) -> str:
    """One template rendered, or InvalidDocument saying where and why not."""
    try:
        return render(source, context, partials, escape=escape, strict=strict)
    except TemplateError as exc:
        raise InvalidDocument(f"{where}: {exc}") from None
