"""What an end-to-end test pulls out of a captured sign-in mail: its links and its code.

Pure: values in, values out (the routes run it in a thread for big bodies). Work is
bounded by the input caps of :mod:`mailgate.inbox.html_text` and :data:`MAX_TEXT_CHARS`,
and a configured code pattern only ever runs on one word of at most
:data:`MAX_TOKEN_CHARS` (see :func:`compile_code_pattern`).

Codes are ranked by how near they stand to words that announce one ("code",
"verification", "OTP", "sign in", "código", "Bestätigungscode", …): the score falls
with the number of words between them. Numbers that are plainly something else are
never offered: years beside a date, groups of a phone number, prices, parts of a
longer number (``1,299.00``, ``2024-05-01``, ``555-0100``), anything inside a URL, an
e-mail address or a mixed token such as a hex id.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from re import _parser as sre_parse  # stdlib; typeshed describes it
from typing import Any

from mailgate.errors import InvalidInput
from mailgate.inbox.html_text import Anchor, read_html

__all__ = [
    "MAX_PATTERN_CHARS",
    "Code",
    "Link",
    "compile_code_pattern",
    "find_codes",
    "find_links",
]

MAX_TEXT_CHARS = 2_000_000  #: a text part past this is not searched for links
#: codes are looked for in this much of each part (a sign-in mail's is near its top)
MAX_CODE_TEXT_CHARS = 200_000
MAX_PATTERN_CHARS = 100  #: a code pattern longer than this is refused
MAX_TOKEN_CHARS = 64  #: a configured pattern is tried on words up to this long only
MAX_CODES = 20  #: codes answered, best first
MAX_CANDIDATES = 5000  #: numbers looked at per part of a message
_WINDOW = 30  #: a keyword further than this many words away does not count

# How a candidate is scored (0–1): a base, plus the nearness of the best keyword
# (its weight / (1 + DECAY × words between)), plus the shape of a code, less what
# makes it look like another kind of number. A score of 0 is not offered.
_BASE = 0.1  #: any number or pattern word standing alone
_NEAR = 0.7  #: times the nearness (1: the keyword is next to it)
_DECAY = 0.1  #: nearness lost per word between: 0.91 at 1 word, 0.5 at 10, 0.25 at 30
_SIX_DIGITS = 0.05  #: the commonest length
_OWN_LINE = 0.15  #: alone on its line or in its table cell, as codes are set out
_YEAR = 0.2  #: 19xx/20xx not beside a date (beside one it is never offered)
_OTHER_NUMBER = 0.4  #: an order, ticket, tracking, account, postcode number just before


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    text: str | None  #: the anchor text ("" for an empty ``<a>``); None: only in plain text


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    score: float  #: 0–1; higher is likelier the one-time code
    context: str  #: the line it stands on, shortened around it


# ---------------------------------------------------------------------------- links

#: a bare http(s) URL; its trailing punctuation is trimmed by :func:`_trim_url`
_URL = re.compile(r"\bhttps?://[^\s<>\"'`{}|\\^]+", re.IGNORECASE)
_NOT_LINKS = ("javascript:", "vbscript:", "data:")
#: what a browser strips from both ends of a URL (WHATWG URL §4.4: C0 controls, space)
_URL_ENDS = "".join(map(chr, range(0x21)))


def find_links(text: str | None, html: str | None) -> list[Link]:
    """Every link: each ``<a href>`` of the HTML with its anchor text and the bare URLs
    of its other text, in document order, then those of the text part. A URL is listed
    once, at its first place, with the first non-empty anchor text it was given."""
    found: dict[str, Link] = {}

    def add(url: str, anchor: str | None) -> None:
        url = re.sub(r"[\t\r\n]", "", url).strip(_URL_ENDS)  # as a browser reads it
        if not url or url.startswith("#") or url.lower().startswith(_NOT_LINKS):
            return
        known = found.get(url)
        if known is None or (not known.text and anchor):
            found[url] = Link(url, anchor)

    if html:
        for item in read_html(html).flow:
            if isinstance(item, Anchor):
                add(item.href, item.text)
            else:
                for url in _bare_urls(item):
                    add(url, None)
    if text:
        for url in _bare_urls(text[:MAX_TEXT_CHARS]):
            add(url, None)
    return list(found.values())


def _bare_urls(text: str) -> Iterator[str]:
    for match in _URL.finditer(text):
        yield _trim_url(match.group())


def _trim_url(url: str) -> str:
    """Drop what ends the sentence, not the URL: ``.``/``,``/``)`` after it (a ``)``
    stays when it closes a ``(`` inside the URL, as in Wikipedia's)."""
    unclosed = {")": url.count("(") - url.count(")"), "]": url.count("[") - url.count("]")}
    end = len(url)
    while end:
        last = url[end - 1]
        if last not in ".,;:!?*'\")]" or (last in unclosed and unclosed[last] >= 0):
            break
        if last in unclosed:
            unclosed[last] += 1
        end -= 1
    return url[:end]


# ---------------------------------------------------------------------------- codes

_I = re.IGNORECASE
#: (pattern, weight): words that announce a code; compounds count ("Bestätigungscode")
_KEYWORDS = [
    (re.compile(p, _I), w)
    for p, w in (
        (r"\b\w*codes?\b", 1.0),
        (r"\b(?:c[oó]digo|codice|kod|kode|koodi)\b", 1.0),
        (r"\b(?:otp|pin|passcode|totp|2fa|mfa)\b", 1.0),
        (r"\bone[- ]?time\b", 0.9),
        (r"\b(?:verification|v[ée]rification|verificaci[oó]n|verifica|verifizierung)\b", 0.9),
        (r"\b(?:verify|verifying|v[ée]rifier|verificar|verifizieren)\b", 0.8),
        (r"\b(?:two[- ]factor|2-step|authenticat\w*|authentifizierung)\b", 0.7),
        (r"\b(?:sign[- ]?in|log[- ]?in|signing in|logging in|anmeld\w*|connexion)\b", 0.6),
        (r"\b(?:iniciar sesi[oó]n|security|sicherheit\w*|password|passwort)\b", 0.5),
        (r"\b(?:confirm\w*|best[äa]tig\w*)\b", 0.4),
    )
]
#: words before a number that make it some other number (an order, a postcode, a price)
_NEGATIVE = re.compile(
    r"\b(?:order|invoice|receipt|ticket|booking|reservation|tracking|reference|ref|account"
    r"|customer|member|zip|postal|postcode|zipcode|barcode|promo|coupon|discount|voucher"
    r"|price|total|amount|subtotal|balance|suite|apt|street|room|flight|case)\b|\bn[or]\.",
    _I,
)
_PHONE_WORDS = re.compile(
    r"\b(?:call|phone|tel|telephone|fax|mobile|cell|whatsapp|sms|hotline|téléphone|telefon)\b",
    _I,
)
_MONTHS = re.compile(
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march"
    r"|april|june|july|august|september|october|november|december|monday|tuesday|wednesday"
    r"|thursday|friday|saturday|sunday|mon|tue|wed|thu|fri|sat|sun|januar|februar|märz|mai"
    r"|juni|juli|oktober|dezember|janvier|février|mars|avril|juin|juillet|août|septembre"
    r"|octobre|novembre|décembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto"
    r"|septiembre|octubre|noviembre|diciembre|copyright)\b\.?,?|©|\(c\)",
    _I,
)
_CURRENCY = re.compile(
    r"^(?:[$€£¥₹₽₩₺¢]|usd|eur|gbp|jpy|chf|cad|aud|inr|brl|sek|nok|dkk|pln|czk|kr|r\$|us\$)$",
    _I,
)
#: 4–8 ASCII digits standing alone (not inside a word or a longer number)
_DIGITS = re.compile(r"(?<!\w)[0-9]{4,8}(?!\w)")
#: a phone number: a country code or area code in brackets, or three groups and more
_PHONE = re.compile(r"(?<![\w+])(\+\d{1,3}[ .-]?)?(\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ .-]\d{1,5}){1,5}")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_JOINED = re.compile(r"\d[.,:/-]$")  #: before a number: part of a longer one
_JOINED_AFTER = re.compile(r"^(?:[.,:/-]\d|\s?[%°])")
_PUNCT = ".,;:!?()[]{}\"'«»“”‘’<>*"
_LABEL = re.compile(r"^(?:[A-Za-z]{1,4}-|[\w-]+[:=])$")  #: G-123456, code:123456, OTP=1234
_ALNUM = re.compile(r"[^\W_]")
_LONGEST_WORD = 64  #: a number in a longer word (a token, a path) is not a code
_LINE_REACH = 200  #: a number's line is looked at this far either side
_SIGN_REACH = 4  #: signs that are not words (``©``) count this far beyond a window
_SPACES = re.compile(r"[^\S\n\t]+")


def compile_code_pattern(source: str) -> re.Pattern[str]:
    """A code pattern (``inbox.code_pattern``, ``?pattern=``), checked to run in bounded
    time: at most :data:`MAX_PATTERN_CHARS`, and no repeated group that itself holds a
    variable repetition or an alternation (``(a+)+``, ``(ab|a)*``: catastrophic
    backtracking).
    It is matched against whole words, so ``[A-Z0-9]{6}`` finds ``X7K9QP``; with a
    group, the first group (or one named ``code``) is the code."""
    if len(source) > MAX_PATTERN_CHARS:
        raise InvalidInput(f"the code pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        compiled = re.compile(source)
        _check_nesting(sre_parse.parse(source).data, repeated=False)
    except (re.error, OverflowError) as exc:  # OverflowError: a{99999999999}
        raise InvalidInput(f"the code pattern does not compile: {exc}") from None
    return compiled


def _check_nesting(items: list[tuple[Any, Any]], *, repeated: bool) -> None:
    """Walk the parsed pattern (``re._parser``'s opcodes), refusing a repetition or an
    alternation inside a repetition."""
    for op, av in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            least, most, sub = av
            if repeated and most != least:  # a fixed count, (?:\d{3})+, cannot backtrack
                raise InvalidInput("the code pattern repeats a group holding a repetition")
            _check_nesting(sub.data, repeated=repeated or most > 1)
        elif name == "BRANCH":
            if repeated:
                raise InvalidInput("the code pattern repeats a group holding an alternation")
            for branch in av[1]:
                _check_nesting(branch.data, repeated=repeated)
        elif name in ("SUBPATTERN", "ATOMIC_GROUP", "ASSERT", "ASSERT_NOT"):
            sub = av[-1] if isinstance(av, tuple) else av
            _check_nesting(sub.data, repeated=repeated)
        elif name == "GROUPREF_EXISTS":
            for sub in av[1:]:
                if sub is not None:
                    _check_nesting(sub.data, repeated=repeated)


def find_codes(
    *,
    subject: str | None,
    text: str | None,
    html: str | None,
    pattern: re.Pattern[str] | None = None,
) -> list[Code]:
    """The one-time codes of a message, best first: 4–8 digit numbers, and words
    ``pattern`` matches. The subject, the text part and the HTML's text are each read
    on their own (a keyword in one does not vouch for a number in another)."""
    parts = [(subject or "")[:MAX_CODE_TEXT_CHARS], (text or "")[:MAX_CODE_TEXT_CHARS]]
    if html:
        parts.append(read_html(html).text[:MAX_CODE_TEXT_CHARS])
    best: dict[str, Code] = {}
    for part in parts:
        for code in _Part(part, pattern).codes():
            if code.code not in best or code.score > best[code.code].score:
                best[code.code] = code
    ranked = sorted(best.values(), key=lambda c: -c.score)
    return ranked[:MAX_CODES]


class _Part:
    """One text (subject, text part, or the HTML's text) and the words in it."""

    def __init__(self, text: str, pattern: re.Pattern[str] | None) -> None:
        self.text = _SPACES.sub(" ", text)  # no-break and other spaces, as one space
        self.pattern = pattern
        #: words: runs of non-space holding a letter or digit (a lone ":" is none)
        self.words = [m.span() for m in re.finditer(r"\S+", self.text) if _ALNUM.search(m.group())]
        self.starts = [s for s, _ in self.words]
        self.keywords = sorted(
            (self._word_at(m.start()), self._word_at(m.end() - 1), weight)
            for regex, weight in _KEYWORDS
            for m in regex.finditer(self.text)
        )
        self.keyword_words = [k[0] for k in self.keywords]
        self.blocked = _merge(self._spans(_URL, _EMAIL) + self._phones())
        self.blocked_starts = [s for s, _ in self.blocked]

    def codes(self) -> Iterator[Code]:
        for seen, match in enumerate(_DIGITS.finditer(self.text)):
            if seen >= MAX_CANDIDATES:
                return
            score = self._digits_score(match.start(), match.end())
            if score is not None:
                yield self._code(match.group(), match.start(), match.end(), score)
        if self.pattern is not None:
            yield from self._pattern_codes(self.pattern)

    def _pattern_codes(self, pattern: re.Pattern[str]) -> Iterator[Code]:
        for index, (start, end) in enumerate(self.words[:MAX_CANDIDATES]):
            word = self.text[start:end].strip(_PUNCT)
            if not word or len(word) > MAX_TOKEN_CHARS or self._is_blocked(start, end):
                continue
            match = pattern.fullmatch(word)
            if match is None:
                continue
            code = _group(match)
            if code and not (code.isdigit() and 4 <= len(code) <= 8):  # digits: as above
                score = _BASE + _NEAR * self._nearness(index)
                yield self._code(code, start, end, score)

    def _digits_score(self, start: int, end: int) -> float | None:
        """How likely the number at ``start:end`` is the code; None: it is not one."""
        text, index = self.text, self._word_at(start)
        if _JOINED.search(text[max(0, start - 2) : start]) or _JOINED_AFTER.match(
            text[end : end + 2]
        ):
            return None
        if self._is_blocked(start, end) or not self._stands_alone(index, start, end):
            return None
        if self._next_to(index, _CURRENCY):
            return None
        number = text[start:end]
        penalty = 0.0
        if len(number) == 4 and number[:2] in ("19", "20"):
            if self._near(index, _MONTHS, before=3, after=3):
                return None  # a year in a date or a copyright line
            penalty += _YEAR
        if self._near(index, _NEGATIVE, before=3, after=0):
            penalty += _OTHER_NUMBER
        score = _BASE + _NEAR * self._nearness(index) - penalty
        score += _SIX_DIGITS if len(number) == 6 else 0.0
        score += _OWN_LINE if self._on_its_own(start, end) else 0.0
        return min(1.0, score) if score > 0 else None

    def _nearness(self, index: int) -> float:
        """The best keyword's weight, less for each word between (0 beyond the window)."""
        best = 0.0
        low = bisect.bisect_left(self.keyword_words, index - _WINDOW)
        high = bisect.bisect_right(self.keyword_words, index + _WINDOW)
        for first, last, weight in self.keywords[low:high]:
            if first <= index <= last:
                between = 0
            else:
                between = (index - last - 1) if last < index else (first - index - 1)
            best = max(best, weight / (1 + _DECAY * between))
        return best

    def _code(self, code: str, start: int, end: int, score: float) -> Code:
        return Code(code, round(score, 3), self._context(start, end))

    def _context(self, start: int, end: int, reach: int = 60) -> str:
        line_start = max(self.text.rfind("\n", max(0, start - reach), start) + 1, start - reach)
        line_end = self.text.find("\n", end, end + reach)
        line_end = min(len(self.text), end + reach) if line_end < 0 else line_end
        shown = " ".join(self.text[line_start:line_end].split())
        head = "…" if line_start > 0 and self.text[line_start - 1] != "\n" else ""
        tail = "…" if line_end < len(self.text) and self.text[line_end] != "\n" else ""
        return f"{head}{shown}{tail}"

    def _word_at(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self.starts, offset) - 1)

    def _stands_alone(self, index: int, start: int, end: int) -> bool:
        """The number is its whole word, or has a short label (``G-``, ``code:``) only:
        never ``#1234``, ``$1299``, ``1234€``, ``1234%`` or part of ``a1b2c3d4``."""
        w_start, w_end = self.words[index]
        if w_end - w_start > _LONGEST_WORD:
            return False
        before = self.text[w_start:start].lstrip(_PUNCT)
        if self.text[end:w_end].rstrip(_PUNCT):
            return False
        return not before or bool(_LABEL.match(before))

    def _on_its_own(self, start: int, end: int) -> bool:
        """Alone on its line or in its table cell, as codes are set out in sign-in mail."""
        text, low, high = self.text, max(0, start - _LINE_REACH), end + _LINE_REACH
        before = max(text.rfind("\n", low, start), text.rfind("\t", low, start))
        line_start = before + 1 if before >= 0 else low  # past the reach: not on its own
        stops = [i for i in (text.find("\n", end, high), text.find("\t", end, high)) if i >= 0]
        line_end = min(stops) if stops else min(len(text), high)
        return text[line_start:line_end].strip(" " + _PUNCT) == text[start:end]

    def _next_to(self, index: int, regex: re.Pattern[str]) -> bool:
        """The word before or after word ``index`` is ``regex`` (a currency: a price)."""
        neighbours = self.words[max(0, index - 1) : index] + self.words[index + 1 : index + 2]
        return any(regex.match(self.text[s:e].strip(".,;:()")) for s, e in neighbours)

    def _near(self, index: int, regex: re.Pattern[str], *, before: int, after: int) -> bool:
        """``regex`` matches within ``before`` words before word ``index`` and ``after``
        after it (and the signs between, such as ``©``), not inside the word itself."""
        own_start, own_end = self.words[index]
        start = max(0, self.words[max(0, index - before)][0] - _SIGN_REACH)
        end = self.words[min(len(self.words), index + after + 1) - 1][1] + _SIGN_REACH
        return any(
            not own_start <= m.start() < own_end for m in regex.finditer(self.text, start, end)
        )

    def _spans(self, *regexes: re.Pattern[str]) -> list[tuple[int, int]]:
        return [m.span() for regex in regexes for m in regex.finditer(self.text)]

    def _phones(self) -> list[tuple[int, int]]:
        spans = []
        for m in _PHONE.finditer(self.text):
            digits = sum(c.isdigit() for c in m.group())
            groups = len(re.findall(r"\d+", m.group()))
            marked = bool(m.group(1) or m.group(2))
            if digits >= 7 and (marked or groups >= 3 or self._phone_word_before(m.start())):
                spans.append(m.span())
        return spans

    def _phone_word_before(self, start: int) -> bool:
        return bool(_PHONE_WORDS.search(self.text, max(0, start - 40), start))

    def _is_blocked(self, start: int, end: int) -> bool:
        """Inside a URL, an e-mail address or a phone number."""
        at = bisect.bisect_right(self.blocked_starts, start) - 1
        return at >= 0 and end <= self.blocked[at][1]


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping spans joined, in order: one bisect finds the one holding a position."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _group(match: re.Match[str]) -> str:
    if "code" in match.re.groupindex:
        return match.group("code") or ""
    return (match.group(1) or "") if match.re.groups else match.group()
