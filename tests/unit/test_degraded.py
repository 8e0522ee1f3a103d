"""Decisions without customer state, and events already answered that way (pure)."""

from __future__ import annotations

import orjson

from engine.decide.degraded import (
    ANSWERED_HEADER,
    Answered,
    answered,
    answered_by,
    as_answered,
    decide_without_state,
)
from engine.decide.pipeline import DecisionPolicy, decide
from engine.domain.decision import Decision, decision_id_for
from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer
from engine.domain.state import Snapshot
from tests.unit.rulefixture import fixture_rules

TS = 1_795_428_000.0  # 2026-11-23: savings_boost is valid, and eligible for anyone without savings
RULES = fixture_rules()
POLICY = DecisionPolicy()


def degraded(event: Event) -> Decision:
    return decide_without_state(event, RULES, BuiltinScorer(), POLICY)


def test_no_sales_offer_only_the_fallback_and_the_flag() -> None:
    event = Event("e1", "c1", "atm", "login", TS)
    assert [a.id for a in decide(event, Snapshot(windows={}), RULES, BuiltinScorer(), POLICY).actions] == [
        "savings_boost"
    ]  # with state it would be offered ...
    d = degraded(event)
    assert d.degraded and [(a.id, a.kind) for a in d.actions] == [("atm_default", "fallback")]
    assert ("savings_boost", "degraded") in [(x.id, x.stage) for x in d.dropped]  # ... and says why not
    view = orjson.loads(d.channel_bytes())
    assert view["degraded"] is True and view["decision_id"] == decision_id_for(event)
    assert "contact-policy caps" in d.explain()["degraded"]


def test_rules_on_the_event_alone_still_decide_the_risk() -> None:
    # a balance inquiry: its floor (allow) leaves the verdict to the stateless rules
    d = degraded(Event("e2", "c1", "atm", "balance_inquiry", TS, terminal_id="T-BAD"))
    assert d.risk.verdict == "review" and d.risk.reasons[0].startswith("watch_terminal")
    assert [f["id"] for f in d.explanation["rules"]] == ["watch_terminal"]
    assert d.alerts == ()  # raised by the Kafka path once state is back, where suppression is checked


def test_service_messages_stay() -> None:
    d = degraded(Event("e3", "c1", "mobile", "complaint", TS))
    assert [(a.id, a.kind) for a in d.actions] == [("complaint_follow_up", "service")]


def test_models_score_what_the_event_gives() -> None:
    d = degraded(Event("e4", "c1", "internet", "transfer", TS, amount=900.0, device_id="D1"))
    assert d.features["amount"] == 900.0 and d.features["n_30d"] == 0
    assert set(d.scores) >= {"fraud"} and d.versions["rules"] == RULES.version


def test_an_answered_event_keeps_its_identity_and_wire_form() -> None:
    event = Event("e5", "c1", "atm", "withdrawal", TS, amount=20.0, attributes={"x": 1}, extra={"y": 2})
    marked = answered(event, decision_id_for(event))
    assert isinstance(marked, Answered) and marked.answered_by == decision_id_for(event)
    assert marked.to_dict() == event.to_dict() and decision_id_for(marked) == decision_id_for(event)


def test_an_answered_event_commits_no_sales_offer() -> None:
    event = Event("e6", "c1", "atm", "login", TS)
    full = decide(event, Snapshot(windows={}), RULES, BuiltinScorer(), POLICY)
    assert as_answered(event, full) is full  # an ordinary event: untouched
    d = as_answered(answered(event, "d-6"), full)
    assert d.actions == () and not d.degraded  # decided with state; the commit shows the fallback
    assert [(x.id, x.stage) for x in d.dropped][-1] == ("savings_boost", "degraded")
    assert d.explain()["answered_degraded"] == "d-6"


def test_the_answered_header() -> None:
    assert answered_by([("other", b"x"), (ANSWERED_HEADER, b"d-1")]) == "d-1"
    assert answered_by([("other", b"x")]) is None and answered_by(None) is None


# -- fail closed: the pack's floor per event type (issue 14) ------------------------------


def test_a_pin_failure_without_state_is_blocked_not_allowed() -> None:
    """The third PIN failure blocks with state; without it the count is unknown, so the
    pack's floor for pin_failure decides, never a stateless allow."""
    d = degraded(Event("p1", "c1", "atm", "pin_failure", TS, terminal_id="T-1"))
    assert d.degraded and d.risk.verdict == "block"
    assert any("state unavailable" in r for r in d.risk.reasons)
    assert [a.kind for a in d.actions] == ["fallback"]


def test_a_large_transfer_from_a_new_device_without_state_steps_up() -> None:
    d = degraded(Event("t1", "c1", "internet", "transfer", TS, amount=5000.0, device_id="new"))
    assert d.risk.verdict == "step_up" and d.explanation["state_unavailable"] == "step_up"
    assert not [a for a in d.actions if a.kind in ("offer", "retention")]
    assert orjson.loads(d.channel_bytes())["risk"]["verdict"] == "step_up"


def test_an_informational_event_degrades_to_what_the_stateless_rules_say() -> None:
    d = degraded(Event("b1", "c1", "mobile", "balance_inquiry", TS))
    assert d.risk.verdict == "allow" and not any("state unavailable" in r for r in d.risk.reasons)
    watched = degraded(Event("b2", "c1", "atm", "balance_inquiry", TS, terminal_id="T-BAD"))
    assert watched.risk.verdict == "review"  # a stateless rule still raises it above the floor


def test_an_event_type_the_pack_does_not_list_gets_its_default() -> None:
    assert degraded(Event("c1", "c1", "internet", "card_payment", TS, amount=5.0)).risk.verdict == "step_up"


def test_a_bundle_without_the_section_fails_closed_for_every_type() -> None:
    from engine.decide.rulebook import load
    from tests.unit.rulefixture import CHANNELS, OFFERS

    bare = load({"offers.yaml": OFFERS}, CHANNELS, "bare").rules
    d = decide_without_state(Event("x1", "c1", "mobile", "page_view", TS), bare, BuiltinScorer(), POLICY)
    assert d.risk.verdict == "step_up"
