"""The pure parts of the Mailpit-compatible API: enmime's part numbering, Go's time and
header forms, snippets, send requests and the release policy (chaos: test_chaos.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailgate.clock import SystemClock
from mailgate.inbox.release import ReleasePolicy, ReleaseRefused, checked_addresses, rewritten
from mailgate.mime import parse_message
from mailgate.mime.parts import mime_parts
from mailgate.web.mailpit_checks import find_links, html_check
from mailgate.web.mailpit_json import go_time, headers_json, snippet
from mailgate.web.mailpit_send import SendRefused, sendable

DATA = Path(__file__).parent.parent / "data"


def html_part(msg: EmailMessage) -> EmailMessage:
    """The html alternative of a message just given one (to relate an image to it)."""
    payload = msg.get_payload()
    assert isinstance(payload, list) and isinstance(payload[1], EmailMessage)
    return payload[1]


def listed(raw: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    parts = mime_parts(raw)
    return (
        [(p.part_id, p.filename) for p in parts.attachments],
        [(p.part_id, p.filename) for p in parts.inline],
    )


def test_part_ids_follow_enmime_numbering() -> None:
    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("text")
    msg.add_alternative('<img src="cid:a">', subtype="html")
    html_part(msg).add_related(
        b"png", maintype="image", subtype="png", cid="<a>", disposition="inline",
        filename="a.png",
    )  # fmt: skip
    msg.add_attachment(b"pdf", maintype="application", subtype="pdf", filename="r.pdf")
    msg.add_attachment(b"csv", maintype="text", subtype="csv", filename="d.csv")
    # root mixed 0; alternative 1 (text 1.1, related 1.2 (html 1.2.1, png 1.2.2)); 2; 3
    assert listed(msg.as_bytes()) == ([("2", "r.pdf"), ("3", "d.csv")], [("1.2.2", "a.png")])
    part = mime_parts(msg.as_bytes()).find("1.2.2")
    assert part is not None and part.content == b"png" and part.content_id == "a"


def test_parts_of_real_messages() -> None:
    assert listed((DATA / "related_inline_image.eml").read_bytes()) == ([], [("2.2", "logo.png")])
    forwarded = listed((DATA / "forwarded_thunderbird.eml").read_bytes())
    assert forwarded == ([("2", "Quarterly report.eml")], [])  # message/rfc822: one leaf
    names = [name for _, name in listed((DATA / "rfc2231_filenames.eml").read_bytes())[0]]
    assert names[0] == "Résumé – final.pdf"


def test_a_single_part_message_is_its_own_attachment_0() -> None:
    raw = (
        b"Subject: x\r\nContent-Type: application/pdf; name=only.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
    )
    parts = mime_parts(raw)
    assert [(p.part_id, p.filename, p.content) for p in parts.attachments] == [
        ("0", "only.pdf", b"%PDF")
    ]
    assert listed(b"Subject: x\r\n\r\nplain text\r\n") == ([], [])


def test_unnamed_parts_are_not_listed_and_cid_names_them() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
        b"Content-Type: image/gif\r\nContent-ID: <pic@x>\r\n\r\nGIF\r\n--b\r\n"
        b"Content-Type: application/x-unnamed\r\n\r\n...\r\n--b--\r\n"
    )
    assert listed(raw) == ([], [("2", "pic@x")])


def test_go_time_forms() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, 120_456, tzinfo=UTC)
    assert go_time(when) == "2024-01-02T03:04:05.120456Z"
    assert go_time(when, millis=True) == "2024-01-02T03:04:05.12Z"
    assert go_time(when.replace(microsecond=0)) == "2024-01-02T03:04:05Z"
    plus2 = when.replace(microsecond=0, tzinfo=timezone(timedelta(hours=2)))
    assert go_time(plus2) == "2024-01-02T03:04:05+02:00"


def test_headers_as_go_keeps_them() -> None:
    raw = (
        b"message-id: <a@b>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nX-Long: one\r\n  two\r\n"
        b"Received: a\r\nReceived: b\r\n\r\nbody"
    )
    assert headers_json(raw) == {
        "Message-Id": ["<a@b>"],
        "Received": ["a", "b"],
        "Subject": ["=?utf-8?q?caf=C3=A9?="],
        "X-Long": ["one two"],
    }


def test_snippet_prefers_html_text_and_cuts_at_200() -> None:
    html = "<html><head><style>p{}</style></head><body><p>Hello&nbsp;<b>you</b></p></body>"
    assert snippet("ignored", html) == "Hello you"
    assert snippet("a\n\n  b", None) == "a b"
    assert snippet("x" * 250, None) == "x" * 200 + "..."


def test_send_request_builds_the_message() -> None:
    built = sendable(
        {
            "from": {"email": "a@example.com", "name": "A"},
            "To": [{"Email": "b@example.com"}],
            "Bcc": ["c@example.com"],
            "Subject": "s",
            "HTML": "<p>x</p>",
            "Tags": ["t1", "t2"],
            "Headers": {"X-Thing": "1"},
            "Attachments": [{"Filename": "f.txt", "Content": "data:text/plain;base64,aGk="}],
        },
        SystemClock(),
    )
    assert built.mail_from == "a@example.com"
    assert built.recipients == ("b@example.com", "c@example.com")
    parsed = parse_message(built.raw)
    assert parsed.headers["X-Tags"] == "t1, t2" and parsed.headers["X-Thing"] == "1"
    assert "Bcc" not in parsed.headers
    assert [a.content for a in parsed.attachments] == [b"hi"]


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({}, "invalid From address"),
        ({"From": {"Email": "a@b.c"}, "To": [{"Email": "x y"}]}, "invalid To address: x y"),
        ({"From": {"Email": "a@b.c"}, "Headers": {"From": "x"}}, 'cannot overwrite header: "From"'),
        ({"From": {"Email": "a@b.c"}, "Headers": {"X-A": "1\r\nBcc: x"}}, "line break"),
        ({"From": {"Email": "a@b.c"}, "Attachments": [{"Filename": "a"}]}, "needs a Filename"),
        ([], "must be a JSON object"),
    ],
)
def test_send_request_refusals(request_: object, error: str) -> None:
    with pytest.raises(SendRefused, match=error):
        sendable(request_, SystemClock())


def test_release_policy_by_domain() -> None:
    allow = ReleasePolicy(allow=("example.net",))
    assert allow.refusal(["a@example.net", "b@sub.EXAMPLE.net"]) is None
    assert allow.refusal(["a@example.net", "b@notexample.net", "c@x.org"]) == (
        "Failed: Addresses do not match the allowlist: b@notexample.net, c@x.org"
    )
    deny = ReleasePolicy(deny=("blocked.com",))
    assert deny.refusal(["a@ok.com"]) is None
    assert (
        deny.refusal(["a@mx.blocked.com"]) == "Failed: Address found on blocklist: a@mx.blocked.com"
    )
    assert checked_addresses(["Ann <a@x.org>", "a@x.org", "b@y.org"]) == ["a@x.org", "b@y.org"]
    with pytest.raises(ReleaseRefused, match="Invalid email address"):
        checked_addresses(["a@x.org\r\nBcc: evil@x.org"])


def test_release_rewrites_date_message_id_and_drops_bcc() -> None:
    raw = (
        b"Date: old\r\nMessage-ID: <old@x>\r\nBcc: secret@x.org,\r\n other@x.org\r\n"
        b"Subject: keep\r\n\r\nDate: in the body stays\r\n"
    )
    out = rewritten(raw, date="Mon, 1 Jan 2024 00:00:00 +0000", message_id="<new@x>")
    assert out == (
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <new@x>\r\n"
        b"Subject: keep\r\n\r\nDate: in the body stays\r\n"
    )


def test_links_and_html_checks() -> None:
    html = (
        '<a href="https://a.example/x">a</a><img src="http://b.example/i.png">'
        '<a href="mailto:x@y">m</a><div style="display: flex; position:absolute"></div>'
        "<style>@media (max-width: 1px) {}</style><form></form>"
    )
    assert find_links("see https://c.example/t.", html) == [
        "https://a.example/x", "http://b.example/i.png", "https://c.example/t",
    ]  # fmt: skip
    check = html_check(html)
    slugs = {w["Slug"]: w["Score"]["Found"] for w in check["Warnings"]}
    assert slugs == {
        "html-form": 1, "html-style": 1, "css-display-flex": 1, "css-position": 1,
        "css-at-media": 1,
    }  # fmt: skip
    assert check["Total"]["Nodes"] == 6 and check["Platforms"] == {}


@pytest.mark.parametrize(
    "hostile",
    [
        "<a" * 60_000,  # 15 s of every Mailpit list (its snippet) before the defusing pass
        "<!--" * 100_000,
        "<![CDATA[" * 100_000,
        "<?" * 100_000,
        "<style>" * 50_000,  # html-check's <style> search was quadratic too: 83 s
    ],
    ids=["open-tags", "comments", "cdata", "processing", "styles"],
)
def test_hostile_html_costs_the_snippet_and_the_checks_bounded_time(hostile: str) -> None:
    started = time.process_time()  # CPU time: no other process's load counts
    snippet(None, hostile)
    find_links(None, hostile)
    html_check(hostile)
    assert time.process_time() - started < 5
