"""The decision function: (event, state snapshot) -> Decision. Pure: no I/O, no clock.

Both paths (HTTP and Kafka) call :func:`decide`; adapters do everything else. The
decision it returns ranks every candidate; the commit step (engine.store.codec) applies
the contact-policy caps atomically in Redis and picks what is shown.

A label event (``engine.domain.labels.is_label_event``: a fraud report, chargeback or
offer response) is feedback, not an interaction: it gets an
acknowledgement (:func:`acknowledge`) without features, model scores, rules or offers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine import __version__
from engine.decide.arbitration import arbitrate, fallback_action, shown_when_nothing_else
from engine.domain.decision import VERDICT_ORDER, Alert, Decision, Risk, Verdict, decision_id_for
from engine.domain.events import Event
from engine.domain.features import build_features
from engine.domain.labels import is_label_event
from engine.domain.policy import ArbitrationPolicy
from engine.domain.scoring import Scorer, Scores
from engine.domain.state import Snapshot
from engine.rules.ruleset import Fired, RuleOutcome, RuleSet


@dataclass(frozen=True)
class DecisionPolicy:
    """The knobs of the decision that come from settings."""

    risk_step_up: float = 0.5
    risk_block: float = 0.85
    max_actions: int = 3


def evaluate_rules(
    rules: RuleSet,
    event: Event,
    features: Mapping[str, Any],
    profile: Mapping[str, Any],
    scores: Mapping[str, Any],
) -> RuleOutcome:
    """Build the one CEL context of this event and evaluate every rule against it."""
    raw_event = event.to_dict()
    ctx = rules.evaluator.bind(raw_event, features, profile, scores, event.ts, event.channel)
    sources = {"event": raw_event, "state": features, "profile": profile, "scores": scores}
    return rules.evaluate(ctx, sources, event.channel, event.ts)


Prepared = tuple[dict[str, Any], Scores]


def prepare(event: Event, snap: Snapshot, rules: RuleSet, scorer: Scorer) -> Prepared:
    """The models' half of a decision: features and scores (timed apart from the rules)."""
    features = build_features(event, snap, scorer.profile_fields)
    return features, scorer.score(features, rules.offer_ids, event.attributes)


def decide(
    event: Event,
    snap: Snapshot,
    rules: RuleSet,
    scorer: Scorer,
    policy: DecisionPolicy,
    prepared: Prepared | None = None,
) -> Decision:
    if is_label_event(event):
        return acknowledge(event, rules)
    features, scores = prepared or prepare(event, snap, rules, scorer)
    outcome = evaluate_rules(rules, event, features, snap.profile, scores.to_dict())
    risk = assess_risk(scores, outcome, policy)
    arbitration = rules.arbitration.get(event.channel) or ArbitrationPolicy(max_actions=policy.max_actions)
    did = decision_id_for(event)
    ranked, suppressed, chosen = arbitrate(
        outcome.eligible, scores, risk, event.channel, arbitration, did, event.customer_id
    )
    versions: dict[str, Any] = {
        "engine": __version__,
        "rules": rules.version,
        "models": dict(scorer.versions),
    }
    if outcome.errors:
        versions["rule_errors"] = list(outcome.errors)
    in_typologies = {
        f.rule.id: tuple(t.id for t in rules.typologies if f.rule.id in t.weights) for f in outcome.fired
    }
    return Decision(
        decision_id=did,
        event=event,
        actions=ranked,
        risk=risk,
        alerts=tuple(_alert(event, f, in_typologies[f.rule.id]) for f in outcome.fired),
        versions=versions,
        features=features,
        scores=scores.to_dict(),
        fallback=shown_when_nothing_else(rules, event.channel, risk.verdict),
        max_actions=arbitration.max_actions,
        audited=rules.needs.attributes.union(scorer.attribute_fields),
        profile={k: snap.profile[k] for k in rules.needs.profile_order if k in snap.profile},
        dropped=outcome.dropped + suppressed,
        explanation={
            "rules": [_fired_view(f) for f in outcome.fired],
            "typologies": [t.to_dict() for t in outcome.typologies],
            "arbitration": chosen,
        },
    )


NOT_DECIDED = "label event: not decided"


def acknowledge(event: Event, rules: RuleSet) -> Decision:
    """A label event's answer: the channel's fallback, verdict allow, no alert, flagged
    ``feedback``. Its label is the feedback record (``label_of``); nothing here reads state.

    >>> from engine.decide.rulebook import load
    >>> from engine.rules.pack import read_bundle
    >>> from engine.settings import Settings
    >>> s = Settings()
    >>> rules = load(read_bundle(s.rules_path()), frozenset(s.channels), "local").rules
    >>> ack = acknowledge(Event("r1", "C1", "mobile", "fraud_report", 1.0), rules)
    >>> view = ack.channel_view()
    >>> view["feedback"], view["risk"]["verdict"], [a["kind"] for a in view["actions"]], view["alerts"]
    (True, 'allow', ['fallback'], [])
    """
    shown = replace(fallback_action(rules.fallbacks, event.channel), reasons=(NOT_DECIDED,))
    return Decision(
        decision_id=decision_id_for(event),
        event=event,
        actions=(shown,),
        risk=Risk(0.0, "allow", (NOT_DECIDED,)),
        alerts=(),
        versions={"engine": __version__, "rules": rules.version},
        features={},
        scores={},
        fallback=shown,
        feedback=True,
    )


def assess_risk(scores: Scores, outcome: RuleOutcome, policy: DecisionPolicy) -> Risk:
    """One verdict from the rules that fired, the typology scores and the fraud model."""
    verdict: Verdict = "allow"
    reasons: list[str] = []
    for f in outcome.fired:
        reasons.append(f"{f.rule.id}: {f.reason}")
        verdict = _worse(verdict, f.rule.action)
    for t in outcome.typologies:
        if VERDICT_ORDER[t.verdict] > VERDICT_ORDER["allow"]:
            reasons.append(f"typology {t.id}: score {t.score:.2f} -> {t.verdict}")
        verdict = _worse(verdict, t.verdict)
    typology_score = max((t.score for t in outcome.typologies), default=0.0)
    by_model: Verdict = (
        "block"
        if scores.fraud >= policy.risk_block
        else "step_up"
        if scores.fraud >= policy.risk_step_up
        else "allow"
    )
    if VERDICT_ORDER[by_model] > VERDICT_ORDER[verdict]:
        reasons.append(f"fraud score {scores.fraud:.2f}")
        verdict = by_model
    return Risk(
        score=round(max(scores.fraud, typology_score), 6),
        verdict=verdict,
        reasons=tuple(reasons),
        typologies=tuple(t.to_dict() for t in outcome.typologies),
    )


def _worse(a: Verdict, b: Verdict) -> Verdict:
    return b if VERDICT_ORDER[b] > VERDICT_ORDER[a] else a


def _fired_view(f: Fired) -> dict[str, Any]:
    return {
        "id": f.rule.id,
        "name": f.rule.name,
        "severity": f.rule.severity,
        "action": f.rule.action,
        "when": list(f.rule.when.sources),
        "values": f.values,
        "reason": f.reason,
    }


def _alert(event: Event, fired: Fired, typologies: tuple[str, ...]) -> Alert:
    # Ids sort by time, so the bounded per-customer inbox can drop the oldest first.
    digest = hashlib.blake2s(f"{event.channel}:{event.event_id}".encode(), digest_size=5).hexdigest()
    return Alert(
        alert_id=f"{int(event.ts * 1000):013d}-{fired.rule.id}-{digest}",
        rule_id=fired.rule.id,
        severity=fired.rule.severity,
        reason=fired.reason,
        action=fired.rule.action,
        typologies=typologies,
        suppress_s=fired.rule.suppress_s,
        values=fired.values,
        when=fired.rule.when.sources,
    )
