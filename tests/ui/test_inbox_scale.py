"""The inbox pages with 100,000 captured messages: they read one page by the store's
indexes; the time each takes is printed (issue 11 asks < 100 ms: docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from mailgate.app import Mode
from mailgate.store.schema import inbox, inbox_raw
from mailgate.threaded import GatewayThread
from tests.ui.scale import TOTAL, best_of_ten, fill

RAW = b"From: app@example.com\r\nTo: you@example.com\r\nSubject: s\r\n\r\nbody\r\n"


def _id(n: int) -> str:
    return f"00000000-0000-7000-8000-{n:012d}"  # ordered as captured, like new_id()


def _row(n: int, now: datetime) -> dict[str, object]:
    return {
        "id": _id(n),
        "tenant": "default",
        "source": "smtp",
        "received_at": now - timedelta(seconds=TOTAL - n),
        "mail_from": "app@example.com",
        "rcpt_to": ["you@example.com"],
        "subject": f"captured {n}",
        "from_header": "app@example.com",
        "to_header": "you@example.com",
        "headers": {},
        "text_body": "body",
        "attachments": [],
        "size": len(RAW),
        "box": f"box{n % 4}",
        "read": n % 3 == 0,
        "tags": [],
    }


def test_the_inbox_pages_render_one_page_of_100_000_messages(
    ui_gateway: Callable[..., GatewayThread], db_url: str
) -> None:
    fill(db_url, inbox, _row)
    fill(db_url, inbox_raw, lambda n, _: {"id": _id(n), "raw": RAW})
    gw = ui_gateway(Mode.DEV)
    newest = _id(TOTAL - 1)
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        first = http.get("/inbox")
        assert first.status_code == 200
        assert f'href="/inbox/{newest}"' in first.text
        assert first.text.count('<tr class="msg') == 50
        assert "25000" in first.text  # each inbox's count in the switcher
        older = http.get("/inbox?cursor=" + first.text.split("cursor=")[1].split('"')[0])
        assert older.status_code == 200
        for path in ("/inbox", "/inbox?inbox=box2", f"/inbox/{newest}"):
            # measured, not asserted (a loaded CI machine is no clock): docs/benchmarks.md
            print(f"GET {path} with {TOTAL} messages: {best_of_ten(http, path) * 1000:.0f} ms")
