"""The admin UI against hostile captured mail, over plain HTTP: what a sender controls
(links, subjects, recipients, attachments) never becomes script or an unbounded page
in the UI's origin."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable

import httpx

from mailgate.app import Mode
from mailgate.threaded import GatewayThread


def _send_raw(gw: GatewayThread, raw: str) -> str:
    """``raw`` (CRLF line ends added) captured over SMTP; the capture's id."""
    assert gw.gateway.smtp_address is not None
    with smtplib.SMTP(*gw.gateway.smtp_address, timeout=30) as smtp:
        smtp.sendmail("app@example.com", ["you@example.com"], raw.replace("\n", "\r\n").encode())
    [item] = httpx.get(gw.url + "/api/v1/inbox", timeout=10).json()["items"]
    return str(item["id"])


def test_a_script_link_behind_leading_control_characters_is_not_listed(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    """A browser drops leading C0 controls and spaces from a URL (WHATWG URL §4.4), so
    ``\\x01javascript:`` is a ``javascript:`` link: the Links tab must leave it out as
    it leaves out a plain one (it was listed, a click away from running in the UI's
    origin with only the CSP in the way)."""
    gw = ui_gateway(Mode.DEV)
    hostile = "".join(
        f'<a href="{lead}javascript:document.title=1">x{n}</a>'
        for n, lead in enumerate(["\x01", "\x1f", "&#1;", " \x02 ", "\x0b"])
    )
    html = hostile + '<a href="\x01https://example.com/fine">fine</a>'
    capture_id = _send_raw(
        gw,
        "From: app@example.com\nTo: you@example.com\nSubject: links\n"
        f"Content-Type: text/html; charset=utf-8\n\n{html}\n",
    )
    page = httpx.get(f"{gw.url}/inbox/{capture_id}?tab=links", timeout=10)
    assert page.status_code == 200
    hrefs = re.findall(r'<a href="([^"]*)" rel="noreferrer noopener"', page.text)
    assert hrefs == ["https://example.com/fine"]
    assert "javascript:" not in page.text
    listed = httpx.get(f"{gw.url}/api/v1/inbox/{capture_id}/links", timeout=10).json()
    assert [link["url"] for link in listed["links"]] == ["https://example.com/fine"]


def test_the_list_stays_small_for_a_megabyte_subject_and_10_000_recipients(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    """A list row shows the start of what a sender wrote (the cell clips it anyway): one
    message with a 1 MB subject and 10,000 To addresses made ``/inbox`` 2.2 MB, and
    fifty of them (one page; 10 MB messages are captured) would make it hundreds."""
    gw = ui_gateway(Mode.DEV)
    subject = "S" * 1_000_000
    folded = "\n ".join(subject[i : i + 900] for i in range(0, len(subject), 900))
    to = ",\n ".join(f"r{i}@example.com" for i in range(10_000))
    sender = "\n ".join(["F" * 900] * 100)
    capture_id = _send_raw(
        gw, f"From: {sender} <app@example.com>\nTo: {to}\nSubject: {folded}\n\nbody\n"
    )
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        page = http.get("/inbox")
        assert page.status_code == 200
        assert f'href="/inbox/{capture_id}">SSSS' in page.text
        assert "r0@example.com" in page.text and "FFFF" in page.text
        assert len(page.content) < 20_000
        with http.stream("GET", "/ui/events/inbox") as events:  # the live list: the same rows
            received = ""
            for chunk in events.iter_text():
                received += chunk
                if "event: rows" in received and received.count("\n\n") >= 3:
                    break
                assert len(received) < 40_000
        message = http.get(f"/inbox/{capture_id}")  # the message's own page has it all
        assert message.status_code == 200 and folded.replace("\n", "") in message.text


def test_an_attachment_keeps_its_sandbox_policy_on_the_ui_route(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    """An attachment goes out with ``Content-Security-Policy: sandbox`` (web/downloads.py):
    opened anyway, an HTML or SVG one runs nothing and has no origin. On the UI's route
    the UI's own policy replaced it (whose ``script-src 'self'`` admits this origin's
    script); both are sent now, and a browser enforces each."""
    gw = ui_gateway(Mode.DEV)
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    capture_id = _send_raw(
        gw,
        "From: app@example.com\nTo: you@example.com\nSubject: files\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="B"\n\n--B\nContent-Type: text/plain\n\nhi\n'
        '--B\nContent-Type: image/svg+xml\nContent-Disposition: attachment; filename="a.svg"\n\n'
        f"{svg}\n--B\nContent-Type: text/html\n"
        'Content-Disposition: attachment; filename="b.html"\n\n'
        "<script>alert(2)</script>\n--B--\n",
    )
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        for index, media_type in enumerate(["image/svg+xml", "text/html"]):
            got = http.get(f"/inbox/{capture_id}/attachments/{index}")
            assert got.status_code == 200
            assert got.headers["content-type"] == media_type
            assert got.headers["content-disposition"].startswith("attachment;")
            assert got.headers["x-content-type-options"] == "nosniff"
            policies = got.headers.get_list("content-security-policy")
            assert "sandbox" in policies, policies
