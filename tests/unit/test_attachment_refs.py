"""Attachments by url or path at submission: only their spelling is checked here.

Where a URL leads (the SSRF guard) and whether a file exists are checked when the
message is sent (``integration/test_attachments_fetch.py``).
"""

from __future__ import annotations

import pytest

from mailgate.errors import InvalidMessage
from tests.builders import parse_submitted, submitted


def one(**attachment: str) -> dict[str, object]:
    return submitted(attachments=[{"filename": "f.pdf", **attachment}])


def test_a_url_attachment_is_queued_as_a_reference() -> None:
    [att] = parse_submitted(one(url="https://files.example/f.pdf?t=1")).attachments
    assert (att.url, att.path, att.content) == ("https://files.example/f.pdf?t=1", None, b"")


def test_a_path_attachment_is_queued_as_a_reference() -> None:
    [att] = parse_submitted(one(path="docs:reports/2026/f.pdf")).attachments
    assert (att.path, att.url, att.content) == ("docs:reports/2026/f.pdf", None, b"")


@pytest.mark.parametrize(
    ("attachment", "reason"),
    [
        ({"url": "file:///etc/passwd"}, "'file' is not http or https"),
        ({"url": "gopher://x.example/"}, "'gopher' is not http or https"),
        ({"url": "/relative/only"}, "is not http or https"),
        ({"url": "https://x.example/\r\nHost: evil"}, "attachments.0.url"),
        ({"path": "/etc/passwd"}, "volume:sub/path"),
        ({"path": "docs:../etc/passwd"}, "without '..'"),
        ({"path": "docs:a/../../b"}, "without '..'"),
        ({"path": "docs:/etc/passwd"}, "must be relative"),
        ({"path": "docs:a\\..\\b"}, "backslash"),
        ({"path": "docs:"}, "empty"),
        ({"content": "aGk=", "url": "https://x.example/f"}, "exactly one of"),
        ({}, "exactly one of"),
    ],
)
def test_bad_references_are_refused_at_submission(attachment: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_submitted(one(**attachment))
    assert reason in str(caught.value) and "attachments.0" in str(caught.value)
