"""Rule packs in rules/: they load, bad packs are refused with file/rule/problem, and the
shipped packs decide exactly like the built-in rule set they will replace."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.builtin_rules import builtin_rules
from engine.events import Event, Geo
from engine.features import build_features
from engine.rulepack import RulePackError, cel_context, load_packs, parse_pack
from engine.rules import RuleSet
from engine.scoring import BuiltinScorer
from engine.settings import Settings
from engine.state import Snapshot, Tally

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
CHANNELS = frozenset(Settings().channels)
FEATURES = frozenset(build_features(Event("e", "c", "atm", "login", 0.0), Snapshot(windows={})))


def test_shipped_packs_load() -> None:
    packs = load_packs(RULES_DIR, CHANNELS, FEATURES)
    assert len(packs.risk_rules) == 5 and len(packs.offers) == 5 and "atm" in packs.fallbacks


@pytest.mark.parametrize(
    ("pack", "message"),
    [
        ("kind: risk\nrules:\n  - {id: a, severity: high, when: 'features.amount >', action: block}",
         "bad.yaml: rule a: condition does not compile"),
        ("kind: risk\nrules:\n  - {id: a, severity: high, when: 'balance > 1', action: block}",
         "bad.yaml: rule a: unknown variable(s) balance"),
        ("kind: risk\nrules:\n  - {id: a, severity: high, when: 'features.balance > 1', action: block}",
         "bad.yaml: rule a: unknown feature(s) balance"),
        ("kind: risk\nrules:\n  - {id: a, severity: huge, when: 'true', action: block}",
         "bad.yaml: rule a: severity must be one of"),
        ("kind: risk\nrules:\n  - {id: a, severity: low, when: 'true', action: shout}",
         "bad.yaml: rule a: action must be one of"),
        ("kind: risk\nrules:\n  - {id: a, severity: low, when: 'true', action: block}\n"
         "  - {id: a, severity: low, when: 'true', action: block}", "bad.yaml: rule a: duplicate id"),
        ("kind: offers\noffers:\n  - {id: o, kind: offer, channels: [atm, mobile], treatments: {atm: x},"
         " eligible: 'true'}", "bad.yaml: rule o: missing treatment for channel(s) mobile"),
        ("kind: offers\noffers:\n  - {id: o, kind: offer, channels: [fax], treatments: {fax: x},"
         " eligible: 'true'}",
         "bad.yaml: rule o: channels must be"),
        ("kind: risk\nrules:\n  - {id: a, severity: low, when: 'true', action: block, colour: red}",
         "bad.yaml: rule a: unknown key(s) colour"),
        ("kind: sideways", "bad.yaml: a pack is a mapping"),
        ("kind: risk\nrules: [\n", "bad.yaml: not valid YAML"),
    ],
)  # fmt: skip
def test_bad_packs_are_refused_with_file_rule_and_problem(pack: str, message: str) -> None:
    with pytest.raises(RulePackError) as info:
        parse_pack(pack, "bad.yaml", CHANNELS, FEATURES)
    assert str(info.value).startswith(message)


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    rule = "kind: risk\nrules:\n  - {id: a, severity: low, when: 'true', action: review}\n"
    (tmp_path / "one.yaml").write_text(rule)
    (tmp_path / "two.yaml").write_text(rule)
    with pytest.raises(RulePackError, match=r"two\.yaml: rule a: duplicate id \(also in one\.yaml\)"):
        load_packs(tmp_path, CHANNELS, FEATURES)


def test_comprehension_variables_and_lists_are_allowed() -> None:
    pack = parse_pack(
        "kind: risk\nlists: {watch_terminals: [T1]}\nrules:\n"
        "  - {id: w, severity: low, action: review,"
        " when: 'lists.watch_terminals.exists(t, t == event.terminal_id)'}",
        "w.yaml", CHANNELS, FEATURES,
    )  # fmt: skip
    ctx = cel_context({"terminal_id": "T1"}, {}, {}, {}, "atm", pack.lists)
    assert pack.risk_rules[0].condition(ctx)


CHURNING = "8"  # the case whose churn score is set high, as a churn model would


def _scores(event: Event, features: dict[str, object], offer_ids: tuple[str, ...]) -> dict[str, object]:
    scores = BuiltinScorer().score(features, offer_ids).to_dict()
    if event.event_id == CHURNING:
        scores["churn"] = 0.8
    return scores


def _cases() -> list[tuple[Event, Snapshot]]:
    ts = time.time()
    rich = {"income_band": "high", "products": ["current"], "kyc_risk": "low"}
    return [
        (Event("1", "c", "atm", "pin_failure", ts), Snapshot(windows={}, pin_failures_1h=4)),
        (Event("2", "c", "internet", "transfer", ts, amount=5000.0, device_id="x"),
         Snapshot(windows={}, device_known=False, devices=2)),
        (Event("3", "c", "atm", "withdrawal", ts, amount=900.0, geo=Geo(40.7, -74.0)),
         Snapshot(windows={"10m": {"ty:withdrawal": Tally(5, 1000)},
                           "30d": {"ty:withdrawal": Tally(10, 180000)}},
                  last={"ts": str(ts - 600), "ch": "atm", "lat": "51.5", "lon": "-0.1"})),
        (Event("4", "c", "internet", "login", ts), Snapshot(windows={}, profile=rich)),
        (Event("5", "c", "mobile", "complaint", ts),
         Snapshot(windows={"7d": {"ty:complaint": Tally(1, 0)}}, profile=rich)),
        (Event("6", "c", "atm", "balance_inquiry", ts),
         Snapshot(windows={"30d": {"ty:balance_inquiry": Tally(4, 0)}})),
        (Event("7", "c", "mobile", "login", ts),
         Snapshot(windows={"30d": {"all": Tally(1, 0)}}, open_alerts=1)),
        (Event("8", "c", "mobile", "deposit", ts), Snapshot(windows={"30d": {"all": Tally(1, 0)}})),
    ]  # fmt: skip


@pytest.mark.parametrize(("event", "snap"), _cases())
def test_packs_decide_like_the_builtin_rules(event: Event, snap: Snapshot) -> None:
    packs = load_packs(RULES_DIR, CHANNELS, FEATURES)
    from_packs = RuleSet("packs", packs.risk_rules, packs.offers, packs.fallbacks)
    builtin = builtin_rules()
    features = build_features(event, snap)
    scores = _scores(event, features, tuple(o.id for o in builtin.offers))
    plain = {"event": event, "features": features, "scores": scores, "profile": snap.profile}
    ctx = cel_context(event.to_dict(), features, scores, snap.profile, event.channel, packs.lists)
    want = builtin.evaluate(plain, event.channel)
    got = from_packs.evaluate(ctx | {"features": features}, event.channel)
    assert not got.errors and not want.errors
    assert [f.rule.id for f in got.fired] == [f.rule.id for f in want.fired]
    assert [f.reason for f in got.fired] == [f.reason for f in want.fired]
    assert [o.id for o in got.eligible] == [o.id for o in want.eligible]


def test_equivalence_cases_cover_every_rule_and_offer() -> None:
    builtin = builtin_rules()
    fired: set[str] = set()
    for event, snap in _cases():
        features = build_features(event, snap)
        scores = _scores(event, features, ())
        out = builtin.evaluate({"event": event, "features": features, "scores": scores}, event.channel)
        fired |= {f.rule.id for f in out.fired} | {o.id for o in out.eligible}
    assert fired == {r.id for r in builtin.risk_rules} | {o.id for o in builtin.offers}
