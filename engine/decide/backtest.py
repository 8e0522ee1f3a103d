"""Backtest: decide again, with candidate rules and/or models, every event a
``decisions.audit`` record holds, through the one decision function (:func:`decide`).

Pure: records in, values out. The record freezes what the decision read: the event as
audited (the attributes the live rules and models read), its features (the customer's
state as ``state.*``), the models' scores and the profile fields the live rules read.
Re-deciding feeds these to :func:`decide` as its prepared inputs, so nothing is
recomputed from a state that has moved on since. With a candidate scorer (a model
snapshot), the scores are computed again from the recorded features.

What a record cannot say is approximated, and the report counts it (:func:`gaps_of`):

- Contact-policy caps: an offer the live decision found capped is taken as capped for the
  candidate too (the counts before the event are the same); one it never considered is
  taken as under its caps.
- A profile field or event attribute that only the candidate reads was not kept: it reads
  as absent (its default).
- Unless the offers model is scored again, an offer only the candidate has gets
  propensity 0.
- Alerts are compared as the rules raised them; the desk's per-customer suppression
  windows are not replayed (the live alerts kept after them are counted apart).

>>> record = sample_record()
>>> out = redecide(record, candidate_for_doctest(threshold=2))
>>> out.old_verdict, out.new_verdict, out.old_fired, out.new_fired
('allow', 'block', (), ('pins',))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.decide.degraded import WHY_ANSWERED, withhold_sales
from engine.decide.pipeline import DecisionPolicy, decide
from engine.domain.decision import Action, Decision
from engine.domain.events import Event, Geo
from engine.domain.labels import label_of, source_rank
from engine.domain.scoring import Scorer, Scores
from engine.domain.state import Snapshot
from engine.rules.ruleset import RuleSet

CONTACT_KINDS = frozenset({"offer", "service", "retention"})  # what counts as a contact made


@dataclass(frozen=True)
class Candidate:
    """What the events are decided again with: the rules, and the models named in
    ``rescored`` (``fraud``, ``churn``, ``offers``, a challenger) scored again by
    ``scorer`` from the recorded features; every other score is the one recorded."""

    rules: RuleSet
    policy: DecisionPolicy = field(default_factory=DecisionPolicy)
    scorer: Scorer | None = None
    rescored: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Redecided:
    """One event, as it was decided and as the candidate decides it."""

    decision_id: str
    event_id: str
    customer_id: str
    channel: str
    ts: float
    old_verdict: str
    new_verdict: str
    old_fired: tuple[str, ...]  # rules that fired (before the desk's suppression)
    new_fired: tuple[str, ...]
    old_raised: tuple[str, ...]  # alerts the desk kept (after suppression)
    old_shown: tuple[str, ...]  # action ids shown
    new_shown: tuple[str, ...]
    old_contacts: int  # offers and messages shown (not fallbacks or risk treatments)
    new_contacts: int
    gaps: tuple[str, ...] = ()  # inputs the candidate read that the record did not keep (:func:`gaps_of`)
    rule_errors: tuple[str, ...] = ()  # candidate rules or offers whose condition raised here

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.ts, UTC).strftime("%Y-%m-%d")

    @property
    def changed(self) -> bool:
        return (self.old_verdict, self.old_fired, self.old_shown) != (
            self.new_verdict,
            self.new_fired,
            self.new_shown,
        )


class _Recorded:
    """The scorer of a record: its versions, and no model call (scores come prepared)."""

    profile_fields: tuple[str, ...] = ()

    def __init__(self, versions: Mapping[str, str], attributes: Iterable[str]) -> None:
        self.versions = dict(versions)
        self.attribute_fields = tuple(attributes)

    def score(self, features: Any, offer_ids: Any, attributes: Any = None) -> Scores:
        raise AssertionError("a backtest without a candidate scorer uses the recorded scores")


def skip_reason(record: Mapping[str, Any]) -> str | None:
    """Why a record is not decided again: a label event (not decided live either), an
    answer made without state (nothing frozen to decide on), or a record without inputs."""
    if record.get("feedback"):
        return "label_event"
    if record.get("degraded"):
        return "decided_without_state"
    if not isinstance(record.get("features"), dict) or not isinstance(record.get("scores"), dict):
        return "no_inputs"
    if not isinstance(record.get("event"), dict):
        return "no_event"
    return None


def event_of(raw: Mapping[str, Any]) -> Event:
    """The event as audited, typed again (it was validated when it was decided)."""
    geo = raw.get("geo")
    amount = raw.get("amount")
    return Event(
        event_id=str(raw["event_id"]),
        customer_id=str(raw["customer_id"]),
        channel=str(raw["channel"]),
        type=str(raw["type"]),
        ts=float(raw["ts"]),
        amount=None if amount is None else float(amount),
        currency=raw.get("currency"),
        device_id=raw.get("device_id"),
        terminal_id=raw.get("terminal_id"),
        session_id=raw.get("session_id"),
        geo=Geo(float(geo["lat"]), float(geo["lon"])) if isinstance(geo, dict) else None,
        attributes=dict(raw.get("attributes") or {}),
    )


def scores_of(raw: Mapping[str, Any]) -> Scores:
    return Scores(
        fraud=float(raw.get("fraud") or 0.0),
        churn=float(raw.get("churn") or 0.0),
        offer={str(k): float(v) for k, v in (raw.get("offer") or {}).items()},
        shadow={str(k): float(v) for k, v in (raw.get("shadow") or {}).items()},
    )


def redecide(record: Mapping[str, Any], candidate: Candidate) -> Redecided:
    """Decide the record's event again with ``candidate`` (call :func:`skip_reason` first)."""
    event = event_of(record["event"])
    features = dict(record["features"])
    rules = candidate.rules
    versions = dict((record.get("versions") or {}).get("models") or {})
    scores = scores_of(record["scores"])
    if candidate.scorer is not None and candidate.rescored:
        fresh = candidate.scorer.score(features, rules.offer_ids, event.attributes)
        scores = merged(scores, fresh, candidate.rescored)
        versions.update({k: v for k, v in candidate.scorer.versions.items() if k in candidate.rescored})
    scorer = _Recorded(versions, event.attributes.keys())
    snap = Snapshot(windows={}, profile=dict(record.get("profile") or {}))
    decision = decide(event, snap, rules, scorer, candidate.policy, (features, scores))
    explain = record.get("explain") or {}
    if explain.get("answered_degraded"):  # the channel had the stateless answer: no sales offer
        decision = withhold_sales(decision, WHY_ANSWERED)
    capped = {str(d.get("id")) for d in explain.get("dropped") or () if d.get("stage") == "contact_policy"}
    shown = shown_under_caps(decision, capped)
    old_actions = [a for a in record.get("actions") or () if isinstance(a, dict)]
    return Redecided(
        decision_id=str(record.get("decision_id") or decision.decision_id),
        event_id=event.event_id,
        customer_id=event.customer_id,
        channel=event.channel,
        ts=event.ts,
        old_verdict=str((record.get("risk") or {}).get("verdict") or "allow"),
        new_verdict=decision.risk.verdict,
        old_fired=tuple(sorted({str(r.get("id")) for r in explain.get("rules") or ()})),
        new_fired=tuple(sorted({a.rule_id for a in decision.alerts})),
        old_raised=tuple(sorted({str(a.get("rule_id")) for a in record.get("alerts") or ()})),
        old_shown=tuple(str(a.get("id")) for a in old_actions),
        new_shown=tuple(a.id for a in shown),
        old_contacts=sum(1 for a in old_actions if a.get("kind") in CONTACT_KINDS),
        new_contacts=sum(1 for a in shown if a.kind in CONTACT_KINDS),
        gaps=gaps_of(record, candidate),
        rule_errors=tuple(sorted({e.split(":", 1)[0] for e in decision.versions.get("rule_errors") or ()})),
    )


def gaps_of(record: Mapping[str, Any], candidate: Candidate) -> tuple[str, ...]:
    """What the candidate reads that this record does not hold: ``no_profile`` (a record
    written before audit records kept the profile fields the rules read, while the
    candidate reads some) and ``unscored_offer:<id>`` (an offer of the record's channel
    with no recorded propensity, when the offers model is not scored again).

    >>> gaps_of(sample_record(profile=None), candidate_for_doctest(3))
    ()
    """
    rules = candidate.rules
    out = []
    if rules.needs.profile and not isinstance(record.get("profile"), dict):
        out.append("no_profile")
    if "offers" not in candidate.rescored:
        recorded = (record.get("scores") or {}).get("offer") or {}
        channel = record.get("channel")
        unscored = (o.id for o in rules.offers if channel in o.channels and o.id not in recorded)
        out += [f"unscored_offer:{oid}" for oid in unscored]
    return tuple(out)


def merged(recorded: Scores, fresh: Scores, rescored: frozenset[str]) -> Scores:
    """The recorded scores with those of the ``rescored`` models taken from ``fresh``.

    >>> merged(Scores(0.1, 0.2, {"a": 0.3}), Scores(0.9, 0.8, {"a": 0.7}), frozenset({"fraud"}))
    Scores(fraud=0.9, churn=0.2, offer={'a': 0.3}, shadow={})
    """
    shadow = {**recorded.shadow, **{k: v for k, v in fresh.shadow.items() if k in rescored}}
    return Scores(
        fraud=fresh.fraud if "fraud" in rescored else recorded.fraud,
        churn=fresh.churn if "churn" in rescored else recorded.churn,
        offer=dict(fresh.offer) if "offers" in rescored else dict(recorded.offer),
        shadow=shadow,
    )


def shown_under_caps(decision: Decision, capped: set[str]) -> tuple[Action, ...]:
    """What the commit step would show: the ranking's first ``max_actions`` not capped
    (here: capped for the live decision), else what the channel shows when nothing is."""
    shown = tuple(a for a in decision.actions if a.id not in capped)[: decision.max_actions]
    if shown:
        return shown
    fallback = decision.fallback
    ev = decision.event
    return (fallback or Action(f"{ev.channel}_default", "fallback", 0.0, {"channel": ev.channel}),)


def fraud_labels(labels: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], bool]:
    """One verdict per transaction, (channel, event id) -> fraud, from fraud labels
    (``feedback`` records, or :func:`labels_in`): a stronger source (disposition >
    chargeback > customer report) overrides, an equal one that disagrees does not, as the
    trainer resolves them (engine/store/lua/fraud_verdict.lua). Taken in time order.

    >>> fraud_labels([
    ...     {"kind": "fraud", "event_id": "t1", "channel": "atm", "label": True, "ts": 2.0},
    ...     {"kind": "fraud", "event_id": "t1", "channel": "atm", "label": False, "ts": 3.0,
    ...      "source": "disposition"},
    ...     {"kind": "fraud", "event_id": "t2", "channel": "atm", "label": True, "ts": 1.0},
    ...     {"kind": "offer", "decision_id": "d", "label": True, "ts": 1.0}])
    {('atm', 't1'): False, ('atm', 't2'): True}
    """
    held: dict[tuple[str, str], tuple[bool, int]] = {}
    fraud = [x for x in labels if x.get("kind") == "fraud" and x.get("event_id") and x.get("channel")]
    fraud.sort(key=lambda x: (float(x.get("ts") or 0.0), str(x.get("event_id")), str(x.get("source"))))
    for lab in fraud:
        key = (str(lab["channel"]), str(lab["event_id"]))
        verdict, rank = bool(lab.get("label")), source_rank(lab)[1]
        before = held.get(key)
        if before is None or before[0] == verdict or rank > before[1]:
            held[key] = (verdict, max(rank, before[1]) if before and before[0] == verdict else rank)
    return {k: v for k, (v, _) in sorted(held.items())}


def labels_in(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The labels the label events among audit records carry (a fraud report or a
    chargeback keeps its ``ref_event_id``, ``ref_channel`` and ``legitimate``)."""
    out = []
    for record in records:
        if record.get("feedback") and isinstance(record.get("event"), dict):
            try:
                label = label_of(event_of(record["event"]))
            except (KeyError, TypeError, ValueError):
                continue
            if label is not None:
                out.append(label)
    return out


def sample_record(**changes: Any) -> dict[str, Any]:
    """An audit record of a third PIN failure that fired nothing (doctests, unit tests)."""
    record: dict[str, Any] = {
        "decision_id": "d-1", "event_id": "e1", "customer_id": "C1", "channel": "atm",
        "actions": [{"id": "atm_default", "kind": "fallback", "score": 0.0}],
        "risk": {"score": 0.0, "verdict": "allow", "reasons": [], "typologies": []},
        "alerts": [], "versions": {"engine": "x", "rules": "live", "models": {"fraud": "builtin-1"}},
        "degraded": False, "timing_ms": {},
        "explain": {"kept": [], "dropped": [], "rules": [], "typologies": [], "arbitration": {}},
        "event": {"event_id": "e1", "customer_id": "C1", "channel": "atm", "type": "pin_failure",
                  "ts": 1795428000.0, "terminal_id": "T1"},
        "features": {"pin_failures_1h": 2, "type": "pin_failure", "channel": "atm"},
        "scores": {"fraud": 0.01, "churn": 0.05, "offer": {}}, "profile": {},
    }  # fmt: skip
    record.update(changes)
    return record


def candidate_for_doctest(threshold: int) -> Candidate:
    """A one-rule candidate: block at ``threshold`` PIN failures in an hour."""
    from engine.decide.rulebook import load

    pack = f"""
kind: risk
rules:
  - {{id: pins, severity: high, when: state.pin_failures_1h >= {threshold}, reason: "pins", action: block}}
"""
    return Candidate(load({"risk.yaml": pack}, frozenset({"atm"}), "cand").rules)
