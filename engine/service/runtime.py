"""Everything a worker process holds, built once from the settings.

Building is synchronous and does no I/O; the rules come from Redis afterwards
(:meth:`Runtime.load_rules`, awaited by the worker's start-up task before it reports
ready), because Redis may not be reachable yet when the process starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.service.decisions import DecisionService
from engine.service.metrics import Metrics
from engine.service.modelwatch import ModelWatcher
from engine.service.rulewatch import RuleWatcher
from engine.settings import Settings
from engine.store import nodes
from engine.store.alerts import AlertDesk
from engine.store.layout import KeyLayout
from engine.store.nodes import NodeReport
from engine.store.outbox import Outbox
from engine.store.redisio import connect
from engine.store.rules import RuleStore
from engine.store.ruleshadow import ShadowStore
from engine.store.snapshots import SnapshotStore
from engine.store.state import StateStore
from engine.store.users import AuthStore
from models.featureconfig import load_feature_config
from models.metrics import ModelMetrics
from models.registry import REGISTRY
from models.scorer import ModelScorer


@dataclass
class Runtime:
    settings: Settings
    service: DecisionService
    metrics: Metrics
    rule_watch: RuleWatcher
    model_watch: ModelWatcher
    desk: AlertDesk
    auth: AuthStore
    outbox: Outbox
    readiness: dict[str, bool] = field(
        default_factory=lambda: {"redis": False, "broker": False, "rules": False}
    )
    redis: Any = None  # the shared client: per-node metrics probe it (engine/store/nodes.py)

    async def probe_nodes(self) -> list[NodeReport]:
        return await nodes.probe(self.redis) if self.redis is not None else []

    @classmethod
    def build(cls, settings: Settings, metrics: Metrics | None = None) -> Runtime:
        client = connect(settings)
        metrics = metrics or Metrics()
        scorer = ModelScorer(load_feature_config(settings.model_features))
        service = DecisionService(settings, StateStore(client, settings), None, scorer, metrics)
        readiness = {"redis": False, "broker": False, "rules": False}
        rules = RuleStore(client, settings.key_prefix)
        shadow = ShadowStore(client, settings.key_prefix)  # a candidate version beside the live one
        watch = RuleWatcher(rules, service, settings, metrics, readiness, shadow)
        # Workers only score; the trainer publishes signed snapshots they install.
        models = ModelWatcher(
            SnapshotStore(client, settings),
            scorer.install,
            tuple(REGISTRY),
            settings,
            ModelMetrics(metrics.registry),
        )
        desk = AlertDesk(
            client,
            settings.key_prefix,
            settings.alert_retention_s,
            settings.alert_group_window_s,
            {"critical": settings.alert_sla_critical_s, "high": settings.alert_sla_high_s},
            KeyLayout.of(settings.key_prefix, settings.redis_cluster, settings.redis_slot_groups),
        )
        auth = AuthStore(
            client,
            settings.key_prefix,
            settings.session_ttl_s,
            settings.login_failures_per_minute,
            settings.login_hash_threads,
            settings.session_idle_s,
            settings.token_ttl_days * 86400,
            settings.token_max_days * 86400,
        )
        outbox = Outbox(client, settings)
        return cls(settings, service, metrics, watch, models, desk, auth, outbox, readiness, client)

    async def load_models(self) -> None:
        """Warm start from the latest snapshots (fresh models where there are none)."""
        await self.model_watch.load_initial()

    async def load_rules(self) -> None:
        """Load the current rules version (seeding Redis from ``rules_dir`` when empty);
        returns once one runs, and only then is ``readiness["rules"]`` true."""
        await self.rule_watch.load_initial()
