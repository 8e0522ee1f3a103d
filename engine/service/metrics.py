"""Prometheus metrics of a worker. The object takes a registry, so each test gets a fresh one.

The catalogue, with what each series means and which alert or panel reads it, is
docs/metrics.md; tests/unit/test_metrics_catalogue.py keeps the two in step.

No label ever carries a customer id, event id or other unbounded value: channels and
event types are bounded by configuration, DLQ reasons by the error codes, rules, offers
and typologies by the published rule pack, partitions by the topics' partition count.

>>> m = Metrics()
>>> m.decided("http", "atm", "allow", "offer")
>>> m.registry.get_sample_value(
...     "beacon_decisions_total", {"path": "http", "channel": "atm", "verdict": "allow", "action": "offer"})
1.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.platform_collector import PlatformCollector

if TYPE_CHECKING:
    from engine.store.nodes import NodeReport
from prometheus_client.process_collector import ProcessCollector

from engine import __version__
from engine.domain.decision import Decision
from engine.service.shadow import ShadowMetrics

# Fine enough for single milliseconds at the low end, up to the 2.5 s of a stalled path.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
# Stages inside one batch are sub-millisecond at low load.
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, *LATENCY_BUCKETS[1:])
# Risk officers work in minutes to days.
DESK_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)
STAGES = ("state", "models", "rules", "record", "publish")
RESPONSES = frozenset({"accepted", "clicked", "declined", "dismissed", "ignored"})
# Which limit refused a request with 429 (agents/web.py, engine/http/lookups.py).
RATE_LIMIT_REASONS = ("credential", "worker", "unauthenticated_address", "unauthenticated_worker")


class Outage:
    """Errors of one dependency by kind, and each recovery after them (a reconnect as
    the service sees it: the client library reconnects by itself underneath).

    >>> from prometheus_client import CollectorRegistry
    >>> r = CollectorRegistry()
    >>> o = Outage(Counter("e", "", ["kind"], registry=r), Counter("rc", "", registry=r))
    >>> o.ok(); o.failed("timeout"); o.failed("connection"); o.ok(); o.ok()
    >>> r.get_sample_value("rc_total"), r.get_sample_value("e_total", {"kind": "timeout"})
    (1.0, 1.0)
    """

    def __init__(self, errors: Counter, reconnects: Counter) -> None:
        self.errors = errors
        self.reconnects = reconnects
        self.failing = False

    def failed(self, kind: str) -> None:
        self.errors.labels(kind).inc()
        self.failing = True

    def ok(self) -> None:
        if self.failing:
            self.failing = False
            self.reconnects.inc()


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if process:  # CPU, memory, open files of this process: an SRE's first questions
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.events = Counter(
            "beacon_events_total",
            "Interaction events received, by what became of them (decided, replayed, dlq, unavailable)",
            ["path", "channel", "type", "outcome"],
            registry=r,
        )
        self.decisions = Counter(
            "beacon_decisions_total",
            "Fresh decisions by risk verdict and the kind of the first action shown "
            "(offer, service, retention, risk, fallback, none; feedback: a label event acknowledged)",
            ["path", "channel", "verdict", "action"],
            registry=r,
        )
        self.dlq = Counter(
            "beacon_dlq_total", "Events rejected to the DLQ or with 4xx", ["path", "reason"], registry=r
        )
        self.records_refused = Counter(
            "beacon_records_refused_total",
            "Records on a signed topic refused to <topic>.dlq: unsigned, forged or by an unknown key",
            ["topic", "reason"],
            registry=r,
        )
        self.decision_latency = Histogram(
            "beacon_decision_latency_seconds",
            "Event to decision: HTTP from request read to response; Kafka from the record's timestamp to "
            "the decision's delivery",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "beacon_stage_latency_seconds",
            "Stage latency: state (Redis round trip of a batch), models and rules (a batch), "
            "record (contact-policy commit of a batch), publish (a decision's delivery to the broker)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "beacon_batch_size",
            "Events per state round trip",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.rule_fires = Counter(
            "beacon_rule_fires_total", "Risk rules that fired, by rule", ["rule", "severity"], registry=r
        )
        self.alerts = Counter(
            "beacon_alerts_total",
            "Risk alerts raised by decisions (before grouping on the desk)",
            ["severity", "rule", "typology"],
            registry=r,
        )
        self.offers_shown = Counter(
            "beacon_offers_shown_total", "Actions shown to customers", ["offer", "channel"], registry=r
        )
        self.offer_responses = Counter(
            "beacon_offer_responses_total",
            "Customers' answers to offers (offer_response events)",
            ["offer", "response"],
            registry=r,
        )
        self.conversions = Counter(
            "beacon_conversions_total",
            "Products opened as the core systems report them (conversion events)",
            ["offer", "channel"],
            registry=r,
        )
        self.degraded = Counter(
            "beacon_degraded_decisions_total",
            "Decisions answered without state (fallback)",
            ["path"],
            registry=r,
        )
        self.store_errors = Counter(
            "beacon_store_errors_total", "Redis failures, by kind", ["kind"], registry=r
        )
        self.store_reconnects = Counter(
            "beacon_store_reconnects_total", "Redis answered again after failing", registry=r
        )
        self.broker_errors = Counter(
            "beacon_broker_errors_total",
            "Broker failures: records not delivered (produce) or fetches that failed",
            ["kind"],
            registry=r,
        )
        self.broker_reconnects = Counter(
            "beacon_broker_reconnects_total", "Broker deliveries succeeded again after failing", registry=r
        )
        self.consumer_lag = Gauge(
            "beacon_consumer_lag_records",
            "Records in a partition this worker owns that it has not committed yet",
            ["topic", "partition"],
            registry=r,
        )
        self.webhook_sent = Counter(
            "beacon_alert_webhook_sent_total", "Alert webhook deliveries received", ["receiver"], registry=r
        )
        self.webhook_retries = Counter(
            "beacon_alert_webhook_retries_total",
            "Alert webhook attempts that failed and were rescheduled",
            ["receiver"],
            registry=r,
        )
        self.webhook_dead_letters = Counter(
            "beacon_alert_webhook_dead_letters_total",
            "Alert webhook deliveries dead-lettered: not received within the horizon",
            ["receiver"],
            registry=r,
        )
        self.webhook_pending = Gauge(
            "beacon_alert_webhook_pending", "Alert webhook deliveries waiting in Redis", registry=r
        )
        self.overloaded = Counter("beacon_overloaded_total", "Requests shed with 429", registry=r)
        self.offer_scoring = Counter(
            "beacon_offer_scoring_requests_total",
            "Outbound offer scoring requests (POST /v1/offers/score) by outcome: scored or the error code",
            ["outcome"],
            registry=r,
        )
        self.rate_limited = Counter(
            "beacon_rate_limited_total",
            "Requests refused with 429 by a rate limit, by reason: credential, worker, "
            "unauthenticated_address, unauthenticated_worker",
            ["reason"],
            registry=r,
        )
        for reason in RATE_LIMIT_REASONS:
            self.rate_limited.labels(reason)
        self.browser_refused = Counter(
            "beacon_http_refused_total",
            "State changes refused before they were read: origin_refused (the session cookie sent "
            "from a page that is not the console's), unsupported_media_type (a body that is not JSON)",
            ["reason"],
            registry=r,
        )
        for code in ("origin_refused", "unsupported_media_type"):
            self.browser_refused.labels(code)
        self.spooled = Gauge(
            "beacon_spooled_records",
            "Records of degraded HTTP answers (audit record, event) waiting in memory for the broker",
            registry=r,
        )
        self.spool_dropped = Counter(
            "beacon_spool_dropped_total",
            "Records dropped undelivered: the spool was full (broker down too long), or the broker "
            "refused a spooled or outbox record for good",
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "beacon_outbox_backlog",
            "Decisions whose records (audit, alerts, label) wait in the Redis outbox for the relay",
            registry=r,
        )
        self.outbox_relayed = Counter(
            "beacon_outbox_relayed_total",
            "Outbox entries (one per decision) delivered to Kafka and deleted by this worker's relay",
            registry=r,
        )
        node = ["node"]
        self.redis_node_up = Gauge(
            "beacon_redis_node_up",
            "1 if the Redis node answered this worker's last probe (every 5 s), by role (primary, "
            "replica; unknown when it did not answer)",
            ["node", "role"],
            registry=r,
        )
        self.redis_node_memory = Gauge(
            "beacon_redis_node_used_memory_bytes", "Memory the Redis node reports in use (INFO used_memory)",
            node, registry=r,
        )  # fmt: skip
        self.redis_node_ops = Gauge(
            "beacon_redis_node_ops_per_second", "Commands per second the Redis node reports (instantaneous)",
            node, registry=r,
        )  # fmt: skip
        self.redis_node_probe = Gauge(
            "beacon_redis_node_probe_seconds", "How long the node took to answer the last probe (INFO)",
            node, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "beacon_decision_queue_depth", "Events waiting for the decision loop", registry=r
        )
        self.ready = Gauge(
            "beacon_ready",
            "1 once a component is ready (redis, broker, rules)",
            ["component"],
            registry=r,
        )
        self.build = Info("beacon_build", "Build and content versions", registry=r)
        self.build.info({"version": __version__, "rules": ""})
        self.rules_reloads = Counter(
            "beacon_rules_reloads_total", "Rule versions this worker switched to", registry=r
        )
        self.shadow = ShadowMetrics(r)  # the shadow rules version (engine/service/shadow.py)
        self.rules_reload_failures = Counter(
            "beacon_rules_reload_failures_total",
            "Rule versions refused because they did not compile; the running version stayed",
            registry=r,
        )
        self.desk_alerts = Counter(
            "beacon_desk_alerts_total",
            "Alert records taken by the desk: raised (a new alert) or grouped into an open one",
            ["severity", "typology", "change"],
            registry=r,
        )
        self.desk_moves = Counter(
            "beacon_desk_moves_total",
            "Alert lifecycle moves (ack, assign, escalate, resolve) by who made them (officer, sla)",
            ["action", "severity", "by"],
            registry=r,
        )
        self.time_to_ack = Histogram(
            "beacon_alert_time_to_acknowledge_seconds",
            "Alert raised to first acknowledgement or assignment",
            ["severity"],
            buckets=DESK_BUCKETS,
            registry=r,
        )
        self.time_to_resolve = Histogram(
            "beacon_alert_time_to_resolve_seconds",
            "Alert raised to resolution",
            ["severity", "disposition"],
            buckets=DESK_BUCKETS,
            registry=r,
        )
        self.alerts_open = Gauge(
            "beacon_alerts_open",
            "Unresolved alerts on the desk by status (the same for every worker: take max)",
            ["severity", "status"],
            registry=r,
        )

        self.known_offers: frozenset[str] = frozenset()
        self.lag_series: set[tuple[str, str]] = set()  # (topic, partition) with a lag series
        self.store = Outage(self.store_errors, self.store_reconnects)
        self.broker = Outage(self.broker_errors, self.broker_reconnects)

    def rejected(self, path: str, reason: str) -> None:
        """An event refused (HTTP 4xx or the DLQ): by reason, and among the events in."""
        self.dlq.labels(path, reason).inc()
        self.events.labels(path, "invalid", "invalid", "dlq").inc()

    def decided(self, path: str, channel: str, verdict: str, action: str) -> None:
        self.decisions.labels(path, channel, verdict, action).inc()

    def observe_decision(self, path: str, decision: Decision, label: Mapping[str, Any] | None) -> None:
        """Count a fresh decision once (a replayed one was counted when it was made);
        ``label`` is its event's (``engine.domain.labels.label_of``, as the outcome carries it)."""
        event = decision.event
        shown = decision.actions or ((decision.fallback,) if decision.fallback else ())
        # A label event's acknowledgement is no decision: counted apart, not as a fallback.
        kind = "feedback" if decision.feedback else shown[0].kind if shown else "none"
        self.decided(path, event.channel, decision.risk.verdict, kind)
        if decision.degraded:
            self.degraded.labels(path).inc()
        for action in decision.actions:
            self.offers_shown.labels(action.id, event.channel).inc()
        for fired in decision.explanation.get("rules", ()):  # alerts held back by suppression too
            self.rule_fires.labels(fired["id"], fired["severity"]).inc()
        for alert in decision.alerts:
            typology = alert.typologies[0] if alert.typologies else "none"
            self.alerts.labels(alert.severity, alert.rule_id, typology).inc()
        if label is not None and label["kind"] == "offer":
            # Both come from the channel: only the rule pack's offers and known answers
            # become label values, so a client cannot flood Prometheus with series.
            offer = label["action_id"] if label["action_id"] in self.known_offers else "unknown"
            response = label["response"] if label["response"] in RESPONSES else "other"
            self.offer_responses.labels(offer, response).inc()
        if event.type == "conversion":  # the product: an offer of the pack, or "other" (bounded)
            product = event.attributes.get("product")
            self.conversions.labels(product if product in self.known_offers else "other", event.channel).inc()

    def rules_version(self, version: str, offers: frozenset[str] = frozenset()) -> None:
        """The active rules version, as the ``rules`` label of ``beacon_build_info``, and
        its offers (the only ``offer`` label values a response can take)."""
        self.build.info({"version": __version__, "rules": version})
        self.known_offers = offers

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def record_nodes(metrics: Metrics, reports: Sequence[NodeReport]) -> None:
    """Per-node gauges from one probe (engine/store/nodes.py). A node that moved from primary
    to replica (a failover) loses its old role's series."""
    for report in reports:
        for role in ("primary", "replica", "unknown"):
            if role != report.role:
                with contextlib.suppress(KeyError):
                    metrics.redis_node_up.remove(report.node, role)
        metrics.redis_node_up.labels(report.node, report.role).set(1 if report.up else 0)
        if report.up:
            metrics.redis_node_memory.labels(report.node).set(report.used_memory_bytes)
            metrics.redis_node_ops.labels(report.node).set(report.ops_per_second)
            metrics.redis_node_probe.labels(report.node).set(report.info_seconds)
