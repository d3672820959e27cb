"""The admin UI in a real browser: Debian's Chromium driven by Playwright (PEERS.md).

``browser`` starts Chromium for each test and closes it after (see its note); each
test gets a fresh context (cookies, credentials) from ``new_page``.
Playwright's sync API cannot run inside an event loop, so the browser tests are plain
functions and the gateway runs in a thread of its own (:class:`GatewayThread`).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from mailgate.app import Gateway, Mode
from mailgate.threaded import GatewayThread
from tests.integration.conftest import fast_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: records every CSP violation the page reports, before any of its own scripts run
_CSP_LISTENER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Chromium for one test: Playwright's sync API keeps its event loop marked running
    in this thread while it is open, and the async tests an xdist worker runs next would
    find it there."""
    if shutil.which("chromium") is None or not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (.ci/run)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watched:
    """A page and what went wrong on it: console errors and CSP violations."""

    page: Page
    context: BrowserContext
    errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__csp || []")
        return found


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Watched]]:
    """``new_page(**context_options)``: a page in a fresh context, watched."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> Watched:
        context = browser.new_context(**options)
        contexts.append(context)
        context.add_init_script(_CSP_LISTENER)
        page = context.new_page()
        watched = Watched(page, context)

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                watched.errors.append(message.text)

        page.on("console", console)
        page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
        return watched

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def ui_gateway(db_url: str) -> Iterator[Callable[..., GatewayThread]]:
    """``ui_gateway(mode=Mode.SERVE, **settings)``: a started gateway (stopped at the
    end); the dashboard's refresh is its default, pokes make it faster."""
    with contextlib.ExitStack() as stack:

        def start(mode: Mode = Mode.SERVE, **overrides: Any) -> GatewayThread:
            gateway = Gateway(fast_settings(db_url, **overrides), mode=mode)
            return stack.enter_context(GatewayThread(gateway))

        yield start
