"""Mailpit's ``link-check`` and ``html-check`` answers, for the subset mailgate does.

``link-check`` finds the links of the HTML (``a[href]``, ``img[src]``,
``link[href]``) and the text, once each, and asks each http(s) one with ``HEAD``
(``GET`` when HEAD is not allowed), following redirects only with ``?follow=true``.
As Mailpit without ``--allow-internal-http-requests``, a link to a loopback, private
or link-local address is not requested (``inbox.link_check_private`` allows it): it is
reported as an error, StatusCode 0.

``html-check`` reports, in Mailpit's shape, which of a few HTML elements and CSS
features with poor e-mail client support a message uses (:data:`FEATURES`): each
found one is a warning with the number of matches and its caniemail.com page. It
carries no per-client support data: ``Platforms`` is empty, ``Results`` are empty and
the percentages are 0.
"""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from http import HTTPStatus
from typing import Any

import httpx

from mailgate.deliver.fetch import pinned_request
from mailgate.deliver.ssrf import AddressRefused, NetGuard, UnresolvableHost
from mailgate.inbox.html_text import MAX_HTML_CHARS, defuse

__all__ = ["FEATURES", "find_links", "html_check", "link_check"]

MAX_LINKS = 100  #: links checked per message
_TIMEOUT = 5.0
_REDIRECTS = 5
_URL = re.compile(r"https?://[^\s<>\"'()\[\]]+", re.IGNORECASE)


_LINK_ATTRS = {"a": "href", "img": "src", "link": "href"}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.nodes = 0
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []  #: the content of each ``<style>`` element
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.nodes += 1
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        self._in_style = tag == "style"  # its content is all text until </style>
        wanted = _LINK_ATTRS.get(tag)
        if wanted and values.get(wanted):
            self.links.append(values[wanted].strip())

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def _parsed(html: str) -> _Links:
    """``html`` parsed in time linear in its length (see :mod:`mailgate.inbox.html_text`:
    html.parser rescans the rest for every ``<`` it cannot close), at most its first
    :data:`MAX_HTML_CHARS`."""
    parser = _Links()
    parser.feed(defuse(html[:MAX_HTML_CHARS]))
    parser.close()
    return parser


def find_links(text: str | None, html: str | None) -> list[str]:
    """The http(s) links of the HTML, then of the text, once each."""
    found = _parsed(html).links if html else []
    found += _URL.findall(text or "")
    web = (link for link in found if link.lower().startswith(("http://", "https://")))
    return list(dict.fromkeys(link.rstrip(".,;") for link in web))[:MAX_LINKS]


async def link_check(
    text: str | None, html: str | None, *, follow: bool, guard: NetGuard
) -> dict[str, Any]:
    """``{"Errors", "Links": [{"URL", "StatusCode", "Status"}]}``; the HTML is read in a
    worker thread (a megabyte of it held the event loop for a second)."""
    links = await asyncio.to_thread(find_links, text, html)
    async with httpx.AsyncClient(timeout=_TIMEOUT, verify=True) as client:
        checked = await asyncio.gather(*(_check(client, guard, url, follow) for url in links))
    return {
        "Errors": sum(1 for c in checked if not 0 < c["StatusCode"] < 400),
        "Links": checked,
    }


async def _check(
    client: httpx.AsyncClient, guard: NetGuard, url: str, follow: bool
) -> dict[str, Any]:
    code, status = 0, ""
    try:
        target = httpx.URL(url)
        for _ in range(_REDIRECTS + 1):
            code, location = await _status(client, guard, target, "HEAD")
            if code in (405, 501):
                code, location = await _status(client, guard, target, "GET")
            if not (follow and 300 <= code < 400 and location):
                break
            target = target.join(location)
        status = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else ""
    except (AddressRefused, UnresolvableHost) as exc:
        code, status = 0, str(exc)
    except (httpx.HTTPError, ValueError) as exc:
        code, status = 0, str(exc) or type(exc).__name__
    return {"URL": url, "StatusCode": code, "Status": status}


async def _status(
    client: httpx.AsyncClient, guard: NetGuard, url: httpx.URL, method: str
) -> tuple[int, str | None]:
    """The status code and the ``Location`` of one request, the address checked first."""
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"not an http(s) link: {url}")
    request = await pinned_request(client, guard, method, url)
    response = await client.send(request, follow_redirects=False)
    await response.aclose()
    return response.status_code, response.headers.get("location")


#: (slug, title, category, how it is found): elements by tag, CSS by a pattern in
#: ``style`` attributes and ``<style>`` elements
FEATURES: tuple[tuple[str, str, str, str], ...] = (
    ("html-form", "<form> element", "html", "form"),
    ("html-video", "<video> element", "html", "video"),
    ("html-audio", "<audio> element", "html", "audio"),
    ("html-svg", "<svg> element", "html", "svg"),
    ("html-object", "<object> element", "html", "object"),
    ("html-style", "<style> element", "html", "style"),
    ("html-link", "<link> element", "html", "link"),
    ("css-display-flex", "display:flex", "css", r"display\s*:\s*(?:inline-)?flex"),
    ("css-display-grid", "display:grid", "css", r"display\s*:\s*(?:inline-)?grid"),
    ("css-position", "position", "css", r"(?<![-\w])position\s*:"),
    ("css-background-image", "background-image", "css", r"background-image\s*:"),
    ("css-at-media", "@media", "css", r"@media\b"),
    ("css-variables", "CSS variables", "css", r"var\(\s*--"),
)


def html_check(html: str) -> dict[str, Any]:
    """Mailpit's ``HTMLCheckResponse`` for the :data:`FEATURES` found in ``html``."""
    parsed = _parsed(html)
    css = " ".join(_css(parsed))
    warnings = []
    for slug, title, category, needle in FEATURES:
        if category == "html":
            found = sum(1 for tag, _ in parsed.tags if tag == needle)
        else:
            found = len(re.findall(needle, css, re.IGNORECASE))
        if found:
            warnings.append(_warning(slug, title, category, found))
    total = {"Nodes": parsed.nodes, "Partial": 0, "Supported": 0, "Tests": len(FEATURES),
             "Unsupported": 0}  # fmt: skip
    return {"Platforms": {}, "Total": total, "Warnings": warnings}


def _css(parsed: _Links) -> list[str]:
    """The ``style`` attributes and the ``<style>`` elements, as html.parser read them (a
    search for each ``<style>``'s end in the text was quadratic: 83 s for 350 KB)."""
    return [attrs["style"] for _, attrs in parsed.tags if attrs.get("style")] + parsed.styles


def _warning(slug: str, title: str, category: str, found: int) -> dict[str, Any]:
    return {
        "Slug": slug,
        "Title": title,
        "Description": f"{title} is not supported by every e-mail client",
        "Category": category,
        "Tags": [],
        "Keywords": title,
        "URL": f"https://www.caniemail.com/features/{slug}/",
        "NotesByNumber": {},
        "Results": [],
        "Score": {"Found": found, "Supported": 0, "Partial": 0, "Unsupported": 0},
    }
