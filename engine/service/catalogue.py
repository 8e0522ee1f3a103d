"""What Beacon exports to Prometheus, derived from the metric objects themselves.

Dashboards, alerting rules and docs/metrics.md are checked against these names, so a
panel or an alert cannot name a series that no process exports.

>>> names = sample_names()
>>> "beacon_decision_latency_seconds_bucket" in names, "beacon_model_roc_auc" in names
(True, True)
>>> "beacon_events" in families()["worker"]
True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from engine.service.metrics import Metrics

# A family's samples, by its type (prometheus_client's names, without the suffixes).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}


def worker_registry() -> CollectorRegistry:
    """A worker's registry as /metrics serves it (engine.service.runtime.Runtime.build)."""
    from models.metrics import ModelMetrics

    metrics = Metrics()
    ModelMetrics(metrics.registry)
    return metrics.registry


def trainer_registry() -> CollectorRegistry:
    """The trainer's registry as its metrics port serves it (engine.cli.models)."""
    from models.trainer_metrics import TrainerMetrics

    return TrainerMetrics().registry


def families() -> dict[str, dict[str, str]]:
    """{process: {family name: type}} for the worker and the trainer."""
    out: dict[str, dict[str, str]] = {}
    for process, registry in (("worker", worker_registry()), ("trainer", trainer_registry())):
        out[process] = {f.name: f.type for f in registry.collect()}
    return out


def label_names() -> dict[str, tuple[str, ...]]:
    """{family name: label names} over both processes (process_* collectors have none)."""
    out: dict[str, tuple[str, ...]] = {}
    for registry in (worker_registry(), trainer_registry()):
        for collector in list(registry._collector_to_names):  # no public listing
            names = getattr(collector, "_labelnames", None)
            if names is not None:
                out[collector._name] = tuple(names)  # type: ignore[attr-defined]
    return out


def sample_names() -> set[str]:
    """Every series name a worker or the trainer can export (histograms' _bucket etc.)."""
    names: set[str] = set()
    for kinds in families().values():
        for family, kind in kinds.items():
            names.update(family + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names
