"""The pure decision: rules, risk verdict, arbitration, suppression and fallback."""

from __future__ import annotations

from engine.arbitration import arbitrate
from engine.builtin_rules import builtin_rules
from engine.decision import Risk, decision_id_for
from engine.events import Event
from engine.pipeline import DecisionPolicy, assess_risk, decide
from engine.rules import Offer, RiskRule, RuleSet
from engine.scoring import BuiltinScorer, Scores
from engine.state import Snapshot, Tally

TS = 1_795_428_000.0
RULES = builtin_rules()
POLICY = DecisionPolicy()


def run(event: Event, snap: Snapshot | None = None):  # type: ignore[no-untyped-def]
    return decide(event, snap or Snapshot(windows={}), RULES, BuiltinScorer(), POLICY)


def test_pin_bruteforce_blocks_and_raises_an_alert() -> None:
    d = run(Event("e1", "c1", "atm", "pin_failure", TS), Snapshot(windows={}, pin_failures_1h=3))
    assert d.risk.verdict == "block"
    assert [a.rule_id for a in d.alerts] == ["pin_bruteforce"]
    assert d.alerts[0].reason == "3 PIN failures in the last hour"
    assert d.actions[0].kind == "fallback"  # no sales offer to a customer under attack


def test_eligible_offer_is_ranked_and_explained() -> None:
    snap = Snapshot(windows={}, profile={"income_band": "high", "products": ["current"], "kyc_risk": "low"})
    d = run(Event("e2", "c2", "internet", "login", TS), snap)
    ids = [a.id for a in d.actions]
    assert ids[0] == "credit_card_gold"  # highest value x propensity
    assert "savings_boost" in ids
    assert all(a.reasons for a in d.actions)
    assert d.actions[0].treatment["content"].startswith("Banner:")


def test_complaint_gets_service_only() -> None:
    snap = Snapshot(
        windows={"7d": {"ty:complaint": Tally(1, 0)}},
        profile={"income_band": "high", "products": [], "kyc_risk": "low"},
    )
    d = run(Event("e3", "c3", "mobile", "complaint", TS), snap)
    assert {a.kind for a in d.actions} == {"service"}


def test_contact_cap_drops_an_offer_already_shown() -> None:
    snap = Snapshot(
        windows={},
        profile={"income_band": "high", "products": ["current"]},
        contacts=(("d1|credit_card_gold|atm", TS - 10), ("d2|credit_card_gold|mobile", TS - 20)),
    )
    d = run(Event("e4", "c4", "internet", "login", TS), snap)
    assert "credit_card_gold" not in [a.id for a in d.actions]


def test_step_up_suppresses_offers_but_keeps_service() -> None:
    offer = Offer("o", "offer", "O", 10, frozenset({"atm"}), {"atm": "x"}, lambda c: True)
    service = Offer("s", "service", "S", 1, frozenset({"atm"}), {"atm": "y"}, lambda c: True)
    scores = Scores(0.1, 0.1, {"o": 0.5, "s": 0.5})
    actions = arbitrate((offer, service), scores, Risk(0.6, "step_up"), "atm", (), {}, 3)
    assert [a.id for a in actions] == ["s"]
    actions = arbitrate(
        (offer,), scores, Risk(0.9, "block"), "atm", (), {"atm": {"id": "fb", "text": "t"}}, 3
    )
    assert actions[0].id == "fb" and actions[0].reasons == ("risk verdict suppresses offers",)


def test_high_model_score_alone_sets_the_verdict() -> None:
    assert assess_risk(Scores(0.9, 0.0), (), POLICY).verdict == "block"
    assert assess_risk(Scores(0.6, 0.0), (), POLICY).verdict == "step_up"
    assert assess_risk(Scores(0.1, 0.0), (), POLICY).verdict == "allow"


def test_a_broken_rule_is_reported_not_fatal() -> None:
    def boom(_: object) -> bool:
        raise KeyError("nope")

    rules = RuleSet("t", (RiskRule("bad", "low", boom, "r", "review"),), ())
    d = decide(Event("e5", "c5", "atm", "login", TS), Snapshot(windows={}), rules, BuiltinScorer(), POLICY)
    assert d.alerts == () and "bad: KeyError" in d.versions["rule_errors"][0]


def test_decision_id_is_stable_per_channel_and_event() -> None:
    a = Event("e6", "c6", "atm", "login", TS)
    b = Event("e6", "c6", "atm", "login", TS + 5)
    c = Event("e6", "c6", "mobile", "login", TS)
    assert decision_id_for(a) == decision_id_for(b) != decision_id_for(c)


def test_decision_is_pure() -> None:
    ev = Event("e7", "c7", "internet", "transfer", TS, amount=5000.0, device_id="x")
    snap = Snapshot(windows={}, device_known=False, devices=2)
    assert run(ev, snap).channel_bytes() == run(ev, snap).channel_bytes()
