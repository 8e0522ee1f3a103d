"""Typed decision records and their wire forms (channel answer, audit record, alert)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from engine.domain.events import Event, audited

Verdict = Literal["allow", "review", "step_up", "block"]
ActionKind = Literal["offer", "service", "retention", "risk", "fallback"]
VERDICT_ORDER: dict[str, int] = {"allow": 0, "review": 1, "step_up": 2, "block": 3}
_DECISION_NS = uuid.UUID("6f1c2f52-5b7e-4f0e-9d5c-2b8f5e0c9a11")
_DECISION_NS_BYTES = _DECISION_NS.bytes


def decision_id_for(event: Event) -> str:
    """Stable per (customer, channel, event id): a redelivered event keeps its decision id,
    and two customers' events that share an id (one channel system's mistake) do not."""
    return decision_id_of(event.customer_id, event.channel, event.event_id)


def decision_id_of(customer_id: str, channel: str, event_id: str) -> str:
    """The decision id of an event known by its customer, channel and id (a fraud report's).

    A UUID version 5, spelled out because ``str(uuid.uuid5(...))`` costs 3x as much and
    every decision makes one:

    >>> decision_id_of("C1", "atm", "e1") == str(uuid.uuid5(_DECISION_NS, "C1:atm:e1"))
    True
    """
    digest = bytearray(
        hashlib.sha1(_DECISION_NS_BYTES + f"{customer_id}:{channel}:{event_id}".encode()).digest()
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def legacy_decision_id_of(channel: str, event_id: str) -> str:
    """The id decisions made before 2026-12-03 got (channel and event id only): a fraud
    report within the feedback window of an upgrade may refer to one of those. Remove
    once every deployment has run the new ids for longer than ``feedback_ttl_s``."""
    return str(uuid.uuid5(_DECISION_NS, f"{channel}:{event_id}"))


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    kind: ActionKind
    score: float
    treatment: dict[str, str]
    reasons: tuple[str, ...] = ()

    def kept(self) -> dict[str, Any]:
        """How the explanation lists an action that was kept."""
        score = round(self.score, 6)
        return {"id": self.id, "kind": self.kind, "score": score, "reasons": list(self.reasons)}

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
    typologies: tuple[str, ...] = ()
    suppress_s: int = 0  # no second alert of this rule for the customer within this
    values: dict[str, Any] = field(default_factory=dict)  # what the condition read
    when: tuple[str, ...] = ()  # the condition's clauses, as written in the pack

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "severity": self.severity,
            "reason": self.reason,
            "action": self.action,
            "typologies": list(self.typologies),
        }


@dataclass(frozen=True, slots=True)
class Risk:
    score: float
    verdict: Verdict
    reasons: tuple[str, ...] = ()
    typologies: tuple[dict[str, Any], ...] = ()  # {id, score, verdict} of those that scored

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "typologies": list(self.typologies),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """A decision. Before the commit step, ``actions`` are all ranked candidates; after
    it, the ones shown (contact-policy caps applied), or the fallback."""

    decision_id: str
    event: Event
    actions: tuple[Action, ...]
    risk: Risk
    alerts: tuple[Alert, ...]
    versions: dict[str, Any]
    features: dict[str, Any]
    scores: dict[str, Any]
    degraded: bool = False
    fallback: Action | None = None
    max_actions: int = 3
    dropped: tuple[Any, ...] = ()  # engine.rules.ruleset.Dropped: candidates that did not make it
    explanation: dict[str, Any] = field(default_factory=dict)  # rules that fired, with values
    feedback: bool = False  # a label event's acknowledgement: not decided (engine.decide.pipeline)
    # Event attributes the audit record keeps: those the rules and models read (events.audited).
    audited: frozenset[str] = frozenset()
    # The profile fields the rules read, as they were (``profile`` of the audit record), so
    # a backtest (engine/decide/backtest.py) re-decides the event with the rules' inputs.
    profile: dict[str, Any] = field(default_factory=dict)

    def channel_view(self, timings_ms: dict[str, float] | None = None) -> dict[str, Any]:
        """What the channel system receives (HTTP body, ``decisions.<channel>``): actions,
        risk, alerts, versions. Lean on purpose: which offers did not make it and why is
        the bank's eligibility logic, for ``?explain=true`` and ``decisions.audit``, not for
        every ATM (and not worth building, storing and sending for each decision).

        ``timings_ms`` are the stage times of the batch the decision was made in."""
        ev = self.event
        view = {
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
        if self.feedback:  # says the channel got an acknowledgement, and the trainer skips it
            view["feedback"] = True
        return view

    def channel_bytes(self, timings_ms: dict[str, float] | None = None) -> bytes:
        return orjson.dumps(self.channel_view(timings_ms))

    def explain(self) -> dict[str, Any]:
        """The full explanation: every candidate kept or dropped and why, with the values
        the deciding condition read; every rule that fired with its values."""
        return {
            "kept": [a.kept() for a in self.actions],
            "dropped": [d.to_dict() for d in self.dropped],
            **self.explanation,
        }

    def scores_view(self) -> dict[str, Any]:
        """The models' own scores (``?scores=true``, ``?explain=true``), unrounded so they
        rank: fraud apart from ``risk.score`` (which is the worst of it and the typology
        scores), churn, the challengers', and each candidate offer of the channel with its
        propensity, shown (with its rank score) or not (with the stage and why)."""
        propensity = self.scores.get("offer") or {}
        offers: list[dict[str, Any]] = [
            {"id": a.id, "propensity": propensity.get(a.id), "shown": True, "score": a.score}
            for a in self.actions
            if a.kind != "fallback"
        ]
        offers += [{"id": d.id, "propensity": propensity.get(d.id), "shown": False, "stage": d.stage,
                    "why": d.why} for d in self.dropped]  # fmt: skip
        offers.sort(key=lambda o: (-(o["propensity"] or 0.0), o["id"]))
        return {"fraud": self.scores.get("fraud"), "churn": self.scores.get("churn"),
                "challengers": dict(self.scores.get("shadow") or {}), "offers": offers}  # fmt: skip

    def explained_view(self, timings_ms: dict[str, float] | None = None) -> dict[str, Any]:
        view = self.channel_view(timings_ms)
        view["explain"] = self.explain()
        return view

    def audit_view(self, timings_ms: dict[str, float] | None = None) -> dict[str, Any]:
        """The full record on ``decisions.audit``: inputs, features, scores, explanation."""
        record = self.explained_view(timings_ms)
        record["event"] = self.audit_event()
        # A label event was not scored: null, not an empty dict that reads as "no scores".
        record["features"] = None if self.feedback else self.features
        record["scores"] = None if self.feedback else self.scores
        record["profile"] = None if self.feedback else self.profile
        return record

    def audit_event(self) -> dict[str, Any]:
        """The event as ``decisions.audit`` keeps it: allow-listed (events.audited)."""
        return audited(self.event, self.audited)

    def audit_bytes(self, timings_ms: dict[str, float] | None = None) -> bytes:
        return orjson.dumps(self.audit_view(timings_ms))

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
            conditions={"when": list(alert.when), "values": alert.values},
            evidence={k: self.features[k] for k in _EVIDENCE if k in self.features},
        )
        if ev.currency is not None:  # so an officer reads "250.00 GBP", not "250"
            body["currency"] = ev.currency
        return orjson.dumps(body)

    def summary_head(self) -> dict[str, Any]:
        """What the customer's recent-decisions list keeps (the commit adds actions, alerts)."""
        return {
            "decision_id": self.decision_id,
            "event_id": self.event.event_id,
            "ts": self.event.ts,
            "channel": self.event.channel,
            "verdict": self.risk.verdict,
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
