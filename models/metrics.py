"""Prometheus metrics of model snapshots in a worker. Takes a registry (share the
worker's ``engine.service.metrics.Metrics().registry`` so they appear on ``/metrics``).

Labels are bounded: ``model`` takes the configured model names only, and the version
info keeps one series per model, the active version (a switch replaces it).

>>> from prometheus_client import CollectorRegistry
>>> m = ModelMetrics(CollectorRegistry())
>>> m.active("risk", "risk-v1-0123456789ab"); m.active("risk", "risk-v2-456789abcdef")
>>> def info(version): return m.registry.get_sample_value(
...     "beacon_model_version_info", {"model": "risk", "version": version})
>>> info("risk-v2-456789abcdef"), info("risk-v1-0123456789ab")
(1.0, None)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info


class ModelMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.refused = Counter(
            "beacon_model_snapshot_refused_total",
            "Model snapshots refused (signature, digest or load failure); the running model stayed",
            ["model"],
            registry=r,
        )
        self.swaps = Counter(
            "beacon_model_swaps_total",
            "Model snapshot versions this worker switched to",
            ["model"],
            registry=r,
        )
        self.version = Info(
            "beacon_model_version",
            "The model snapshot version this worker scores with",
            ["model"],
            registry=r,
        )

        self.snapshot_time = Gauge(
            "beacon_model_snapshot_timestamp_seconds",
            "Unix time the active snapshot was published (0 while the built-in model runs)",
            ["model"],
            registry=r,
        )

    def prepare(self, model: str) -> None:
        """Create a model's counters at zero, so rates and alerts work before the first event."""
        self.refused.labels(model=model)
        self.swaps.labels(model=model)
        # 0 = the built-in model: a worker that never installs the trainer's snapshots is
        # then as far behind as can be (BeaconWorkerModelBehind), not invisible.
        self.snapshot_time.labels(model=model).set(0)

    def active(self, model: str, version: str, published_at: float = 0.0) -> None:
        """The active version: replaces the model's previous series (one per model)."""
        self.version.labels(model=model).info({"version": version})
        if published_at > 0:
            self.snapshot_time.labels(model=model).set(published_at)
