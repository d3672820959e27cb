"""The published OpenAPI schema describes what the server really does (issue 5, item 12).

Schemathesis reads ``/openapi.json`` from a real gateway (uvicorn on a free
port, in a thread of its own) and sends each operation generated requests —
the schema's examples, the coverage phase's boundary and invalid values and
undeclared methods, and bounded fuzzing — then checks every answer against
the schema. Derandomized with a fixed seed, so a CI failure replays locally.

No operation is excluded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import schemathesis
from schemathesis import checks
from schemathesis.checks import CheckContext
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case

from mailgate.app import Gateway, Mode
from mailgate.web.app import Services, create_app
from tests.integration.conftest import fast_settings

MAX_EXAMPLES = 30  # per operation, for the fuzzing phase

#: Every response check that applies to an API without declared security.
#: (ignored_auth and the resource checks need auth schemes or links, which
#: this schema does not declare.)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
    checks.missing_required_header,
    checks.unsupported_method,
    checks.allow_header_conformance,
]

CONFIG = {
    "seed": 20260501,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},  # the schema declares no links to follow
    },
    # GET /inbox/wait holds each request up to ?timeout= seconds (300 at most): here it
    # looks once and answers; waiting itself is tested in test_inbox_test_api.py
    "parameters": {"query.timeout": 0},
}


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dev gateway (REST mail lands in the inbox) served from its own thread and loop."""
    db = Path(tmp_path_factory.mktemp("openapi")) / "mailgate.sqlite3"
    settings = fast_settings(f"sqlite:///{db}", smtp={"enabled": False})
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    url = ""

    async def serve() -> None:
        nonlocal stop, loop, url
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        async with Gateway(settings, mode=Mode.DEV) as gw:
            url = gw.http_url
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="openapi-gateway")
    thread.start()
    try:
        assert ready.wait(30), "the gateway did not start"
        yield url
    finally:
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def _published_schema() -> dict[str, Any]:
    """What ``create_app`` publishes; only the routes matter, so no services are needed.

    (Loaded at import because ``@schema.parametrize()`` needs the operations at
    collection time; :func:`test_the_running_gateway_publishes_this_schema`
    pins it to what the live server serves.)
    """
    stand_in = cast(Services, SimpleNamespace(api_token=None, mode="dev"))
    return create_app(stand_in).openapi()


SCHEMA = _published_schema()
schema = schemathesis.openapi.from_dict(SCHEMA, config=SchemathesisConfig.from_dict(CONFIG))


def test_the_running_gateway_publishes_this_schema(gateway_url: str) -> None:
    assert httpx.get(f"{gateway_url}/openapi.json", timeout=30).json() == SCHEMA


def rejections_are_explained(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """POST /messages refuses items the JSON Schema cannot judge (an address must be
    one RFC 5322 mailbox, a header must build): then every item has a reason."""
    if response.status_code == 422:
        body = response.json()
        assert body["ids"] == [] and body["queued"] == 0, body
        assert body["rejected"] and all(r["reason"] for r in body["rejected"]), body
    return None


#: For POST /messages, ``positive_data_acceptance`` (schema-valid → 2xx) is replaced
#: by :func:`rejections_are_explained`: its documented 422 answers schema-valid items
#: whose addresses or headers do not hold up, and says why for each.
SUBMIT_CHECKS = [c for c in CHECKS if c is not checks.positive_data_acceptance] + [
    rejections_are_explained
]


def url_refusals_are_explained(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """A webhook URL must also parse and resolve to an allowed address, which JSON Schema
    cannot say: a 422 then names the field and why."""
    if response.status_code == 422:
        problems = response.json()["detail"]
        assert problems and all(p["loc"] and p["msg"] for p in problems), problems
    return None


WEBHOOK_CHECKS = [c for c in CHECKS if c is not checks.positive_data_acceptance] + [
    url_refusals_are_explained
]


def timeouts_are_explained(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """GET /inbox/wait answers a schema-valid wait no message matched with 408 and why."""
    if response.status_code == 408:
        assert response.json()["detail"], response.text
    return None


#: A valid wait may time out (408) or carry a ``since`` or ``q`` that cannot be read;
#: a valid ``?pattern=`` may not compile or may backtrack (422s naming the parameter):
#: what JSON Schema cannot say.
WAIT_CHECKS = [c for c in CHECKS if c is not checks.positive_data_acceptance] + [
    timeouts_are_explained,
    url_refusals_are_explained,
]
CODES_CHECKS = WEBHOOK_CHECKS
_CHECKS_OF = {
    "POST /api/v1/messages": SUBMIT_CHECKS,
    "POST /api/v1/webhooks": WEBHOOK_CHECKS,
    "PATCH /api/v1/webhooks/{webhook_id}": WEBHOOK_CHECKS,
    "GET /api/v1/inbox/wait": WAIT_CHECKS,
    "GET /api/v1/inbox/{capture_id}/codes": CODES_CHECKS,
}


@schema.parametrize()
def test_the_api_does_what_its_schema_says(case: Case[Any], gateway_url: str) -> None:
    checks_here = _CHECKS_OF.get(case.operation.label, CHECKS)
    case.call_and_validate(base_url=gateway_url, checks=checks_here)
