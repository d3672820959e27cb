"""The admin UI's pure parts: signed sessions and CSRF tokens, the SVG chart, the SSE
event format."""

from __future__ import annotations

import re

from mailgate.ui.chart import bar_chart
from mailgate.ui.context import UiContext
from mailgate.ui.live import sse_event
from mailgate.ui.options import UiOptions
from mailgate.ui.sessions import SESSION_LIFETIME, SessionSigner, session_key

NOW = 1_800_000_000.0


def test_a_session_reads_back_until_it_expires() -> None:
    signer = SessionSigner(b"k" * 32)
    session = signer.new(NOW)
    assert signer.read(session.cookie, NOW + 10) == session
    assert signer.read(session.cookie, NOW + SESSION_LIFETIME) is None
    assert signer.read(session.cookie, NOW - 60) is None  # issued in the future: forged


def test_a_cookie_signed_with_another_key_or_altered_is_refused() -> None:
    session = SessionSigner(b"k" * 32).new(NOW)
    other = SessionSigner(b"o" * 32)
    assert other.read(session.cookie, NOW) is None
    sid, issued, signature = session.cookie.split(".")
    mine = SessionSigner(b"k" * 32)
    for forged in (f"{sid}.{issued}", f"x{sid}.{issued}.{signature}", "é.1.x", "", "a.b.c.d"):
        assert mine.read(forged, NOW) is None, forged


async def test_without_a_store_a_logout_ends_the_session_in_this_process() -> None:
    ui = UiContext(UiOptions(), api_token=None)
    ended, kept = ui.signer.new(NOW), ui.signer.new(NOW)
    await ui.end(ended, NOW + 1)
    assert await ui.ended(ended) and not await ui.ended(kept)
    later = ui.signer.new(NOW + SESSION_LIFETIME)
    await ui.end(later, NOW + SESSION_LIFETIME + 1)  # past the first one's expiry: forgotten
    assert not await ui.ended(ended) and await ui.ended(later)


def test_the_csrf_token_belongs_to_one_session() -> None:
    signer = SessionSigner(b"k" * 32)
    one, two = signer.new(NOW), signer.new(NOW)
    assert signer.csrf_ok(one, signer.csrf_token(one))
    assert not signer.csrf_ok(one, signer.csrf_token(two))
    assert not signer.csrf_ok(one, None)
    assert not signer.csrf_ok(one, "ü")


def test_the_session_key_follows_the_secret_and_the_credentials() -> None:
    key = session_key("secret", "ops", "pass", None)
    assert key == session_key("secret", "ops", "pass", None)  # survives a restart
    assert key != session_key("secret", "ops", "new pass", None)  # a new password: logged out
    assert key != session_key("other", "ops", "pass", None)
    assert session_key(None, "ops") != session_key(None, "ops")  # random per process


def test_the_chart_has_one_bar_per_minute_scaled_to_the_busiest() -> None:
    svg = bar_chart([0] * 58 + [5, 10], label="sent <per> minute")
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([\d.]+)"', svg)]
    assert len(heights) == 60 and heights[:58] == [0] * 58
    assert heights[59] == 2 * heights[58] > 0
    assert 'aria-label="sent &lt;per&gt; minute"' in svg
    assert "style" not in svg  # the CSP allows no inline style
    assert "<title>10 sent, 1 min ago</title>" in svg
    assert 'height="0"' in bar_chart([0, 0], label="idle")  # no division by zero


def test_an_sse_event_carries_each_line_as_data() -> None:
    assert sse_event("queue", "<p>a</p>\n<p>b</p>\n") == (
        "event: queue\ndata: <p>a</p>\ndata: <p>b</p>\n\n"
    )
    assert sse_event("empty", "") == "event: empty\ndata: \n\n"
