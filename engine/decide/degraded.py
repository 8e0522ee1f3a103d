"""Decisions without customer state, and events whose channel already got one. Pure.

When Redis fails, or does not answer within the HTTP budget, the channel still gets an
answer: the event decided on what it carries alone. Rules that read only the event
(amount thresholds, watch lists) still apply and the models score the event's own
features; but no sales offer is shown, because the contact-policy caps live in Redis
and cannot be checked. The answer is flagged ``degraded``.

It fails closed where money moves: rules that need state (a PIN failure count, a new
device) cannot fire, so the verdict is at least the risk pack's floor for the event
type (``when_state_unavailable``, engine.rules.ruleset.StateUnavailable): a transfer or
a PIN failure steps up or blocks, an informational event may keep the stateless verdict.

The answer is audited as given: its own record on ``decisions.audit`` (``degraded:
true``, its verdict and decision id). The event is not lost: the HTTP adapter
republishes it to ``interactions`` with the header :data:`ANSWERED_HEADER`, and the
Kafka path ingests it once Redis is back as an :class:`Answered` event: state counted
once, decision audited, alerts raised, but no second answer to the channel, and no sales
offer counted as shown (the customer saw none; the trainer would otherwise learn that
they ignored it). Its audit record names the answer it follows (:func:`following`).

>>> from engine.decide.rulebook import load
>>> from engine.rules.pack import read_bundle
>>> from engine.domain.scoring import BuiltinScorer
>>> from engine.settings import Settings
>>> s = Settings()
>>> rules = load(read_bundle(s.rules_path()), frozenset(s.channels), "local").rules
>>> event = Event("e1", "C1", "atm", "pin_failure", ts=1795428000.0)
>>> d = decide_without_state(event, rules, BuiltinScorer(), DecisionPolicy())
>>> d.degraded, d.risk.verdict, [a.id for a in d.actions], d.alerts
(True, 'step_up', ['atm_decline_call_bank'], ())
>>> d.risk.reasons[-1]
'state unavailable: a pin_failure without customer state is at least step_up (when_state_unavailable)'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

from engine.decide.arbitration import shown_when_nothing_else, without_caps
from engine.decide.pipeline import DecisionPolicy, decide
from engine.domain.decision import VERDICT_ORDER, Decision, Risk, Verdict
from engine.domain.events import Event
from engine.domain.scoring import Scorer
from engine.domain.state import Snapshot
from engine.rules.ruleset import Dropped, RuleSet

ANSWERED_HEADER = "beacon-answered"  # value: the decision id the channel received
SALES_KINDS = frozenset({"offer", "retention"})
NO_STATE = Snapshot(windows={})
WHY_DEGRADED = "customer state unavailable: contact-policy caps cannot be checked"
WHY_ANSWERED = "the channel was answered without customer state: no sales offer was shown"


@dataclass(frozen=True, slots=True)
class Answered(Event):
    """An event whose channel already got a degraded answer, decision ``answered_by``.

    A subclass, so it travels through the batcher and the service like any event; its
    wire forms (``to_dict``, the audit record's ``event``) are those of the event."""

    answered_by: str = ""


def answered(event: Event, decision_id: str) -> Answered:
    """The same event, marked as answered by ``decision_id``."""
    return Answered(**{f.name: getattr(event, f.name) for f in fields(Event)}, answered_by=decision_id)


def answered_by(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The decision id in a record's :data:`ANSWERED_HEADER`, if it has one.

    >>> answered_by([("beacon-answered", b"d-1")]), answered_by(None)
    ('d-1', None)
    """
    for name, value in headers or ():
        if name == ANSWERED_HEADER:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def decide_without_state(event: Event, rules: RuleSet, scorer: Scorer, policy: DecisionPolicy) -> Decision:
    """The decision on the event alone: an empty snapshot, no sales offer, no alert raised,
    and a verdict no lower than the pack's floor for the event type.

    Alerts are left to the decision the Kafka path makes once state is back: only then
    can their suppression window be checked and the alert be recorded."""
    decision = withhold_sales(decide(event, NO_STATE, rules, scorer, policy), WHY_DEGRADED)
    floor = rules.when_state_unavailable.floor(event.type)
    risk = at_least(decision.risk, floor, event.type)
    # The channel's risk treatment for the floored verdict (fail closed: step-up, decline).
    fallback = shown_when_nothing_else(rules, event.channel, risk.verdict) if decision.fallback else None
    shown = without_caps(decision.actions, fallback, decision.max_actions) if fallback else ()
    return replace(
        decision,
        actions=shown,
        fallback=fallback,
        risk=risk,
        alerts=(),
        degraded=True,
        explanation={**decision.explanation, "degraded": WHY_DEGRADED, "state_unavailable": floor},
    )


def at_least(risk: Risk, floor: Verdict, event_type: str) -> Risk:
    """The stateless verdict, raised to ``floor`` (with a reason saying why) if lower.

    >>> at_least(Risk(0.1, "allow"), "block", "pin_failure").verdict
    'block'
    >>> at_least(Risk(0.9, "block"), "step_up", "transfer").reasons
    ()
    """
    if VERDICT_ORDER[floor] <= VERDICT_ORDER[risk.verdict]:
        return risk
    why = f"state unavailable: a {event_type} without customer state is at least {floor}"
    why += " (when_state_unavailable)"
    return replace(risk, verdict=floor, reasons=(*risk.reasons, why))


def as_answered(event: Event, decision: Decision) -> Decision:
    """The decision to commit for an event: unchanged, unless the channel was already
    answered without state, when the customer saw no sales offer and none may count."""
    if not isinstance(event, Answered):
        return decision
    return after_degraded_answer(decision, event.answered_by)


def after_degraded_answer(decision: Decision, answered_by: str) -> Decision:
    """The stateful decision of an event the channel already had the degraded answer
    ``answered_by`` to: no sales offer counts as shown, and its audit record says so."""
    return following(withhold_sales(decision, WHY_ANSWERED), answered_by)


def following(decision: Decision, answered_by: str) -> Decision:
    """The stateful decision of an event whose channel got the degraded answer
    ``answered_by``: its audit record says so (``explain.answered_degraded``)."""
    return replace(decision, explanation={**decision.explanation, "answered_degraded": answered_by})


def withhold_sales(decision: Decision, why: str) -> Decision:
    """Sales offers (offer, retention) move from the ranking to ``dropped``; service
    messages and risk actions stay."""
    kept = tuple(a for a in decision.actions if a.kind not in SALES_KINDS)
    held = tuple(Dropped(a.id, "degraded", why) for a in decision.actions if a.kind in SALES_KINDS)
    return replace(decision, actions=kept, dropped=decision.dropped + held)
