"""Typed decision records and their wire forms (channel answer, audit record, alert)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from engine.events import Event

Verdict = Literal["allow", "review", "step_up", "block"]
ActionKind = Literal["offer", "service", "retention", "risk", "fallback"]
VERDICT_ORDER: dict[str, int] = {"allow": 0, "review": 1, "step_up": 2, "block": 3}
_DECISION_NS = uuid.UUID("6f1c2f52-5b7e-4f0e-9d5c-2b8f5e0c9a11")


def decision_id_for(event: Event) -> str:
    """Stable per (channel, event_id): a redelivered event keeps its decision id."""
    return str(uuid.uuid5(_DECISION_NS, f"{event.channel}:{event.event_id}"))


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    kind: ActionKind
    score: float
    treatment: dict[str, str]
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "score": round(self.score, 6),
            "treatment": self.treatment,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    rule_id: str
    severity: str
    reason: str
    action: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "severity": self.severity,
            "reason": self.reason,
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class Risk:
    score: float
    verdict: Verdict
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 6), "verdict": self.verdict, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    event: Event
    actions: tuple[Action, ...]
    risk: Risk
    alerts: tuple[Alert, ...]
    versions: dict[str, Any]
    features: dict[str, Any]
    scores: dict[str, Any]
    degraded: bool = False

    def channel_view(self, timings_ms: dict[str, float] | None = None) -> dict[str, Any]:
        """What the channel system receives (HTTP body, ``decisions.<channel>``).

        ``timings_ms`` are the stage times of the batch the decision was made in."""
        ev = self.event
        return {
            "decision_id": self.decision_id,
            "event_id": ev.event_id,
            "customer_id": ev.customer_id,
            "channel": ev.channel,
            "actions": [a.to_dict() for a in self.actions],
            "risk": self.risk.to_dict(),
            "alerts": [a.to_dict() for a in self.alerts],
            "versions": self.versions,
            "degraded": self.degraded,
            "timing_ms": timings_ms or {},
        }

    def channel_bytes(self, timings_ms: dict[str, float] | None = None) -> bytes:
        return orjson.dumps(self.channel_view(timings_ms))

    def audit_bytes(self, timings_ms: dict[str, float] | None = None) -> bytes:
        """The full record on ``decisions.audit``: inputs, features, scores, reasons."""
        record = self.channel_view(timings_ms)
        record["event"] = self.event.to_dict()
        record["features"] = self.features
        record["scores"] = self.scores
        return orjson.dumps(record)

    def alert_bytes(self, alert: Alert) -> bytes:
        """One risk alert as published on ``risk.alerts``."""
        ev = self.event
        body = alert.to_dict()
        body.update(
            customer_id=ev.customer_id,
            event_id=ev.event_id,
            decision_id=self.decision_id,
            channel=ev.channel,
            ts=ev.ts,
            risk=self.risk.to_dict(),
            versions=self.versions,
            evidence={k: self.features[k] for k in _EVIDENCE if k in self.features},
        )
        return orjson.dumps(body)

    def summary(self) -> dict[str, Any]:
        """What the customer's recent-decisions list keeps."""
        return {
            "decision_id": self.decision_id,
            "event_id": self.event.event_id,
            "ts": self.event.ts,
            "channel": self.event.channel,
            "actions": [a.id for a in self.actions],
            "verdict": self.risk.verdict,
            "alerts": [a.rule_id for a in self.alerts],
        }


# Feature values copied into an alert so a risk officer sees why without a lookup.
_EVIDENCE = (
    "amount",
    "amount_ratio_30d",
    "new_device",
    "pin_failures_1h",
    "distance_km",
    "speed_kmh",
    "n_10m",
    "n_1h",
    "amt_24h",
)
