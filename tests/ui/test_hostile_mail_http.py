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
