"""Mailpit's search syntax parsed into terms (issue 10): a pure core."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailgate.errors import InvalidInput
from mailgate.inbox.search import Field, Term, parse_query


def test_words_phrases_and_filters() -> None:
    assert parse_query('john "jane doe" to:"Ann Lee" FROM:a@b subject:x_y') == (
        Term(Field.TEXT, "john"),
        Term(Field.TEXT, "jane doe"),
        Term(Field.TO, "Ann Lee"),
        Term(Field.FROM, "a@b"),
        Term(Field.SUBJECT, "x_y"),
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("-word", Term(Field.TEXT, "word", negated=True)),
        ("!word", Term(Field.TEXT, "word", negated=True)),
        ('-"a phrase"', Term(Field.TEXT, "a phrase", negated=True)),
        ("-to:x", Term(Field.TO, "x", negated=True)),
        ("is:read", Term(Field.READ)),
        ("is:unread", Term(Field.READ, negated=True)),
        ("-is:unread", Term(Field.READ)),
        ("IS:READ", Term(Field.READ)),
        ("is:tagged", Term(Field.TAGGED)),
        ("has:attachment", Term(Field.ATTACHMENT)),
        ("!has:attachments", Term(Field.ATTACHMENT, negated=True)),
        ("has:inline", Term(Field.INLINE)),
        ("cc:c", Term(Field.CC, "c")),
        ("bcc:b", Term(Field.BCC, "b")),
        ("reply-to:r", Term(Field.REPLY_TO, "r")),
        ("addressed:a", Term(Field.ADDRESSED, "a")),
        ("message-id:<id@host>", Term(Field.MESSAGE_ID, "id@host")),
        ('tag:"Tag 1"', Term(Field.TAG, "Tag 1")),
        ("tag:a<b", Term(Field.TAG, "a b")),
        ("larger:2kb", Term(Field.LARGER, 2048)),
        ("smaller:1.5M", Term(Field.SMALLER, 1572864)),
        ("larger:100", Term(Field.LARGER, 100)),
        ('"is:read"', Term(Field.TEXT, "is:read")),  # quoted: a phrase
        ("is:weird", Term(Field.TEXT, "is:weird")),  # not a filter: a word
        ("http://x.example/a", Term(Field.TEXT, "http://x.example/a")),
        ("-", Term(Field.TEXT, "-")),
        ("50%", Term(Field.TEXT, "50%")),
    ],
)
def test_one_term(query: str, expected: Term) -> None:
    assert parse_query(query) == (expected,)


@pytest.mark.parametrize("query", ["", "   ", "to:", 'subject:""', '""', "tag:<>"])
def test_nothing_to_search(query: str) -> None:
    assert parse_query(query) == ()


def test_an_unclosed_quote_runs_to_the_end() -> None:
    assert parse_query('subject:"half open') == (Term(Field.SUBJECT, "half open"),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-04-01", datetime(2024, 4, 1, tzinfo=UTC)),
        ("2024/04/01", datetime(2024, 4, 1, tzinfo=UTC)),
        ("04/01/2024", datetime(2024, 4, 1, tzinfo=UTC)),  # US month/day, as Mailpit
        ('"2024-04-01 10:30"', datetime(2024, 4, 1, 10, 30, tzinfo=UTC)),
        ("2024-04-01T10:30:00+02:00", datetime(2024, 4, 1, 8, 30, tzinfo=UTC)),
        ("2024-04-01T10:30:00Z", datetime(2024, 4, 1, 10, 30, tzinfo=UTC)),
        ('"1 April 2024"', datetime(2024, 4, 1, tzinfo=UTC)),
        ('"Mon, 01 Apr 2024 10:30:00 +0000"', datetime(2024, 4, 1, 10, 30, tzinfo=UTC)),
        ("1711965000", datetime(2024, 4, 1, 9, 50, tzinfo=UTC)),
        ("1711965000000", datetime(2024, 4, 1, 9, 50, tzinfo=UTC)),
    ],
)
def test_dates(text: str, expected: datetime) -> None:
    [term] = parse_query(f"before:{text}")
    assert term == Term(Field.BEFORE, expected)


@pytest.mark.parametrize("text", ["999999999999", "99999999999999999999", "9" * 400, "²"])
def test_a_unix_time_past_the_year_9999_is_refused(text: str) -> None:
    """``datetime.fromtimestamp`` raised ValueError, OSError or OverflowError (and
    ``int()`` ValueError for a digit it does not read): a 500 instead of a 4xx."""
    with pytest.raises(InvalidInput, match=r"search: cannot read the date .*year 10000"):
        parse_query(f"before:{text}")


def test_a_date_without_zone_is_in_the_given_zone() -> None:
    cet = timezone(timedelta(hours=1))
    [term] = parse_query("after:2024-01-10", tz=cet)
    assert term.value == datetime(2024, 1, 9, 23, tzinfo=UTC)


def test_a_size_of_any_length_is_read() -> None:
    """Read as a float, 309 digits were infinite and ``int()`` of that an OverflowError
    (a 500 for ``larger:999…``); past 2**53 bytes a float was not exact either."""
    [huge] = parse_query("larger:" + "9" * 5000)  # past int()'s 4,300 digits too
    assert huge.field is Field.LARGER and isinstance(huge.value, int) and huge.value > 10**4999
    assert parse_query("smaller:9007199254740993") == (Term(Field.SMALLER, 2**53 + 1),)
    assert parse_query("larger:2048mb") == (Term(Field.LARGER, 2**31),)


@pytest.mark.parametrize("query", ["before:someday", "after:2024-13-45", "larger:lots"])
def test_unreadable_dates_and_sizes_are_refused(query: str) -> None:
    """Mailpit ignores them; here DELETE ?q=before:garbage must not delete everything."""
    with pytest.raises(InvalidInput, match="search: cannot read"):
        parse_query(query)
