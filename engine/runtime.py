"""Everything a worker process holds, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine import __version__
from engine.builtin_rules import builtin_rules
from engine.metrics import Metrics
from engine.scoring import BuiltinScorer
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

    @classmethod
    def build(cls, settings: Settings, metrics: Metrics | None = None) -> Runtime:
        store = StateStore(connect(settings), settings)
        rules = builtin_rules()
        metrics = metrics or Metrics()
        service = DecisionService(settings, store, rules, BuiltinScorer(), metrics)
        rt = cls(settings, service, metrics)
        rt.readiness["rules"] = True
        rt.metrics.build.info({"version": __version__, "rules": rules.version})
        return rt
