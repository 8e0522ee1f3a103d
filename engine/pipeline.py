"""The decision function: (event, state snapshot) -> Decision. Pure: no I/O, no clock.

Both paths (HTTP and Kafka) call :func:`decide`; adapters do everything else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from engine import __version__
from engine.arbitration import arbitrate
from engine.decision import VERDICT_ORDER, Alert, Decision, Risk, Verdict, decision_id_for
from engine.events import Event
from engine.features import build_features
from engine.rules import Fired, RuleSet
from engine.scoring import Scorer, Scores
from engine.state import Snapshot


@dataclass(frozen=True)
class DecisionPolicy:
    """The knobs of the decision that come from settings."""

    risk_step_up: float = 0.5
    risk_block: float = 0.85
    max_actions: int = 3


def decide(event: Event, snap: Snapshot, rules: RuleSet, scorer: Scorer, policy: DecisionPolicy) -> Decision:
    features = build_features(event, snap)
    scores = scorer.score(features, tuple(o.id for o in rules.offers))
    context = {"event": event, "features": features, "scores": scores.to_dict(), "profile": snap.profile}
    outcome = rules.evaluate(context, event.channel)
    risk = assess_risk(scores, outcome.fired, policy)
    actions = arbitrate(
        outcome.eligible, scores, risk, event.channel, snap.contacts, rules.fallbacks, policy.max_actions
    )
    versions: dict[str, Any] = {
        "engine": __version__,
        "rules": rules.version,
        "models": dict(scorer.versions),
    }
    if outcome.errors:
        versions["rule_errors"] = list(outcome.errors)
    return Decision(
        decision_id=decision_id_for(event),
        event=event,
        actions=actions,
        risk=risk,
        alerts=tuple(_alert(event, f) for f in outcome.fired),
        versions=versions,
        features=features,
        scores=scores.to_dict(),
    )


def assess_risk(scores: Scores, fired: tuple[Fired, ...], policy: DecisionPolicy) -> Risk:
    """Combine the model's fraud score with the rules that fired into one verdict."""
    verdict: Verdict = "allow"
    reasons: list[str] = []
    rule_score = 0.0
    for f in fired:
        rule_score = 1 - (1 - rule_score) * (1 - f.rule.weight)
        reasons.append(f"{f.rule.id}: {f.reason}")
        if VERDICT_ORDER[f.rule.action] > VERDICT_ORDER[verdict]:
            verdict = f.rule.action
    score = max(scores.fraud, rule_score)
    by_score: Verdict = (
        "block" if score >= policy.risk_block else "step_up" if score >= policy.risk_step_up else "allow"
    )
    if VERDICT_ORDER[by_score] > VERDICT_ORDER[verdict]:
        verdict = by_score
        reasons.append(f"fraud score {score:.2f}")
    return Risk(score=round(score, 6), verdict=verdict, reasons=tuple(reasons))


def _alert(event: Event, fired: Fired) -> Alert:
    # Ids sort by time, so the bounded per-customer inbox can drop the oldest first.
    digest = hashlib.blake2s(f"{event.channel}:{event.event_id}".encode(), digest_size=5).hexdigest()
    return Alert(
        alert_id=f"{int(event.ts * 1000):013d}-{fired.rule.id}-{digest}",
        rule_id=fired.rule.id,
        severity=fired.rule.severity,
        reason=fired.reason,
        action=fired.rule.action,
    )
