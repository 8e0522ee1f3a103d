"""Issue 15, item 5, without I/O: a label event is acknowledged, not decided, whatever
the path (the decision function, the answer without state) and whatever its state says."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from engine.decide.degraded import decide_without_state
from engine.decide.pipeline import NOT_DECIDED, DecisionPolicy, decide
from engine.decide.rulebook import load
from engine.domain.events import Event
from engine.domain.labels import LABEL_TYPES, is_label_event, label_of
from engine.domain.scoring import Scores
from engine.domain.state import Snapshot, Tally
from engine.rules.pack import read_bundle
from engine.settings import Settings
from engine.store import codec
from tests.unit.rulefixture import fixture_rules

TS = 1795428000.0
RICH = {"income_band": "high", "products": ["current"], "kyc_risk": "low"}
LABEL_EVENTS = [
    Event("f1", "C1", "internet", "fraud_report", TS, attributes={"ref_event_id": "w1", "ref_channel": "atm"}),
    Event("c1", "C1", "atm", "chargeback", TS, amount=90.0, attributes={"ref_event_id": "w1", "ref_channel": "atm"}),
    Event("r1", "C1", "mobile", "offer_response", TS,
          attributes={"decision_id": "d1", "action_id": "credit_card_gold", "response": "accepted"}),
    Event("a1", "C1", "branch", "account_closure", TS),
]  # fmt: skip
LABEL_EVENTS, CLOSURE = LABEL_EVENTS[:3], LABEL_EVENTS[3]


class NoModel:
    """A scorer that must not be called."""

    versions: Mapping[str, str] = {"fraud": "x"}

    def score(
        self,
        features: Mapping[str, Any],
        offer_ids: tuple[str, ...],
        attributes: Mapping[str, Any] | None = None,
    ) -> Scores:
        raise AssertionError("a label event reached a model")


def test_the_label_types_are_the_types_that_carry_labels() -> None:
    # A conversion (issue 18) reports an outcome too, for offer reports: no model label.
    assert {"fraud_report", "chargeback", "offer_response", "conversion"} == LABEL_TYPES
    assert all(is_label_event(e) and label_of(e) is not None for e in LABEL_EVENTS)
    assert not is_label_event(Event("w", "C1", "atm", "withdrawal", TS, amount=10.0))
    # A closure carries the churn label but pays the balance out: it is decided and screened.
    assert not is_label_event(CLOSURE) and label_of(CLOSURE) == {"kind": "churn", "label": True,
                                                                  "customer_id": "C1", "ts": TS}  # fmt: skip


@pytest.mark.parametrize("event", LABEL_EVENTS, ids=lambda e: e.type)
def test_a_label_event_is_acknowledged_without_a_model_rule_or_offer(event: Event) -> None:
    # A state where every rule and offer would fire, were it decided.
    snap = Snapshot(windows={"1h": {"all": Tally(40, 900000)}}, pin_failures_1h=9, profile=RICH)
    d = decide(event, snap, fixture_rules(), NoModel(), DecisionPolicy())  # type: ignore[arg-type]
    view = d.channel_view()
    assert d.feedback and view["feedback"] is True
    assert [a["kind"] for a in view["actions"]] == ["fallback"] and view["alerts"] == []
    assert view["risk"] == {"score": 0.0, "verdict": "allow", "reasons": [NOT_DECIDED], "typologies": []}
    audit = d.audit_view()
    assert audit["feedback"] is True and audit["scores"] is None and audit["features"] is None
    assert audit["explain"]["dropped"] == [] and "rules" not in audit["explain"]


def test_an_interaction_answer_is_unchanged() -> None:
    """Interactions carry no ``feedback`` key: their bytes are what they were."""
    ev = Event("l1", "C1", "internet", "login", TS)
    d = decide(ev, Snapshot(windows={}, profile=RICH), fixture_rules(), _Scorer(), DecisionPolicy())  # type: ignore[arg-type]
    assert not d.feedback and "feedback" not in d.channel_view() and d.audit_view()["scores"]


def test_a_label_event_without_state_is_acknowledged_too() -> None:
    """Redis down: the HTTP path answers on the event alone; a label event stays feedback,
    under the risk pack's floor for its type (the shipped pack: allow)."""
    s = Settings()
    rules = load(read_bundle(s.rules_path()), frozenset(s.channels), "local").rules
    verdicts = {}
    for event in LABEL_EVENTS:
        d = decide_without_state(event, rules, NoModel(), DecisionPolicy())  # type: ignore[arg-type]
        assert d.degraded and d.feedback and orjson.loads(d.channel_bytes())["feedback"] is True
        assert [a.kind for a in d.actions] == ["fallback"] and d.alerts == ()
        verdicts[event.type] = d.risk.verdict
    assert verdicts == {"fraud_report": "allow", "chargeback": "allow", "offer_response": "allow"}


def test_the_commit_gets_the_answer_and_audit_whole_and_the_ingest_a_flag() -> None:
    rules = fixture_rules()
    response = LABEL_EVENTS[2]
    d = decide(response, Snapshot(windows={}), rules, NoModel(), DecisionPolicy())  # type: ignore[arg-type]
    payload = orjson.loads(codec.commit_payload(d, rules.offer_index, {"state_ms": 1.0}))
    assert set(payload) == {"fb", "cust", "dd", "body", "audit", "label"}
    assert payload["body"].encode() == d.channel_bytes({"state_ms": 1.0})
    assert orjson.loads(payload["label"]) == label_of(response)
    sent = orjson.loads(codec.ingest_payload(response))
    assert sent["fb"] == 1 and orjson.loads(sent["summary"])["response"] == "accepted"
    assert "fb" not in orjson.loads(codec.ingest_payload(Event("l1", "C1", "internet", "login", TS)))
    committed, body = codec.apply_commit(d, {"body": payload["body"]})
    assert committed is d and body == payload["body"].encode()


class _Scorer:
    """The built-in scores, for the interaction above."""

    versions: Mapping[str, str] = {"fraud": "builtin-1"}
    profile_fields: tuple[str, ...] = ()
    attribute_fields: tuple[str, ...] = ()

    def score(
        self,
        features: Mapping[str, Any],
        offer_ids: tuple[str, ...],
        attributes: Mapping[str, Any] | None = None,
    ) -> Scores:
        return Scores(fraud=0.01, churn=0.1, offer={o: 0.05 for o in offer_ids})
