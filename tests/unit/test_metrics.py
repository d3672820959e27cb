"""Webhook delivery figures (issue 7), read back through prometheus-client's parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailgate.metrics import Metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }


def deliveries(figures: Samples) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: n
        for (name, labels), n in figures.items()
        if name == "mailgate_webhook_deliveries_total"
    }


def test_every_outcome_shows_from_the_start() -> None:
    """A series that appears only at its first increment hides that first one from
    ``rate()``; the outcomes are a fixed set, so each starts at zero."""
    assert deliveries(samples(Metrics())) == {
        "delivered": 0,
        "failed": 0,
        "dead": 0,
        "disabled": 0,
    }


def test_deliveries_by_outcome_and_their_duration() -> None:
    metrics = Metrics()
    metrics.webhook_delivery("delivered", 0.2)
    metrics.webhook_delivery("delivered", 0.03)
    metrics.webhook_delivery("failed", 4.0)
    metrics.webhook_delivery("disabled", 0.01)
    figures = samples(metrics)
    assert deliveries(figures) == {"delivered": 2, "failed": 1, "dead": 0, "disabled": 1}
    duration = "mailgate_webhook_delivery_duration_seconds"
    assert figures[(f"{duration}_count", ())] == 4
    assert figures[(f"{duration}_sum", ())] == pytest.approx(4.24)
    assert figures[(f"{duration}_bucket", (("le", "0.05"),))] == 2  # 0.01 and 0.03


def test_an_unknown_outcome_is_a_bug_not_a_new_series() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="acknowledged"):
        metrics.webhook_delivery("acknowledged", 0.1)
    assert sum(deliveries(samples(metrics)).values()) == 0
