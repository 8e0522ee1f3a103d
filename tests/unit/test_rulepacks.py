"""Rule packs: the shipped bundle loads and passes its own cases; bad packs are refused
with a message naming the file, the rule and the problem; runtime errors are contained."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.decide.pipeline import DecisionPolicy, decide
from engine.decide.rulebook import load, run_cases
from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer
from engine.domain.state import Snapshot
from engine.rules.pack import RulePackError, bundle_digest, read_bundle
from engine.settings import Settings
from tests.unit.rulefixture import CHANNELS, OFFERS, RISK

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
FALLBACKS = (
    "fallbacks: {atm: {id: a}, internet: {id: i}, mobile: {id: m}, branch: {id: b}, call_centre: {id: c}}\n"
)


def test_shipped_bundle_loads_and_passes_its_own_cases() -> None:
    s = Settings()
    compiled = load(read_bundle(RULES_DIR), frozenset(s.channels), "shipped", s.event_types)
    assert len(compiled.rules.risk_rules) >= 5 and len(compiled.rules.offers) >= 5
    results = run_cases(compiled)
    assert results, "the shipped packs carry test cases"
    failing = [(r.file, r.name, r.problems) for r in results if not r.passed]
    assert failing == []


def _refused(files: dict[str, str]) -> str:
    with pytest.raises(RulePackError) as info:
        load(files, CHANNELS, "v")
    return str(info.value)


def _risk(rule: str) -> dict[str, str]:
    return {"bad.yaml": "kind: risk\nrules:\n  - " + rule}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{id: a, severity: high, when: 'state.amount >', action: block}",
         "bad.yaml: rule a: `when` does not compile"),
        ("{id: a, severity: high, when: 'balance > 1', action: block}",
         "bad.yaml: rule a: `when`: unknown variable(s) balance"),
        ("{id: a, severity: high, when: 'state.pin_failurs_1h > 1', action: block}",
         "bad.yaml: rule a: `when`: unknown field state.pin_failurs_1h (did you mean state.pin_failures_1h?)"),
        ("{id: a, severity: huge, when: 'true', action: block}",
         "bad.yaml: rule a: severity must be one of low, medium, high, critical (got 'huge')"),
        ("{id: a, severity: low, when: 'true', action: shout}", "bad.yaml: rule a: action must be one of"),
        ("{id: a, severity: low, when: 'true', action: block, colour: red}",
         "bad.yaml: rule a: unknown key(s) colour"),
        ("{id: a, severity: low, when: 'true', action: block, suppress: soon}",
         "bad.yaml: rule a: `suppress`: 'soon' is not a duration"),
        ("{id: a, severity: low, when: 'event.amount * 2 > 100.0', action: block}",
         "bad.yaml: rule a: `when` fails on a sample"),
        ("{id: a, severity: low, when: 'in_list(\"nope\", event.terminal_id)', action: block}",
         "bad.yaml: rule a: `when`: unknown list 'nope'"),
        ("{id: a, severity: low, when: 'true', action: block, reason: '{state.nope}'}",
         "bad.yaml: rule a: `reason`: unknown field state.nope"),
        ("{id: Bad-Id, severity: low, when: 'true', action: block}", "bad.yaml: every entry of `rules` needs an id"),
    ],
)  # fmt: skip
def test_bad_risk_rules_are_refused_with_file_rule_and_problem(rule: str, message: str) -> None:
    assert _refused(_risk(rule)).startswith(message)


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        ("{id: o, kind: offer, channels: [atm, mobile], treatments: {atm: x}}",
         "bad.yaml: rule o: missing treatment for channel(s) mobile"),
        ("{id: o, kind: offer, channels: [fax], treatments: {fax: x}}", "bad.yaml: rule o: channels must be"),
        ("{id: o, kind: gift, channels: [atm], treatments: {atm: x}}", "bad.yaml: rule o: kind must be one of"),
        ("{id: o, kind: offer, channels: [atm], treatments: {atm: x}, contact: {max: 0}}",
         "bad.yaml: rule o: `per_offer`: max must be a whole number >= 1"),
        ("{id: o, kind: offer, channels: [atm], treatments: {atm: x}, contact: {max: 1, window: 30d}}",
         "bad.yaml: rule o: `per_offer`: max must be a whole number >= 1 and window at most 7d"),
        ("{id: o, kind: offer, channels: [atm], treatments: {atm: x}, valid: {from: 2027-01-01, until: 2026-01-01}}",
         "bad.yaml: rule o: `valid`: until must be after from"),
        ("{id: o, kind: offer, channels: [atm], treatments: {atm: x}, eligible: 'true'}",
         "bad.yaml: rule o: unknown key(s) eligible (did you mean eligibility?)"),
        ("{id: o, kind: offer, channels: [atm], treatments: {atm: x}, levers: {a: -1}}",
         "bad.yaml: rule o: value and every lever must be non-negative numbers"),
    ],
)  # fmt: skip
def test_bad_offers_are_refused_with_file_rule_and_problem(offer: str, message: str) -> None:
    assert _refused({"bad.yaml": "kind: offers\n" + FALLBACKS + "offers:\n  - " + offer}).startswith(message)


def test_bundle_level_problems() -> None:
    rule = "{id: a, severity: low, when: 'true', action: review}"
    both = {"one.yaml": "kind: risk\nrules:\n  - " + rule, "two.yaml": "kind: risk\nrules:\n  - " + rule}
    assert _refused(both) == "two.yaml: rule a: duplicate id (also in one.yaml)"
    no_fallback = {
        "o.yaml": "kind: offers\noffers:\n  - {id: o, kind: offer, channels: [atm], treatments: {atm: x}}"
    }
    assert _refused(no_fallback).startswith("offers: no fallback for channel(s)")
    typo = {
        "t.yaml": "kind: risk\nrules:\n  - "
        + rule
        + "\ntypologies:\n  - {id: t, rules: {b: 0.5}, review: 0.5}"
    }
    assert _refused(typo) == "t.yaml: typology t: unknown rule(s) b"
    assert _refused({"x.yaml": "kind: sideways"}).startswith("x.yaml: a pack is a mapping")
    assert _refused({"x.yaml": "kind: risk\nrules: [\n"}).startswith("x.yaml: not valid YAML")


def test_digest_depends_on_content_only() -> None:
    a = {"risk.yaml": RISK, "offers.yaml": OFFERS}
    assert bundle_digest(a) == bundle_digest(dict(reversed(a.items())))
    assert bundle_digest(a) != bundle_digest({**a, "risk.yaml": RISK + "\n"})


def test_a_rule_failing_at_run_time_is_reported_not_fatal() -> None:
    files = _risk(
        "{id: odd, severity: low, action: review, when: 'event.attributes.x != null && event.attributes.x > 1.0'}"
    )
    rules = load(files, CHANNELS, "v").rules  # passes the dry run: the attribute is null there
    ev = Event("e", "c", "atm", "login", 0.0, attributes={"x": "text"})
    d = decide(ev, Snapshot(windows={}), rules, BuiltinScorer(), DecisionPolicy())
    assert d.alerts == () and d.versions["rule_errors"][0].startswith("odd: ")


def test_comprehensions_may_bind_their_own_names() -> None:
    files = _risk("{id: w, severity: low, action: review, when: 'profile.products.exists(p, p == \"loan\")'}")
    rules = load(files, CHANNELS, "v").rules
    d = decide(Event("e", "c", "atm", "login", 0.0), Snapshot(windows={}, profile={"products": ["loan"]}),
               rules, BuiltinScorer(), DecisionPolicy())  # fmt: skip
    assert [a.rule_id for a in d.alerts] == ["w"]


def test_failing_case_is_reported_with_what_was_expected() -> None:
    files = _risk(
        "{id: a, severity: low, when: 'event.amount > 10.0', action: review}\n"
        "tests:\n  - name: big\n    event: {amount: 5.0}\n    expect: {fires: [a], verdict: review}"
    )
    [result] = run_cases(load(files, CHANNELS, "v"))
    assert not result.passed
    assert result.problems == ("expected a to be fired", "expected verdict review, got allow")


# -- when_state_unavailable: the fail-closed floor per event type (issue 14) --------------

_UNAVAILABLE = "kind: risk\nwhen_state_unavailable: {}\n"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{default: maybe}", "bad.yaml: when_state_unavailable: default must be one of allow, review, "
                             "step_up, block (got 'maybe')"),
        ("{types: {login: allow}}", "bad.yaml: when_state_unavailable: default must be one of"),
        ("{default: step_up, types: {login: deny}}",
         "bad.yaml: when_state_unavailable: type login must be one of allow, review, step_up, block (got 'deny')"),
        ("{default: step_up, types: {transfr: block}}",
         "bad.yaml: when_state_unavailable: unknown event type(s) transfr (did you mean transfer?)"),
        ("{default: step_up, types: {transfer: allow, withdrawal: review}}",
         "bad.yaml: when_state_unavailable: money movement must step up or block without customer state; "
         "transfer is allow, withdrawal is review"),
        ("{default: allow, types: {transfer: step_up}}",
         "money movement must step up or block without customer state; bill_payment is allow, "
         "card_payment is allow, withdrawal is allow"),
        ("{default: block, fallback: allow}", "bad.yaml: when_state_unavailable: unknown key(s) fallback"),
        ("[step_up]", "bad.yaml: when_state_unavailable: a mapping with `default` and `types`"),
    ],
)  # fmt: skip
def test_a_bad_state_unavailable_section_is_refused(section: str, message: str) -> None:
    assert message in _refused({"bad.yaml": _UNAVAILABLE.format(section)})


def test_the_state_unavailable_section_is_declared_once_per_bundle() -> None:
    section = _UNAVAILABLE.format("{default: step_up}")
    assert "b.yaml: `when_state_unavailable` is declared twice (also in a.yaml)" in _refused(
        {"a.yaml": section, "b.yaml": section}
    )


def test_the_shipped_pack_fails_closed_where_money_moves() -> None:
    s = Settings()
    rules = load(read_bundle(RULES_DIR), frozenset(s.channels), "shipped", s.event_types).rules
    floors = rules.when_state_unavailable
    for etype in ("withdrawal", "transfer", "bill_payment", "card_payment", "pin_failure", "login"):
        assert floors.floor(etype) in ("step_up", "block"), etype
    for etype in ("balance_inquiry", "page_view", "product_view", "offer_response", "complaint"):
        assert floors.floor(etype) == "allow", etype
    assert floors.floor("a_type_added_later") == "step_up"
    assert set(floors.types) <= set(s.event_types)
