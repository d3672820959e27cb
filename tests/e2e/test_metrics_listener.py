"""``mailgate serve --metrics HOST:PORT`` (issue 7): a second listener, announced on
stdout, where a scraper reads /metrics without the API token, and that serves nothing
else of the API."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import StartSync, Workspace

pytestmark = pytest.mark.e2e

TOKEN = "e2e-metrics-token-Qv4"
METRICS_BANNER = re.compile(r"^mailgate serve: metrics (http://127\.0\.0\.1:(\d+)/metrics)$", re.M)


def test_metrics_flag_serves_metrics_without_the_token_and_nothing_else(
    mailgate: StartSync, workspace: Workspace
) -> None:
    mg = mailgate(
        "serve", "--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--db", str(workspace.db),
        env={"MAILGATE_API_TOKEN": TOKEN},
    )  # fmt: skip
    match = METRICS_BANNER.search(mg.stdout())
    assert match is not None, mg.output()
    url, port = match[1], int(match[2])
    assert port != 0 and f":{port}" not in mg.web  # a port of its own, the one it bound

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    message = {"to": "a@example.com", "subject": "counted", "text": "x"}
    with httpx.Client(timeout=10) as http:
        assert http.post(f"{mg.web}/api/v1/messages", json=message, headers=bearer).is_success
        assert http.get(f"{mg.web}/metrics").status_code == 401  # the API's copy is guarded
        scraped = http.get(url)  # no token
        base = url.removesuffix("/metrics")
        for path in ("/api/v1/messages", "/api/v1/stats", "/openapi.json"):
            for headers in ({}, bearer):
                assert http.get(base + path, headers=headers).status_code == 404, path

    assert scraped.status_code == 200, scraped.text
    depth = {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
        if sample.name == "mailgate_queue_depth"
    }
    assert sum(depth.values()) == 1  # the message just queued, read from the store
