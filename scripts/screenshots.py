"""Screenshots of the admin UI for the docs (issue 11): ``docs/screenshots/``.

    .venv/bin/python scripts/screenshots.py

Starts a development gateway (``mailgate dev``: capture, nothing leaves the machine) in
a thread, on a temporary SQLite file and loopback ports; sends a few realistic messages
over SMTP and the REST API; then photographs each page with Debian's Chromium at laptop
(1280x800) and phone (390x844) width, light and dark, as
``docs/screenshots/<page>-<laptop|phone>-<light|dark>.png``.
"""

from __future__ import annotations

import smtplib
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from mailgate.app import Gateway, Mode
from mailgate.settings import Settings
from mailgate.threaded import GatewayThread

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {"laptop": (1280, 800), "phone": (390, 844)}
SCHEMES = ("light", "dark")

SIGN_IN_HTML = """\
<!doctype html>
<html><body style="font-family: sans-serif; background: #f4f5f7; padding: 24px">
  <div style="max-width: 480px; margin: auto; background: #fff; padding: 24px;
              border-radius: 8px">
    <h1 style="font-size: 20px">Sign in to Acme</h1>
    <p>Hi Dana, use this code to finish signing in:</p>
    <p style="font-size: 28px; letter-spacing: 6px; font-weight: bold">482 913</p>
    <p>or click the button:</p>
    <p><a href="https://app.acme.example/login?token=7f3c9a" style="display: inline-block;
       background: #2563eb; color: #fff; padding: 10px 18px; border-radius: 6px;
       text-decoration: none">Sign in</a></p>
    <p style="color: #666; font-size: 12px">The code expires in 10 minutes. If you did
    not ask to sign in, ignore this email.</p>
  </div>
</body></html>
"""


def settings(db_url: str) -> Settings:
    return Settings(
        db_url=db_url,
        http={"host": "127.0.0.1", "port": 0},
        smtp={"host": "127.0.0.1", "port": 0, "shutdown_grace": 1.0},
        delivery={"poll_interval": 0.1, "smtp_timeout": 5.0},
        inbox={"sort_by": "header"},
    )


def smtp_mail(address: tuple[str, int]) -> None:
    sign_in = EmailMessage()
    sign_in["From"] = "Acme <no-reply@acme.example>"
    sign_in["To"] = "dana@example.com"
    sign_in["Subject"] = "Your Acme sign-in code: 482913"
    sign_in.set_content(
        "Hi Dana,\n\nyour sign-in code is 482913.\n\n"
        "Or open https://app.acme.example/login?token=7f3c9a\n"
    )
    sign_in.add_alternative(SIGN_IN_HTML, subtype="html")

    invoice = EmailMessage()
    invoice["From"] = "Billing <billing@acme.example>"
    invoice["To"] = "dana@example.com"
    invoice["Subject"] = "Invoice INV-2024-0117"
    invoice.set_content(
        "Hello Dana,\n\nattached is your invoice for January (EUR 49.00).\n\n"
        "Thank you,\nAcme billing\n"
    )
    invoice.add_attachment(
        b"date,item,amount\n2024-01-31,Team plan,49.00\n",
        maintype="text",
        subtype="csv",
        filename="INV-2024-0117.csv",
    )

    ci = EmailMessage()
    ci["From"] = "CI <ci@acme.example>"
    ci["To"] = "qa@example.com"
    ci["Subject"] = "Welcome to Acme, test user 42"
    ci["X-Mailgate-Inbox"] = "ci"
    ci.set_content("Welcome aboard! Confirm your address: https://app.acme.example/c/42\n")

    with smtplib.SMTP(*address, timeout=10) as smtp:
        for message in (invoice, ci, sign_in):  # the sign-in mail newest
            message["Date"] = formatdate(localtime=True)
            message["Message-ID"] = make_msgid(domain="acme.example")
            smtp.send_message(message)


def rest_mail(url: str) -> list[str]:
    bodies = [
        {
            "from": "orders@acme.example",
            "to": "lee@example.com",
            "subject": "Order #1042 has shipped",
            "text": "Your order #1042 is on its way. Track it at https://acme.example/t/1042",
        },
        {
            "from": "alerts@acme.example",
            "to": ["ops@example.com", "oncall@example.com"],
            "subject": "Weekly report: 1,284 messages delivered",
            "text": "Delivered 1,284, deferred 3, failed 0.",
            "html": "<p>Delivered <b>1,284</b>, deferred 3, failed 0.</p>",
        },
    ]
    ids: list[str] = []
    for body in bodies:
        answer = httpx.post(url + "/api/v1/messages", json=body, timeout=10)
        answer.raise_for_status()
        ids += answer.json()["ids"]
    return ids


def wait_for(predicate: Any, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not catch up")
        time.sleep(0.1)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mailgate-shots-") as tmp:
        gateway = Gateway(settings(f"sqlite:///{Path(tmp) / 'mailgate.sqlite3'}"), mode=Mode.DEV)
        with GatewayThread(gateway) as gw:
            url = gw.gateway.http_url
            assert gw.gateway.smtp_address is not None
            smtp_mail(gw.gateway.smtp_address)
            queued = rest_mail(url)

            def delivered() -> bool:
                states = [
                    httpx.get(f"{url}/api/v1/messages/{i}", timeout=10).json()["state"]
                    for i in queued
                ]
                return all(s in ("sent", "failed") for s in states)

            wait_for(delivered)
            inbox = httpx.get(url + "/api/v1/inbox", timeout=10).json()["items"]
            sign_in = next(i for i in inbox if "sign-in" in i["subject"])
            pages = {
                "dashboard": "/",
                "queue": "/queue",
                "queue-message": f"/queue/{queued[-1]}",
                "inbox": "/inbox",
                "inbox-message": f"/inbox/{sign_in['id']}",
                "accounts": "/accounts",
                "webhooks": "/webhooks",
                "settings": "/settings",
            }
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for scheme in SCHEMES:
                    for size, (width, height) in VIEWPORTS.items():
                        context = browser.new_context(
                            viewport={"width": width, "height": height},
                            color_scheme=scheme,  # type: ignore[arg-type]
                        )
                        page = context.new_page()
                        for name, path in pages.items():
                            page.goto(url + path, wait_until="load")
                            page.wait_for_timeout(300)  # htmx settles, the mail frame loads
                            target = OUT / f"{name}-{size}-{scheme}.png"
                            page.screenshot(path=str(target), full_page=False)
                            print(target.relative_to(ROOT))
                        context.close()
                browser.close()
    total = sum(p.stat().st_size for p in OUT.glob("*.png"))
    print(f"{len(list(OUT.glob('*.png')))} screenshots, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
