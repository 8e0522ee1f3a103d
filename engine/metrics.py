"""Prometheus metrics. The object takes a registry, so each test gets a fresh one.

No label ever carries a customer id, event id or other unbounded value: channels and
event types are bounded by configuration, DLQ reasons by the error codes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from engine import __version__

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


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "beacon_events_total",
            "Interaction events received",
            ["path", "channel", "type", "outcome"],
            registry=r,
        )
        self.dlq = Counter(
            "beacon_dlq_total", "Events rejected to the DLQ or with 4xx", ["path", "reason"], registry=r
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
            "Per-batch stage latency",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "beacon_batch_size",
            "Events per state round trip",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.alerts = Counter("beacon_alerts_total", "Risk alerts raised", ["severity", "rule"], registry=r)
        self.degraded = Counter(
            "beacon_degraded_decisions_total",
            "Decisions answered without state (fallback)",
            ["path"],
            registry=r,
        )
        self.store_errors = Counter("beacon_store_errors_total", "Redis failures", registry=r)
        self.webhook_failures = Counter(
            "beacon_alert_webhook_failures_total",
            "Alert webhook deliveries given up after every retry",
            ["severity"],
            registry=r,
        )
        self.overloaded = Counter("beacon_overloaded_total", "Requests shed with 429", registry=r)
        self.queue_depth = Gauge(
            "beacon_decision_queue_depth", "Events waiting for the decision loop", registry=r
        )
        self.build = Info("beacon_build", "Build and content versions", registry=r)
        self.build.info({"version": __version__})
        self.rules_reloads = Counter(
            "beacon_rules_reloads_total", "Rule versions this worker switched to", registry=r
        )
        self.rules_reload_failures = Counter(
            "beacon_rules_reload_failures_total",
            "Rule versions refused because they did not compile; the running version stayed",
            registry=r,
        )

    def rules_version(self, version: str) -> None:
        """The active rules version, as the ``rules`` label of ``beacon_build_info``."""
        self.build.info({"version": __version__, "rules": version})

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
