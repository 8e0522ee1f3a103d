"""Everything a worker process holds, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.builtin_rules import builtin_rules
from engine.metrics import Metrics
from engine.service import DecisionService
from engine.settings import Settings
from engine.store import StateStore, connect


@dataclass
class Runtime:
    settings: Settings
    service: DecisionService
    metrics: Metrics
    readiness: dict[str, bool] = field(
        default_factory=lambda: {"redis": False, "broker": False, "rules": False}
    )
    kafka_path: Any = None  # set by the Faust app; drained on shutdown

    @classmethod
    def build(cls, settings: Settings, metrics: Metrics | None = None) -> Runtime:
        from engine.scoring import BuiltinScorer

        store = StateStore(connect(settings), settings)
        rules = builtin_rules()
        metrics = metrics or Metrics()
        service = DecisionService(settings, store, rules, BuiltinScorer(), metrics)
        rt = cls(settings, service, metrics)
        rt.readiness["rules"] = True
        rt.metrics.build.info({"version": rt.metrics_version(), "rules": rules.version})
        return rt

    @staticmethod
    def metrics_version() -> str:
        from engine import __version__

        return __version__
