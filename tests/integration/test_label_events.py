"""Issue 15, item 5: label events (fraud reports, chargebacks, offer responses) are
feedback, not interactions, against a real Redis.

They go in through the same service (validated, deduplicated by event id, kept in the
customer's recent interactions, their feedback record written to the outbox) and the
channel gets an acknowledgement; but they leave every piece of state a rule or model
reads alone (windows, last seen, devices, PIN failures), are not scored, get no offer,
raise no alert, and the trainer learns no "came back" churn negative from them.
Item 4's unmatched offer responses are counted on the trainer by reason."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest

from engine.domain.decision import decision_id_of
from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer, Scores
from engine.service.decisions import DecisionService, Outcome
from engine.service.trainer import Trainer
from engine.settings import Settings
from engine.store.feedback import FeedbackStore
from engine.store.redisio import connect
from engine.store.state import StateStore
from models.learner import Learner
from models.registry import REGISTRY, build
from tests.helpers import isolated
from tests.unit.rulefixture import fixture_rules

pytestmark = pytest.mark.integration
T0 = float(int(time.time()) // 3600 * 3600 - 3 * 3600)  # on an hour: windows in whole buckets
RICH = {"income_band": "high", "products": ["current", "savings"], "kyc_risk": "low"}
DAY = 86400.0


class CountingScorer(BuiltinScorer):
    """The built-in scorer, counting its calls: a label event must not reach a model."""

    calls = 0

    def score(
        self,
        features: Mapping[str, Any],
        offer_ids: tuple[str, ...],
        attributes: Mapping[str, Any] | None = None,
    ) -> Scores:
        CountingScorer.calls += 1
        return super().score(features, offer_ids, attributes)


@pytest.fixture
async def settings(infra: Settings) -> Settings:
    return isolated(infra, max_event_age_s=400 * DAY)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[DecisionService]:
    svc = DecisionService(
        settings, StateStore(connect(settings), settings), fixture_rules(), CountingScorer()
    )
    yield svc
    await svc.store._redis.aclose()  # type: ignore[attr-defined]


def withdrawal(i: int, customer: str, ts: float) -> Event:
    return Event(f"w{i}", customer, "atm", "withdrawal", ts, amount=100.0 * i, terminal_id="T1",
                 geo=None)  # fmt: skip


def fraud_report(customer: str, ts: float, ref: str = "w1") -> Event:
    return Event("fr1", customer, "internet", "fraud_report", ts, device_id="laptop-x",
                 attributes={"ref_event_id": ref, "ref_channel": "atm"})  # fmt: skip


def offer_response(
    customer: str, ts: float, decision_id: str, eid: str = "or1", response: str = "declined"
) -> Event:
    return Event(eid, customer, "mobile", "offer_response", ts, device_id="phone-y",
                 attributes={"decision_id": decision_id, "action_id": "credit_card_gold",
                             "response": response})  # fmt: skip


async def one(service: DecisionService, event: Event) -> Outcome:
    [outcome] = await service.decide_batch([event])
    return outcome


def state_read_by_rules_and_models(view: dict[str, Any]) -> dict[str, Any]:
    return {k: view[k] for k in ("windows", "last_seen", "devices", "recent_pin_failures", "open_alerts")}


async def test_label_events_are_answered_but_leave_activity_state_alone(service: DecisionService) -> None:
    await service.store.put_profile("L1", RICH, 3600)
    login = await one(service, Event("l0", "L1", "internet", "login", T0, device_id="laptop"))
    assert login.decision is not None and login.decision.actions[0].id == "credit_card_gold"
    for i in (1, 2, 3):
        await one(service, withdrawal(i, "L1", T0 + 60 * i))
    before = await service.store.customer_view("L1")
    calls = CountingScorer.calls
    report = await one(service, fraud_report("L1", T0 + 300))
    response = await one(service, offer_response("L1", T0 + 360, login.decision.decision_id))
    after = await service.store.customer_view("L1")
    assert CountingScorer.calls == calls  # no model was asked
    assert state_read_by_rules_and_models(after) == state_read_by_rules_and_models(before)
    assert after["windows"]["1h"]["all"]["count"] == 4 and after["windows"]["24h"]["all"]["count"] == 4
    # ... but the customer's history has them, newest first, with what they said.
    recent = after["recent_interactions"]
    assert [e["type"] for e in recent[:2]] == ["offer_response", "fraud_report"]
    assert recent[1]["ref_event_id"] == "w1" and recent[0]["response"] == "declined"
    for outcome, kind in ((report, "fraud"), (response, "offer")):
        body = orjson.loads(outcome.body)
        assert body["feedback"] is True and body["alerts"] == []
        assert [a["kind"] for a in body["actions"]] == ["fallback"]
        assert body["risk"]["verdict"] == "allow" and body["risk"]["reasons"] == ["label event: not decided"]
        assert outcome.label is not None and outcome.label["kind"] == kind  # the feedback record
        assert outcome.decision is not None
        audit = orjson.loads(outcome.decision.audit_bytes(outcome.timings_ms))
        assert audit["feedback"] is True and audit["scores"] is None and audit["features"] is None
    # Recent decisions are the customer's decisions: an acknowledgement is not one.
    assert [d["event_id"] for d in after["recent_decisions"]] == ["w3", "w2", "w1", "l0"]


async def test_the_next_interaction_sees_no_trace_of_label_events(service: DecisionService) -> None:
    await service.store.put_profile("L2", RICH, 3600)
    for i in (1, 2, 3):
        await one(service, withdrawal(i, "L2", T0 + 60 * i))
    await one(service, fraud_report("L2", T0 + 300))
    await one(service, offer_response("L2", T0 + 400, "d-unknown"))
    nxt = await one(service, Event("l1", "L2", "internet", "login", T0 + 600, device_id="laptop"))
    assert nxt.decision is not None
    f = nxt.decision.features
    assert (f["n_1h"], f["n_10m"], f["n_1h_channel"], f["n_1h_type"]) == (4, 4, 1, 1)
    assert f["seconds_since_last"] == 420.0 and f["new_device"] == 0 and f["known_devices"] == 0
    assert f["secs_since_offer_response"] == 200.0  # when the customer last answered an offer
    # The decline (a label) still starts the offer's cool-down: contact policy, not activity
    # (tests/integration/test_commit.py test_decline_starts_a_cool_down shows it applied).
    client = service.store._redis  # type: ignore[attr-defined]
    assert await client.hkeys(service.store.key("L2") + ":declined") == [b"credit_card_gold"]


async def test_a_label_event_is_deduplicated_and_offers_counted_nowhere(service: DecisionService) -> None:
    await service.store.put_profile("L3", RICH, 3600)
    first = await one(service, fraud_report("L3", T0))
    again = await one(service, fraud_report("L3", T0))
    assert again.replayed and again.body == first.body and again.decision is None
    other = await one(service, fraud_report("L3", T0, ref="w9"))  # same id, another payload
    assert other.conflict
    view = await service.store.customer_view("L3")
    assert view["windows"]["30d"] == {} and view["last_seen"] == {}
    client = service.store._redis  # type: ignore[attr-defined]
    assert await client.zcard(service.store.key("L3") + ":contact") == 0  # no impression counted
    assert [e["event_id"] for e in view["recent_interactions"]] == ["fr1"]
    # A closure carries a label but pays the balance out: decided and screened, not acknowledged.
    closure = await one(service, Event("ac1", "L3", "branch", "account_closure", T0 + 5))
    assert "feedback" not in orjson.loads(closure.body) and closure.label is not None
    assert closure.decision is not None and closure.decision.features is not None


async def test_label_events_in_a_batch_with_interactions(service: DecisionService) -> None:
    """A batch mixes them (the Kafka path): each gets its own kind of answer, in order."""
    await service.store.put_profile("L4", RICH, 3600)
    batch = [withdrawal(1, "L4", T0), fraud_report("L4", T0 + 1), withdrawal(2, "L4", T0 + 2),
             offer_response("L4", T0 + 3, "d-x")]  # fmt: skip
    outcomes = await service.decide_batch(batch)
    bodies = [orjson.loads(o.body) for o in outcomes]
    assert ["feedback" in b for b in bodies] == [False, True, False, True]
    assert outcomes[2].decision is not None and outcomes[2].decision.features["n_10m"] == 2


@pytest.fixture
async def trainer(settings: Settings) -> AsyncIterator[Trainer]:
    s = settings.replace(offer_response_window_s=DAY, fraud_maturity_s=30 * DAY, churn_horizon_s=60 * DAY)
    client = connect(s)
    learner = Learner({n: build(n) for n in REGISTRY}, {n: REGISTRY[n].features for n in REGISTRY})
    yield Trainer(s, learner, FeedbackStore(client, s.key_prefix, s.feedback_ttl_s))
    await client.aclose()


def churn_labels(t: Trainer) -> int:
    return int(t.learner.quality["churn"].summary()["labels"])


async def test_offer_responses_teach_the_churn_model_nothing(
    service: DecisionService, trainer: Trainer
) -> None:
    """Item 5: each offer response's audit record made the trainer learn a "came back"
    churn negative (41k of them from offer responses alone in one replay)."""
    start = T0 - 200 * DAY
    login = await one(service, Event("l0", "L5", "internet", "login", start, device_id="laptop"))
    assert login.decision is not None
    await trainer.on_audit(orjson.loads(login.decision.audit_bytes()))
    for i in range(100):  # one every 6 hours for 25 days: a "came back" label a day before
        out = await one(service, offer_response("L5", start + (i + 1) * DAY / 4, "d-x", eid=f"or{i}"))
        assert out.decision is not None
        await trainer.on_audit(orjson.loads(out.decision.audit_bytes(out.timings_ms)))
    assert churn_labels(trainer) == 0
    # An interaction after a day away still counts as the customer coming back.
    back = await one(service, Event("l1", "L5", "internet", "login", start + 26 * DAY, device_id="laptop"))
    assert back.decision is not None
    await trainer.on_audit(orjson.loads(back.decision.audit_bytes()))
    assert churn_labels(trainer) == 1


async def test_unmatched_offer_responses_are_counted_by_reason(trainer: Trainer) -> None:
    """Item 4: an offer_response for an offer not shown was dropped with a log line only."""
    from models.trainer_metrics import TrainerMetrics

    trainer.metrics = TrainerMetrics(process=False)
    did = decision_id_of("c1", "mobile", "e1")
    await trainer.on_audit({
        "decision_id": did, "customer_id": "c1", "actions": [{"id": "gold", "kind": "offer"}],
        "features": {"type": "login", "channel": "mobile"},
        "event": {"event_id": "e1", "ts": T0, "type": "login", "channel": "mobile", "attributes": {}},
    })  # fmt: skip
    label = {"kind": "offer", "decision_id": did, "action_id": "mortgage", "label": True,
             "response": "accepted", "customer_id": "c1", "ts": T0 + 60}  # fmt: skip
    await trainer.on_label(label)
    assert trainer.unmatched_by == {("offer", "not_shown"): 1} and trainer.unmatched == 1
    # Another customer's answer naming this decision is not learned against its inputs.
    await trainer.on_label({**label, "action_id": "gold", "customer_id": "c2"})
    assert trainer.unmatched_by == {("offer", "not_shown"): 1, ("offer", "other_customer"): 1}
    assert trainer.learner.quality["offers"].summary()["labels"] == 0
    trainer.unmatched_by.clear()
    await trainer.on_label(label | {"ts": T0 + 61})  # not a redelivery: counted again
    assert trainer.unmatched_by == {("offer", "not_shown"): 1}
    # A decision never seen waits (parked), then is given up as unknown.
    lost = {**label, "decision_id": "d-never", "ts": T0 + 120}
    await trainer.on_label(lost)
    assert trainer.unmatched_by == {("offer", "not_shown"): 1}
    await trainer.on_label({**lost, "_parked": T0 - 3600.0, "_parked_wall": 0.0}, retry=True)
    assert trainer.unmatched_by == {("offer", "not_shown"): 1, ("offer", "unknown_decision"): 1}
    dropped = {r: trainer.metrics.registry.get_sample_value(
        "beacon_trainer_labels_dropped_total", {"kind": "offer", "reason": r}
    ) for r in ("not_shown", "other_customer", "unknown_decision")}  # fmt: skip
    assert dropped == {"not_shown": 2.0, "other_customer": 1.0, "unknown_decision": 1.0}
