"""Raw scores (unrounded, in the opt-in block) and outbound offer scoring, pure parts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.decide.arbitration import arbitrate
from engine.decide.outbound import Contacts, Request, contact_findings, parse_request, score_offers
from engine.decide.pipeline import DecisionPolicy, decide
from engine.decide.rulebook import load
from engine.domain.decision import Risk
from engine.domain.events import Event
from engine.domain.policy import in_control_group
from engine.domain.scoring import BuiltinScorer, Scores
from engine.domain.state import Snapshot
from engine.errors import EventError
from engine.rules.pack import read_bundle
from engine.settings import Settings
from engine.store.readonly import window_tallies_at
from models.scorer import ModelScorer

S = Settings()
RULES = load(read_bundle(S.rules_path()), frozenset(S.channels), "v").rules
RICH = {"income_band": "high", "products": ["current"], "kyc_risk": "low", "tenure_months": 30}
NOW = 1795428000.0


class _Offers:
    """An offers model whose propensities differ in the 8th decimal."""

    def predict_offers(self, x: Mapping[Any, Any], offer_ids: Iterable[str]) -> dict[str, float]:
        values = {"a": 0.123456781, "b": 0.123456789}
        return {o: values.get(o, 0.05) for o in offer_ids}


class _Fraud:
    def predict_proba_one(self, x: Mapping[Any, Any]) -> dict[bool, float]:
        return {True: 1.234567891e-7, False: 1 - 1.234567891e-7}


def test_model_scores_are_not_rounded_so_close_offers_rank_apart() -> None:
    scorer = ModelScorer()
    scorer.install("offers", "offers-1", _Offers())
    scorer.install("fraud", "fraud-1", _Fraud())
    scores = scorer.score({"n_30d": 3}, ("a", "b"))
    assert scores.offer["b"] - scores.offer["a"] == pytest.approx(8e-9)
    assert scores.fraud == 1.234567891e-7  # a rare-class score does not tie at 0
    # Two offers of the same value and levers: only the 8th decimal of propensity orders them.
    gold = RULES.offer_index["credit_card_gold"]
    same = tuple(replace(gold, id=oid) for oid in ("a", "b"))
    ranked, _, _ = arbitrate(same, scores, Risk(0.0, "allow"), "internet")
    assert [a.id for a in ranked] == ["b", "a"] and ranked[0].score > ranked[1].score


def test_builtin_scores_are_unrounded_too() -> None:
    s = BuiltinScorer().score({"new_device": 1, "amount_ratio_30d": 8.0}, ("x",))
    assert s.fraud != round(s.fraud, 6) and s.churn != round(s.churn, 6)


def test_scores_view_lists_each_candidate_with_propensity_shown_or_why_not() -> None:
    event = Event("e1", "C1", "internet", "login", NOW)
    d = decide(event, Snapshot(windows={}, profile=RICH), RULES, BuiltinScorer(), DecisionPolicy())
    view = d.scores_view()
    assert view["fraud"] == d.scores["fraud"] and view["churn"] == d.scores["churn"]
    rows = {o["id"]: o for o in view["offers"]}
    assert rows["credit_card_gold"]["shown"] is True and rows["credit_card_gold"]["score"] > 0
    assert rows["personal_loan_preapproved"] == {
        "id": "personal_loan_preapproved",
        "propensity": 0.05,
        "shown": False,
        "stage": "eligibility",
        "why": rows["personal_loan_preapproved"]["why"],
    }
    assert "mobile_app_adoption" not in rows  # not made for the channel: no candidate
    assert "scores" not in d.channel_view()  # the default answer is unchanged


def test_outbound_reports_every_check_that_fails_with_a_code() -> None:
    cust = next(f"CG{i}" for i in range(10_000) if in_control_group(f"CG{i}", 0.02))
    snap = Snapshot(windows={}, profile=RICH, pin_failures_1h=3, open_alerts=1)
    seen = Contacts(shown=(("d1|credit_card_gold|internet", NOW - 60), ("d2|credit_card_gold|atm", NOW - 120)),
                    declined={"credit_card_gold": NOW - 7200}, daily={"credit_card_gold": 5000})  # fmt: skip
    ask = Request(cust, "internet", ("credit_card_gold", "mobile_app_adoption", "gone"), "login")
    out = score_offers(ask, snap, seen, RULES, BuiltinScorer(), DecisionPolicy(), NOW)
    gold = next(o for o in out.offers if o.id == "credit_card_gold")
    codes = [f.code for f in gold.failed]
    # The open alert fails suitability; no risk rule of the pack fires on a login.
    assert codes == ["not_suitable", "control_group", "offer_cap", "decline_cooldown", "daily_cap"]
    assert gold.failed[0].values == {"state.open_alerts": 1, "scores.fraud": out.scores.fraud}
    assert gold.propensity == 0.05 and gold.score == pytest.approx(0.05 * 120 * 1.2)
    app = next(o for o in out.offers if o.id == "mobile_app_adoption")
    assert [f.code for f in app.failed][:1] == ["not_for_channel"]
    assert out.unknown == ("gone",) and out.to_dict()["offers"][-1] == {
        "id": "gone",
        "status": "unknown_offer",
    }


def test_outbound_risk_gate_holds_sales_offers() -> None:
    snap = Snapshot(windows={}, profile=RICH)
    ask = Request("C1", "call_centre", ("credit_card_gold",))

    class Risky(BuiltinScorer):
        def score(self, features: Any, offer_ids: tuple[str, ...], attributes: Any = None) -> Scores:
            return Scores(0.9, 0.1, dict.fromkeys(offer_ids, 0.2))

    out = score_offers(ask, snap, Contacts(), RULES, Risky(), DecisionPolicy(), NOW)
    assert out.risk.verdict == "block"
    assert [f.code for f in out.offers[0].failed] == ["not_suitable", "risk_verdict"]
    assert out.offers[0].checks["applicability"] == "skipped"


def test_contact_caps_count_as_the_commit_script_does() -> None:
    gold = RULES.offer_index["credit_card_gold"]
    fresh = contact_findings(gold, "internet", NOW, Contacts())
    assert fresh == []
    old = Contacts(shown=(("d|credit_card_gold|internet", NOW - 8 * 86400),) * 3)
    assert contact_findings(gold, "internet", NOW, old) == []  # outside every window
    busy = Contacts(shown=tuple((f"d{i}|other|internet", NOW - 10.0) for i in range(5)))
    assert [f.code for f in contact_findings(gold, "internet", NOW, busy)] == ["channel_cap", "overall_cap"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "invalid_json"),
        (b'{"customer_id": 99999999999999999999999999, "channel": "atm", "offers": ["a"]}', "wrong_type"),
        (b'"x"', "not_an_object"),
        (b'{"channel": "atm", "offers": ["a"]}', "missing_field"),
        (b'{"customer_id": 1, "channel": "atm", "offers": ["a"]}', "wrong_type"),
        (b'{"customer_id": "C", "channel": "atm"}', "missing_field"),
        (b'{"customer_id": "C", "channel": "atm", "offers": [null]}', "wrong_type"),
        (b'{"customer_id": "C", "channel": "atm", "offers": []}', "invalid_value"),
        (b'{"customer_id": "C", "channel": "atm", "offers": ["a"], "event_type": 3}', "unknown_type"),
    ],
)
def test_bad_requests_are_refused_with_a_code(body: bytes, code: str) -> None:
    with pytest.raises(EventError) as err:
        parse_request(body, S.channels, S.event_types)
    assert err.value.code == code


def test_read_only_windows_count_only_buckets_still_inside_at_now() -> None:
    hour = int(NOW // 300)
    buckets = {"1h": {f"{hour}|ch:atm|c": "1", f"{hour - 12}|ch:atm|c": "4", f"{hour}|ty:login|c": "1"},
               "30d": {f"{int(NOW // 86400)}|ch:atm|c": "5", f"{int(NOW // 86400)}|ch:atm|a": "1200"}}  # fmt: skip
    w = window_tallies_at(buckets, NOW)
    assert w["1h"]["all"].count == 1 and w["1h"]["ty:login"].count == 1
    assert w["30d"]["all"].amount == 12.0


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "customer_id": _JSON,
            "channel": st.sampled_from(["atm", "fax"]) | _JSON,
            "offers": st.lists(st.text(max_size=4), max_size=3) | _JSON,
            "event_type": _JSON,
        },
    )
)
def test_any_request_is_parsed_or_refused_with_a_code(data: dict[str, Any]) -> None:
    try:
        parse_request(orjson.dumps(data), S.channels, S.event_types)
    except EventError as err:
        assert err.code in {"missing_field", "wrong_type", "invalid_value", "unknown_channel", "unknown_type"}
