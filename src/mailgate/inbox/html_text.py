"""Captured HTML read as a person sees it: its text, and its links with their anchor text.

Built on the standard library's :mod:`html.parser`, which never builds a tree (so
nesting depth costs nothing) but, on CPython 3.11, rescans the rest of the document
for every ``<`` that opens a tag it cannot close: 60 KB of ``<a `` took 54 s.
:func:`defuse` therefore first turns every ``<`` that cannot start a complete
construct within :data:`MAX_TAG_CHARS` into text (``&lt;``), in one linear pass, and
the input is cut at :data:`MAX_HTML_CHARS`. What it keeps is what a browser shows:
an unclosed ``<a>`` ends at the next ``<a>`` or the end of the document, scripts and
styles are not text, a ``<br>``, ``<p>`` or table row starts a new line and a table
cell is set off by a tab.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["MAX_HTML_CHARS", "MAX_TAG_CHARS", "Anchor", "HtmlText", "defuse", "read_html"]

MAX_HTML_CHARS = 1_000_000  #: HTML past this is not read (a sign-in mail is ~50 KB)
MAX_TAG_CHARS = 8192  #: a tag (with its attributes) longer than this is shown as text
MAX_ANCHOR_CHARS = 300  #: anchor text kept per link (whitespace collapsed)
MAX_ANCHORS = 5000  #: links kept per document

#: elements whose content is not text a reader sees
_HIDDEN = frozenset({"script", "style", "title", "template", "noscript", "head"})
#: elements that start a new line
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "center", "dd", "div", "dl",
        "dt", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
        "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "tfoot", "thead",
        "tr", "ul",
    }
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Anchor:
    href: str  #: as written, entities decoded, surrounding whitespace removed
    text: str  #: what is shown inside the ``<a>``, whitespace collapsed ("" if nothing)


@dataclass(frozen=True, slots=True)
class HtmlText:
    text: str  #: the visible text, lines and tab-separated cells
    #: in document order, each ``<a href>`` and each run of text outside any (where a
    #: bare URL may stand)
    flow: tuple[Anchor | str, ...]


def read_html(html: str) -> HtmlText:
    """The visible text and the links of ``html``; linear in its length."""
    scan = _Scan()
    scan.feed(defuse(html[:MAX_HTML_CHARS]))
    scan.close()
    scan.end_anchor()
    return HtmlText(text="".join(scan.parts), flow=tuple(scan.flow))


_OPENERS = re.compile(r"<(?=[A-Za-z/!?])")


def defuse(html: str) -> str:
    """``html`` with every ``<`` that html.parser would rescan to the end made text.

    A ``<`` followed by a letter, ``/``, ``!`` or ``?`` opens a construct; it is kept
    only when its end (``>``, or ``-->`` for a comment) comes within
    :data:`MAX_TAG_CHARS`. Marked sections (``<![CDATA[``) are always made text:
    html.parser's search for their end is quadratic too. The next end after a
    position only moves forward, so each is searched for once: one pass in all.
    """
    out: list[str] = []
    last = 0
    next_gt = next_comment_end = -1
    for match in _OPENERS.finditer(html):
        at = match.start()
        if html.startswith("<!--", at):
            if next_comment_end != -2 and next_comment_end < at:
                found = html.find("-->", at + 4)
                next_comment_end = found if found >= 0 else -2
            keep = next_comment_end >= 0
        elif html.startswith("<![", at):
            keep = False
        else:
            if next_gt != -2 and next_gt < at:
                found = html.find(">", at)
                next_gt = found if found >= 0 else -2
            keep = 0 <= next_gt - at <= MAX_TAG_CHARS
        if not keep:
            out.append(html[last:at])
            out.append("&lt;")
            last = at + 1
    out.append(html[last:])
    return "".join(out)


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.flow: list[Anchor | str] = []
        self._anchors = 0
        self._hidden = 0  #: how many hidden elements are open
        self._href: str | None = None  #: the open ``<a>``'s href
        self._anchor_text: list[str] = []
        self._anchor_len = 0
        self._alt: str | None = None  #: an image's alt inside the open ``<a>``

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # an unclosed <head> or <title> ends where the body starts
            self._hidden = 0
        elif tag in _HIDDEN:
            self._hidden += 1
        elif tag == "a":
            self.end_anchor()
            href = dict(attrs).get("href")
            if href is not None:
                self._href = href.strip()
        elif tag == "img" and self._href is not None and self._alt is None:
            self._alt = dict(attrs).get("alt")
        self._separate(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HIDDEN and tag != "a":  # <br/>, <img/>; <a/> or <script/> open nothing
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "a":
            self.end_anchor()
        self._separate(tag)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self.parts.append(data)
        if self._href is None:
            self.flow.append(data)
        elif self._anchor_len < MAX_ANCHOR_CHARS:
            self._anchor_text.append(data[:MAX_ANCHOR_CHARS])
            self._anchor_len += len(data)

    def end_anchor(self) -> None:
        """Close the open ``<a>``, if any: its link is complete."""
        if self._href is None:
            return
        text = _SPACE.sub(" ", "".join(self._anchor_text)).strip()[:MAX_ANCHOR_CHARS]
        if not text and self._alt:
            text = _SPACE.sub(" ", self._alt).strip()[:MAX_ANCHOR_CHARS]
        if self._anchors < MAX_ANCHORS:
            self.flow.append(Anchor(self._href, text))
            self._anchors += 1
        self._href, self._anchor_text, self._anchor_len, self._alt = None, [], 0, None

    def _separate(self, tag: str) -> None:
        if self._hidden:
            return
        if tag in _BLOCKS:
            self.parts.append("\n")
        elif tag in _CELLS:
            self.parts.append("\t")
