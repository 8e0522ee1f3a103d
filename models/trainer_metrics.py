"""Prometheus metrics of the trainer process (served on ``trainer_metrics_port``).

Model quality comes from :class:`models.quality.QualityMetrics`; this adds what an SRE
needs to tell a stalled trainer from a quiet bank: snapshots published and when, labels
waiting for their decision record, the trainer's consumer lag, how far behind the
stream it learns (labels and seconds), how fast, and how many labels each model's
published snapshot is behind the model the trainer holds.

>>> m = TrainerMetrics()
>>> m.published("fraud", "fraud-v3-0123456789ab", 1_700_000_000.0)
>>> m.registry.get_sample_value("beacon_model_snapshot_timestamp_seconds", {"model": "fraud"})
1700000000.0
>>> m.behind(labels=1200, seconds=3.5)
>>> m.registry.get_sample_value("beacon_trainer_lag_labels")
1200.0
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from engine import __version__
from models.quality import QualityMetrics


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.quality = QualityMetrics(r)
        self.build = Info("beacon_build", "Build and content versions", registry=r)
        self.build.info({"version": __version__, "rules": ""})
        self.snapshots = Counter(
            "beacon_model_snapshots_published_total",
            "Model snapshots the trainer published",
            ["model"],
            registry=r,
        )
        self.snapshot_time = Gauge(
            "beacon_model_snapshot_timestamp_seconds",
            "Unix time of the model's newest snapshot (published by the trainer, or active in a worker)",
            ["model"],
            registry=r,
        )
        self.version = Info(
            "beacon_model_version", "The model snapshot version last published", ["model"], registry=r
        )
        self.consumer_lag = Gauge(
            "beacon_consumer_lag_records",
            "Records in a partition this process reads that it has not committed yet",
            ["topic", "partition"],
            registry=r,
        )
        self.labels_waiting = Gauge(
            "beacon_trainer_labels_waiting",
            "Labels that arrived before their decision record and wait for it",
            registry=r,
        )

        self.lag_labels = Gauge(
            "beacon_trainer_lag_labels",
            "Labels on the feedback topic the trainer has not learned yet (not fetched, or held back)",
            registry=r,
        )
        self.lag_seconds = Gauge(
            "beacon_trainer_lag_seconds",
            "Age of the newest record the trainer fetched while records wait (0 when caught up)",
            registry=r,
        )
        self.labels_dropped = Counter(
            "beacon_trainer_labels_dropped",
            "Labels the trainer could not learn, by kind and reason: not_shown (an offer response"
            " for an offer its decision did not show), other_customer, unknown_decision",
            ["kind", "reason"],
            registry=r,
        )
        self.fraud_labels = Counter(
            "beacon_trainer_fraud_labels",
            "Fraud labels by who sent them (disposition, chargeback, customer_report) and what became"
            " of them: learned, corrected (turned a verdict over), repeat (the verdict stood already),"
            " outranked (a stronger source said otherwise), contested (an equal one did),"
            " other_customer, unknown_decision",
            ["source", "outcome"],
            registry=r,
        )
        self.records_refused = Counter(
            "beacon_records_refused_total",
            "Records on a signed topic refused to <topic>.dlq: unsigned, forged or by an unknown key",
            ["topic", "reason"],
            registry=r,
        )
        self.labels_learned = Counter(
            "beacon_trainer_labels_learned",
            "Labels the trainer learned, per model (rate: labels learned per second)",
            ["model"],
            registry=r,
        )
        self.snapshot_gap = Gauge(
            "beacon_model_snapshot_label_gap",
            "Labels the trainer's model learned since its last published snapshot",
            ["model"],
            registry=r,
        )

    def behind(self, labels: int, seconds: float) -> None:
        self.lag_labels.set(labels)
        self.lag_seconds.set(seconds)

    def published(self, model: str, version: str, at: float) -> None:
        self.snapshots.labels(model=model).inc()
        self.snapshot_time.labels(model=model).set(at)
        self.version.labels(model=model).info({"version": version})
