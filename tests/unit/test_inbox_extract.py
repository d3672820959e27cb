"""Links and one-time codes out of captured mail (inbox/extract.py, inbox/html_text.py)."""

from __future__ import annotations

import time

import pytest

from mailgate.errors import InvalidInput
from mailgate.inbox.extract import Code, Link, compile_code_pattern, find_codes, find_links
from mailgate.inbox.html_text import MAX_HTML_CHARS, read_html


def codes(text: str, *, html: str | None = None, subject: str | None = None) -> list[str]:
    return [c.code for c in find_codes(subject=subject, text=text, html=html)]


# ----------------------------------------------------------------------------- links


def test_links_once_each_with_the_first_anchor_text_then_bare_urls() -> None:
    html = (
        '<p><a href="https://x.test/a?b=1&amp;c=2"></a>'
        '<a href=" https://x.test/a?b=1&c=2 ">  Sign\n   in </a>'
        '<a href="https://x.test/a?b=1&c=2">again</a>'
        "Or open https://x.test/bare.</p>"
        '<a href="#top">top</a><a href="javascript:alert(1)">x</a>'
        '<a href="mailto:help@x.test"><img src="h.png" alt="Help desk"></a>'
    )
    text = "Open https://x.test/a?b=1&c=2, or https://x.test/text-only!"
    assert find_links(text, html) == [
        Link("https://x.test/a?b=1&c=2", "Sign in"),
        Link("https://x.test/bare", None),
        Link("mailto:help@x.test", "Help desk"),
        Link("https://x.test/text-only", None),
    ]


def test_an_unclosed_anchor_ends_at_the_next_and_hidden_text_is_no_anchor_text() -> None:
    html = '<a href="/one">One <b>bold<a href="/two"><style>a{}</style>Two'
    assert find_links(None, html) == [Link("/one", "One bold"), Link("/two", "Two")]


def test_trailing_punctuation_is_trimmed_but_a_closing_bracket_in_the_url_kept() -> None:
    text = "(see https://w.test/wiki/A_(b)) and https://w.test/x).\nhttps://w.test/q?a=1;"
    assert [link.url for link in find_links(text, None)] == [
        "https://w.test/wiki/A_(b)",
        "https://w.test/x",
        "https://w.test/q?a=1",
    ]


def test_html_text_has_lines_and_cells_and_no_scripts() -> None:
    page = read_html(
        "<head><title>T 2024</title><script>var code = 999999</script></head>"
        "<table><tr><td>Code</td><td>123456</td></tr></table>x<br>y"
    )
    assert page.text.split() == ["Code", "123456", "x", "y"]
    assert "\t123456" in page.text and "x\ny" in page.text


@pytest.mark.parametrize(
    "hostile",
    [
        "<a " * 20_000,  # 54 s in CPython 3.11's html.parser without the defusing pass
        "<x" * 300_000,
        "<![CDATA[" * 100_000,
        "<div>" * 200_000,
        ("<a " * 2000 + ">") * 150,
        "<!--" * 250_000,
    ],
    ids=["open-tags", "letters", "cdata", "nested", "long-tags", "comments"],
)
def test_hostile_html_costs_bounded_time(hostile: str) -> None:
    started = time.process_time()  # CPU time: no other process's load counts
    find_links(None, hostile)
    find_codes(subject=None, text=None, html=hostile)
    assert time.process_time() - started < 5


def test_html_past_the_cap_is_not_read() -> None:
    html = "x" * MAX_HTML_CHARS + '<a href="https://late.test">late</a>'
    assert find_links(None, html) == []


# ----------------------------------------------------------------------------- codes


def test_the_code_next_to_its_keyword_ranks_first() -> None:
    found = find_codes(
        subject="Your sign-in code",
        text="Hi, we got a sign in request from 1200 km away.\nYour code is 482913.",
        html=None,
    )
    assert [c.code for c in found] == ["482913", "1200"]
    assert found[0] == Code("482913", found[0].score, "Your code is 482913.")
    assert found[0].score > 0.75 > found[1].score


def test_a_code_alone_in_a_table_cell_outranks_one_in_a_sentence() -> None:
    html = (
        "<table><tr><td>Your verification code</td></tr><tr><td>739201</td></tr>"
        "<tr><td>If you did not ask, ignore code 5555 in this footer</td></tr></table>"
    )
    assert codes("", html=html) == ["739201", "5555"]


@pytest.mark.parametrize(
    ("line", "keyword"),
    [
        ("Ihr Bestätigungscode lautet 5821", "compound German"),
        ("Tu código de verificación: 5821", "Spanish"),
        ("Votre code de vérification : 5821", "French"),
        ("Your OTP is 5821", "OTP"),
        ("PIN: 5821", "PIN"),
        ("5821 is your one-time passcode", "after the number"),
        ("code:5821", "label in the same word"),
    ],
)
def test_keywords_in_several_languages(line: str, keyword: str) -> None:
    [found] = find_codes(subject=None, text=line, html=None)
    assert found.code == "5821" and found.score >= 0.6, keyword


def test_a_google_style_prefix_is_a_label() -> None:
    assert codes("G-123456 is your Google verification code") == ["123456"]


@pytest.mark.parametrize(
    "text",
    [
        "Sent on May 3, 2024 with your code",  # a year in a date
        "© 2024 Example — code",
        "Your code: call +1 555 201 7788",  # phone with a country code
        "Code? Call (555) 2017 788",  # phone with an area code
        "Code help: 0800 123 4567",  # three groups
        "Code line: phone 555 2017",  # a phone word before
        "Code: 555-2017",  # joined by a dash
        "code total $1299",
        "code total 1299€",
        "code total 1299 EUR",
        "code total 12,999.00",
        "code 1299.50",
        "code 2024-05-12",
        "code 12/05/2024",
        "code 12:3045",
        "code https://x.test/verify/123456",
        "code user123456@x.test",
        "code 123456@x.test",
        "code 3f2a9b12 a1b2c3d4",
        "code ref#123456",
        "code /users/123456/",
        "code 50% or 1234%",
    ],
)
def test_numbers_that_are_plainly_something_else_are_not_offered(text: str) -> None:
    assert codes(text) == [], text


def test_order_and_tracking_numbers_rank_below_the_code() -> None:
    text = "Your order number 12345678 and tracking 87654321.\nYour code is 4321."
    assert codes(text)[0] == "4321"


def test_a_year_not_beside_a_date_is_offered_but_ranks_low() -> None:
    found = find_codes(subject=None, text="Since 1999. Your code: 1999 2718", html=None)
    assert [c.code for c in found] == ["2718", "1999"]


def test_pattern_finds_words_and_groups() -> None:
    pattern = compile_code_pattern("[A-Z0-9]{6}")
    found = find_codes(subject=None, text="Your code is X7K9QP.", html=None, pattern=pattern)
    assert [c.code for c in found] == ["X7K9QP"]
    grouped = compile_code_pattern(r"MG-(?P<code>\d{3})")
    assert [
        c.code for c in find_codes(subject="code MG-123", text=None, html=None, pattern=grouped)
    ] == ["123"]
    # never inside a URL, nor on a word longer than 64 characters
    long_word = "A" * 65
    anything = compile_code_pattern(r"[A-Za-z/:.]+")
    offered = find_codes(
        subject=None, text=f"code https://x.test/ABC {long_word}", html=None, pattern=anything
    )
    assert [c.code for c in offered] == ["code"]


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(", "does not compile"),
        ("(a+)+", "repetition"),
        ("(?:\\w*x)*", "repetition"),
        ("(ab|a)*", "alternation"),
        ("x" * 101, "longer than 100"),
    ],
)
def test_patterns_that_could_backtrack_forever_are_refused(pattern: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        compile_code_pattern(pattern)


def test_safe_patterns_are_accepted() -> None:
    for pattern in ("[A-Z0-9]{6}", r"(?:\d{3})+", r"(\d{3})-(\d{3})", "(?i)[a-f0-9]{8}"):
        compile_code_pattern(pattern)


@pytest.mark.parametrize(
    "hostile",
    [
        "<!" + "-" * 200_000,  # punctuation with no letter: no word, no backtracking
        "code https://x.test/" + ")" * 200_000,
        "code " + "1234=" * 40_000,
        "code " + "a" * 200_000 + " 1234 " + "b" * 200_000,
        "code " + "1 " * 100_000,
        "code " + "a@" * 100_000,
    ],
    ids=["punctuation", "brackets", "joined", "long-words", "digits", "at-signs"],
)
def test_hostile_text_costs_bounded_time(hostile: str) -> None:
    started = time.process_time()  # CPU time: no other process's load counts
    find_links(hostile, None)
    find_codes(subject=hostile, text=hostile, html=None)
    assert time.process_time() - started < 5
