"""Prometheus metrics of one gateway: what delivery did, the queue, the SMTP pools, the
SMTP server, webhook deliveries and delivery-report syncs.

Each gateway keeps a registry of its own (several run in one test process). Counters and
histograms are process-local and start at zero with the process, as Prometheus expects
of counters (``rate()`` handles the reset); the queue depth is read from the store at
every scrape and the pool figures from the pools, so gauges are right after a restart and
across processes sharing one queue.

* ``mailgate_messages_total{account,outcome}``: attempts by the state they left their
  message in (``sent``, ``deferred``, ``failed``, ``queued`` for an uncounted wait);
* ``mailgate_attempt_duration_seconds{account,class}``: how long each attempt took,
  ``class`` being its failure class (``none`` when it went through);
* ``mailgate_queue_latency_seconds``: from enqueue to the final state (sent or failed);
* ``mailgate_queue_depth{state}``: messages by state, all tenants;
* ``mailgate_outbox_backlog{consumer}``: events not yet delivered to each outbox consumer;
* ``mailgate_pool_connections{pool,state}`` (``in_use``, ``idle``),
  ``mailgate_pool_connections_open{pool}`` (the two together: a gauge of its own rather
  than a third state, so ``sum by (pool)`` of the first stays the open count) and
  ``mailgate_pool_connections_{created,reused,closed}_total{pool}``;
* ``mailgate_smtp_connections_open`` and ``mailgate_smtp_connections_total``: clients of
  the SMTP server;
* ``mailgate_smtp_messages_total{result,reason}``: messages the SMTP server accepted
  (``accepted``, reason empty) and refusals by reason (``refused``; the reasons are
  :class:`mailgate.ingest.smtp.Refusal`);
* ``mailgate_smtp_received_bytes_total``: the size of the accepted messages;
* ``mailgate_smtp_auth_attempts_total{mechanism,outcome}`` (``success``, ``failure``);
* ``mailgate_webhook_deliveries_total{outcome}`` (``delivered``, ``failed``, ``dead``,
  ``disabled``) and ``mailgate_webhook_delivery_duration_seconds``: each webhook POST;
* ``mailgate_report_sync_total{outcome}`` (``delivered``, ``failed``): each delivery-report
  POST (one batch), and ``mailgate_report_sync_reports_total``: reports acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailgate.model import State

__all__ = ["CONTENT_TYPE", "REPORT_SYNC_OUTCOMES", "WEBHOOK_OUTCOMES", "Metrics", "PoolCounters"]

#: The text exposition format, version 0.0.4 (what Prometheus scrapes by default)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Every pool's counters by ``tenant/account`` (``PoolBoard.snapshot``)
PoolCounters = Callable[[], Mapping[str, Mapping[str, int]]]

_ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 900, 3600, 21600, 86400)

#: What became of one webhook POST: acknowledged (2xx), to be retried, given up on after
#: the dead-letter time, or its endpoint disabled (410). A fixed set, so a label.
WEBHOOK_OUTCOMES = ("delivered", "failed", "dead", "disabled")

#: What became of one delivery-report POST: acknowledged (2xx), or to be retried.
REPORT_SYNC_OUTCOMES = ("delivered", "failed")


class Metrics:
    def __init__(self, pools: PoolCounters | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "mailgate_messages",
            "Delivery attempts by the state they left their message in.",
            ["account", "outcome"],
            registry=self.registry,
        )
        self.attempt_duration = Histogram(
            "mailgate_attempt_duration_seconds",
            "How long one delivery attempt took, by account and failure class.",
            ["account", "class"],
            buckets=_ATTEMPT_BUCKETS,
            registry=self.registry,
        )
        self.queue_latency = Histogram(
            "mailgate_queue_latency_seconds",
            "From enqueue to the final state (sent or failed).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mailgate_queue_depth",
            "Messages by state, all tenants, read from the store at each scrape.",
            ["state"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "mailgate_outbox_backlog",
            "Events not yet delivered to each outbox consumer, read at each scrape.",
            ["consumer"],
            registry=self.registry,
        )
        if pools is not None:
            self.registry.register(_Pools(pools))
        self._smtp_metrics()
        self._webhook_metrics()
        self._report_sync_metrics()

    def _smtp_metrics(self) -> None:
        self.smtp_connections_open = Gauge(
            "mailgate_smtp_connections_open",
            "Clients connected to the SMTP server now.",
            registry=self.registry,
        )
        self.smtp_connections = Counter(
            "mailgate_smtp_connections",
            "Clients that connected to the SMTP server.",
            registry=self.registry,
        )
        self.smtp_messages = Counter(
            "mailgate_smtp_messages",
            "Messages the SMTP server accepted, and its refusals by reason.",
            ["result", "reason"],
            registry=self.registry,
        )
        self._accepted: Counter | None = None  #: its ("accepted", "") child
        self.smtp_received_bytes = Counter(
            "mailgate_smtp_received_bytes",
            "Bytes of the messages the SMTP server accepted.",
            registry=self.registry,
        )
        self.smtp_auth_attempts = Counter(
            "mailgate_smtp_auth_attempts",
            "SMTP AUTH attempts by mechanism and outcome.",
            ["mechanism", "outcome"],
            registry=self.registry,
        )
        self.smtp_handler_calls = Counter(
            "mailgate_smtp_handler_calls",
            "Capture handler calls by kind (webhook, python) and outcome (continue, close,"
            " error, timeout).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.smtp_handler_duration = Histogram(
            "mailgate_smtp_handler_duration_seconds",
            "How long one capture handler call took.",
            ["kind"],
            buckets=_ATTEMPT_BUCKETS,
            registry=self.registry,
        )

    def _webhook_metrics(self) -> None:
        self.webhook_deliveries = Counter(
            "mailgate_webhook_deliveries",
            "Webhook POSTs by what became of them.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in WEBHOOK_OUTCOMES:  # shown at zero before the first of each
            self.webhook_deliveries.labels(outcome)
        self.webhook_delivery_duration = Histogram(
            "mailgate_webhook_delivery_duration_seconds",
            "How long one webhook POST took, answered or not.",
            buckets=_ATTEMPT_BUCKETS,
            registry=self.registry,
        )

    def _report_sync_metrics(self) -> None:
        self.report_syncs = Counter(
            "mailgate_report_sync",
            "Delivery-report POSTs (batches) by what became of them.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in REPORT_SYNC_OUTCOMES:
            self.report_syncs.labels(outcome)
        self.reports_synced = Counter(
            "mailgate_report_sync_reports",
            "Delivery reports the sync endpoint acknowledged.",
            registry=self.registry,
        )

    def attempt(
        self,
        *,
        account: str,
        outcome: str,
        failure_class: str | None,
        seconds: float,
        latency: float | None,
    ) -> None:
        """One recorded attempt; ``latency`` (enqueue → now) when it finished the message."""
        self.messages.labels(account, outcome).inc()
        self.attempt_duration.labels(account, failure_class or "none").observe(seconds)
        if latency is not None:
            self.queue_latency.observe(max(latency, 0.0))

    def smtp_connected(self) -> None:
        self.smtp_connections.inc()
        self.smtp_connections_open.inc()

    def smtp_disconnected(self) -> None:
        self.smtp_connections_open.dec()

    def smtp_accepted(self, size: int) -> None:
        """One message the SMTP server committed and answered 250 for, ``size`` bytes."""
        if self._accepted is None:  # the child looked up once: this is every message
            self._accepted = self.smtp_messages.labels("accepted", "")
        self._accepted.inc()
        self.smtp_received_bytes.inc(size)

    def smtp_refused(self, reason: str) -> None:
        self.smtp_messages.labels("refused", reason).inc()

    def smtp_auth(self, mechanism: str, *, success: bool) -> None:
        self.smtp_auth_attempts.labels(mechanism, "success" if success else "failure").inc()

    def smtp_handler(self, kind: str, outcome: str, seconds: float) -> None:
        """One capture handler call: ``webhook`` or ``python``; ``continue``, ``close``,
        ``error`` or ``timeout``; how long it took."""
        self.smtp_handler_calls.labels(kind, outcome).inc()
        self.smtp_handler_duration.labels(kind).observe(seconds)

    def webhook_delivery(self, outcome: str, seconds: float) -> None:
        """One webhook POST: its outcome (one of :data:`WEBHOOK_OUTCOMES`) and duration."""
        if outcome not in WEBHOOK_OUTCOMES:
            raise ValueError(f"unknown webhook delivery outcome {outcome!r}")
        self.webhook_deliveries.labels(outcome).inc()
        self.webhook_delivery_duration.observe(seconds)

    def report_sync(self, outcome: str, reports: int) -> None:
        """One delivery-report POST of ``reports`` reports and its outcome (one of
        :data:`REPORT_SYNC_OUTCOMES`)."""
        if outcome not in REPORT_SYNC_OUTCOMES:
            raise ValueError(f"unknown report sync outcome {outcome!r}")
        self.report_syncs.labels(outcome).inc()
        if outcome == "delivered":
            self.reports_synced.inc(reports)

    def set_queue_depth(self, counts: Mapping[str, int]) -> None:
        """Every state, zero when no message is in it (a gauge that vanished would leave
        its last value showing)."""
        for state in State:
            self.queue_depth.labels(state.value).set(counts.get(state.value, 0))

    def set_outbox_backlog(self, backlogs: Mapping[str, int]) -> None:
        """Each registered consumer's backlog; one no longer registered is dropped."""
        self.outbox_backlog.clear()
        for consumer, n in backlogs.items():
            self.outbox_backlog.labels(consumer).set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Pools(Collector):
    """The SMTP pools' figures as they are now, read at scrape time."""

    def __init__(self, pools: PoolCounters) -> None:
        self.pools = pools

    def collect(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "mailgate_pool_connections",
            "Open SMTP connections per pool (tenant/account), in use or idle.",
            labels=["pool", "state"],
        )
        open_ = GaugeMetricFamily(
            "mailgate_pool_connections_open",
            "Open SMTP connections per pool (tenant/account): in use and idle together.",
            labels=["pool"],
        )
        totals = {
            name: CounterMetricFamily(
                f"mailgate_pool_connections_{name}",
                f"SMTP connections {text} per pool since the process started.",
                labels=["pool"],
            )
            for name, text in (
                ("created", "opened"),
                ("reused", "reused for another message"),
                ("closed", "closed"),
            )
        }
        for pool, figures in self.pools().items():
            for state in ("in_use", "idle"):
                by_state.add_metric([pool, state], figures.get(state, 0))
            open_.add_metric([pool], figures.get("in_use", 0) + figures.get("idle", 0))
            for name, family in totals.items():
                family.add_metric([pool], figures.get(name, 0))
        yield by_state
        yield open_
        yield from totals.values()

    def describe(self) -> Iterator[Metric]:
        return iter(())
