"""Which inbox captured mail goes to and which tags it gets (issue 10): a pure core."""

from __future__ import annotations

import pytest

from mailgate.inbox.sorting import (
    SortBy,
    box_for,
    clean_box,
    clean_tags,
    message_id,
    tags_for,
)

AUTH = {"mechanism": "PLAIN", "username": "ci-run-42", "password": "x"}
HEADERS = {"X-Mailgate-Inbox": "team.qa", "Subject": "hi"}
RCPT = ["someone@Example.COM", "other@else.example"]


@pytest.mark.parametrize(
    ("sort_by", "expected"),
    [
        (SortBy.NONE, "default"),
        (SortBy.AUTH, "ci-run-42"),
        (SortBy.HEADER, "team.qa"),
        (SortBy.DOMAIN, "example.com"),  # the first recipient's, lower-cased
    ],
)
def test_box_by_each_setting(sort_by: SortBy, expected: str) -> None:
    assert box_for(sort_by, auth=AUTH, headers=HEADERS, rcpt_to=RCPT) == expected


def test_missing_source_of_the_name_means_default() -> None:
    assert box_for(SortBy.AUTH, auth=None, headers=HEADERS, rcpt_to=RCPT) == "default"
    assert box_for(SortBy.HEADER, auth=AUTH, headers={}, rcpt_to=RCPT) == "default"
    assert box_for(SortBy.DOMAIN, auth=AUTH, headers=HEADERS, rcpt_to=[]) == "default"
    assert box_for(SortBy.DOMAIN, auth=None, headers={}, rcpt_to=["postmaster"]) == "default"


def test_header_is_found_in_any_case_and_first_of_repeats() -> None:
    headers = {"x-mailgate-inbox": ["first", "second"]}
    assert box_for(SortBy.HEADER, auth=None, headers=headers, rcpt_to=[]) == "first"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alice", "alice"),
        ("Team_A-1.x", "Team_A-1.x"),
        ("ci@example.com", "ci_example.com"),
        ("  spaced name ", "spaced_name"),
        ("../../etc/passwd", ".._.._etc_passwd"),  # one segment, no slash
        ("..", "default"),  # never a path segment of its own
        ("", "default"),
        ("ü", "default"),
        ("x" * 100, "x" * 64),
    ],
)
def test_box_names_are_sanitised(name: str, expected: str) -> None:
    assert clean_box(name) == expected


def test_international_domain_becomes_its_ascii_form() -> None:
    box = box_for(SortBy.DOMAIN, auth=None, headers={}, rcpt_to=["a@Bücher.example"])
    assert box == "xn--bcher-kva.example"


def test_tags_from_plus_addresses_and_x_tags() -> None:
    headers = {
        "From": "Shop <shop+newsletter@example.com>",
        "To": "Jane <jane+signup+eu@example.com>, bob@example.com",
        "Cc": "carol+Signup@example.com",
        "X-Tags": "Tag 1, hostname,  , tag 1",
    }
    tags = tags_for(headers, ["hidden+audit@example.com", "jane+signup+eu@example.com"])
    assert tags == ["audit", "eu", "hostname", "newsletter", "signup", "Tag 1"]


def test_tag_names_are_cleaned_deduplicated_and_capped() -> None:
    assert clean_tags(["a<b>c", "  x   y ", "naïve", "ok.v1_2-3", "", "<>"]) == [
        "a b c", "na ve", "ok.v1_2-3", "x y",
    ]  # fmt: skip
    assert clean_tags(["t" * 100]) == ["t" * 64]
    many = clean_tags(f"tag{i:02d}" for i in range(50))
    assert len(many) == 32 and many[0] == "tag00" and many[-1] == "tag31"


def test_message_id_without_brackets() -> None:
    assert message_id({"Message-Id": " <abc@x.example> "}) == "abc@x.example"
    assert message_id({}) is None
    assert message_id({"Message-ID": "<>"}) is None
