"""The pure decision: rules, typologies, risk verdict, arbitration, suppression, fallback,
and the explanation of every candidate."""

from __future__ import annotations

from engine.decide.arbitration import arbitrate, without_caps
from engine.decide.pipeline import DecisionPolicy, assess_risk, decide
from engine.domain.decision import Risk, decision_id_for
from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer, Scores
from engine.domain.state import Snapshot, Tally
from engine.rules.ruleset import RuleOutcome
from tests.unit.rulefixture import fixture_rules

TS = 1_795_428_000.0
RULES = fixture_rules()
POLICY = DecisionPolicy()
RICH = {"income_band": "high", "products": ["current"], "kyc_risk": "low"}


def run(event: Event, snap: Snapshot | None = None):  # type: ignore[no-untyped-def]
    return decide(event, snap or Snapshot(windows={}), RULES, BuiltinScorer(), POLICY)


def test_pin_bruteforce_blocks_and_raises_an_alert_with_the_values() -> None:
    d = run(Event("e1", "c1", "atm", "pin_failure", TS), Snapshot(windows={}, pin_failures_1h=3))
    assert d.risk.verdict == "block"
    assert [a.rule_id for a in d.alerts] == ["pin_bruteforce"]
    assert d.alerts[0].reason == "3 PIN failures in the last hour"
    assert d.alerts[0].values == {"event.type": "pin_failure", "state.pin_failures_1h": 3}
    assert d.alerts[0].suppress_s == 3600
    fired = d.explain()["rules"][0]
    assert fired["id"] == "pin_bruteforce" and fired["values"]["state.pin_failures_1h"] == 3


def test_eligible_offers_are_ranked_by_propensity_value_and_levers() -> None:
    d = run(Event("e2", "c2", "internet", "login", TS), Snapshot(windows={}, profile=RICH))
    assert [a.id for a in d.actions] == ["credit_card_gold", "savings_boost"]
    assert d.actions[0].score == 0.05 * 120 * 1.5
    assert d.actions[0].treatment["content"] == "Banner: Gold card"
    dropped = {x.id: x for x in d.dropped}
    assert dropped["complaint_follow_up"].stage == "applicability"


def test_each_dropped_offer_names_its_stage_clause_and_values() -> None:
    snap = Snapshot(windows={}, profile={"income_band": "low", "products": []})
    d = run(Event("e3", "c3", "atm", "login", TS), snap)
    gold = next(x for x in d.dropped if x.id == "credit_card_gold")
    assert gold.stage == "eligibility"
    assert gold.why == 'profile.income_band in ["high", "upper_middle"] is false'
    assert gold.values == {"profile.income_band": "low"}


def test_complaint_gets_service_only() -> None:
    snap = Snapshot(windows={"7d": {"ty:complaint": Tally(1, 0)}}, profile=RICH)
    d = run(Event("e4", "c4", "mobile", "complaint", TS), snap)
    assert [a.id for a in d.actions] == ["complaint_follow_up"]
    stages = {x.id: x.stage for x in d.dropped}
    assert stages == {"credit_card_gold": "suitability", "savings_boost": "suitability"}


def test_validity_window_is_applied_as_of_the_event() -> None:
    late = Event("e5", "c5", "internet", "login", 1_830_000_000.0)  # 2027-12
    d = run(late, Snapshot(windows={}, profile=RICH))
    assert next(x for x in d.dropped if x.id == "savings_boost").stage == "validity"


def test_typology_scores_its_rules_and_sets_the_verdict() -> None:
    ev = Event("e6", "c6", "internet", "transfer", TS, amount=5000.0, device_id="x", terminal_id="T-BAD")
    d = run(ev, Snapshot(windows={}, device_known=False, devices=2))
    assert {a.rule_id for a in d.alerts} == {"new_device_transfer", "watch_terminal"}
    assert d.risk.typologies == ({"id": "takeover", "score": 1.0, "verdict": "block"},)
    assert d.risk.verdict == "block"
    assert all(a.typologies == ("takeover",) for a in d.alerts)


def test_step_up_suppresses_offers_but_keeps_service() -> None:
    offers = {o.id: o for o in RULES.offers}
    scores = Scores(0.1, 0.1, {"credit_card_gold": 0.5, "complaint_follow_up": 0.5})
    eligible = (offers["credit_card_gold"], offers["complaint_follow_up"])
    ranked, dropped, _ = arbitrate(eligible, scores, Risk(0.6, "step_up", ("r: x",)), "atm")
    assert [a.id for a in ranked] == ["complaint_follow_up"]
    assert dropped[0].id == "credit_card_gold" and dropped[0].stage == "risk"
    assert dropped[0].why.startswith("risk verdict step_up")


def test_fallback_when_nothing_is_left() -> None:
    d = run(Event("e7", "c7", "atm", "pin_failure", TS), Snapshot(windows={}, pin_failures_1h=3))
    assert d.actions == () and d.fallback is not None and d.fallback.id == "atm_default"
    assert without_caps(d.actions, d.fallback, 3)[0].kind == "fallback"


def test_high_model_score_alone_sets_the_verdict() -> None:
    nothing = RuleOutcome((), (), ())
    assert assess_risk(Scores(0.9, 0.0), nothing, POLICY).verdict == "block"
    assert assess_risk(Scores(0.6, 0.0), nothing, POLICY).verdict == "step_up"
    assert assess_risk(Scores(0.1, 0.0), nothing, POLICY).verdict == "allow"


def test_decision_id_is_stable_per_channel_and_event() -> None:
    a = Event("e8", "c8", "atm", "login", TS)
    b = Event("e8", "c8", "atm", "login", TS + 5)
    c = Event("e8", "c8", "mobile", "login", TS)
    assert decision_id_for(a) == decision_id_for(b) != decision_id_for(c)


def test_decision_is_pure_and_records_the_rules_version() -> None:
    ev = Event("e9", "c9", "internet", "transfer", TS, amount=5000.0, device_id="x")
    snap = Snapshot(windows={}, device_known=False, devices=2)
    assert run(ev, snap).channel_bytes() == run(ev, snap).channel_bytes()
    assert run(ev, snap).versions["rules"] == "test-1"


def test_exploration_and_control_group_are_deterministic_and_recorded() -> None:
    from engine.domain.policy import ArbitrationPolicy, in_control_group

    offers = {o.id: o for o in RULES.offers}
    eligible = (offers["credit_card_gold"], offers["savings_boost"], offers["complaint_follow_up"])
    scores = Scores(0.1, 0.1, {"credit_card_gold": 0.5, "savings_boost": 0.2, "complaint_follow_up": 0.1})
    allow = Risk(0.0, "allow")
    always = ArbitrationPolicy(exploration=0.5)
    explored = [arbitrate(eligible, scores, allow, "atm", always, f"d{i}", "c1")[2] for i in range(200)]
    share = sum(r["explored"] for r in explored) / len(explored)
    assert 0.35 < share < 0.65  # about epsilon, drawn from the decision id
    again = arbitrate(eligible, scores, allow, "atm", always, "d7", "c1")
    assert again[2] == explored[7] and again[2]["p_first"]["credit_card_gold"] == round(0.5 + 0.5 / 3, 6)
    held = next(f"c{i}" for i in range(1000) if in_control_group(f"c{i}", 0.2))
    ranked, dropped, record = arbitrate(
        eligible, scores, allow, "atm", ArbitrationPolicy(control_group=0.2), "d", held
    )
    assert record["control"] and [a.id for a in ranked] == ["complaint_follow_up"]
    assert {d.stage for d in dropped} == {"control_group"}
