"""HTTP status mapping of the API handlers (a fake store: this is pure logic)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from engine.domain.scoring import BuiltinScorer
from engine.http.api import Api
from engine.service.decisions import DecisionService
from engine.service.metrics import Metrics
from engine.settings import Settings
from tests.fakes import FakeState
from tests.unit.rulefixture import fixture_rules


def api_with(store: FakeState, **settings: Any) -> Api:
    s = Settings.build(env={}, **settings)
    service = DecisionService(s, store, fixture_rules(), BuiltinScorer())
    return Api(service, Metrics(), lambda: {"redis": True, "broker": False, "rules": True})


def body(event_id: str = "a1") -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "customer_id": "c", "channel": "atm", "type": "login", "ts": time.time()}
    )


async def test_decision_ok() -> None:
    api = api_with(FakeState())
    api.service.batcher.start()
    reply = await api.post_decision(body())
    assert reply.status == 200 and orjson.loads(reply.body)["event_id"] == "a1"
    await api.service.batcher.stop()


async def test_store_down_is_a_degraded_answer_and_the_event_is_handed_on() -> None:
    api = api_with(FakeState(fail=True))
    handed_on: list[tuple[str, bytes]] = []
    api.on_degraded = lambda decision, raw: handed_on.append((decision.decision_id, raw))
    api.service.batcher.start()
    raw = body()
    reply = await api.post_decision(raw)
    view = orjson.loads(reply.body)
    assert reply.status == 200 and view["degraded"] is True and view["event_id"] == "a1"
    assert [a["id"] for a in view["actions"]] == ["atm_default"]
    assert handed_on == [(view["decision_id"], raw)]
    samples = api.metrics.registry.get_sample_value
    assert samples("beacon_degraded_decisions_total", {"path": "http"}) == 1.0
    event = {"path": "http", "channel": "atm", "type": "login", "outcome": "unavailable"}
    assert samples("beacon_events_total", event) == 1.0
    await api.service.batcher.stop()


async def test_a_hung_store_is_answered_within_the_budget_and_nothing_is_dropped() -> None:
    """Redis hangs: each request gets its degraded answer when the budget runs out. The
    one already being decided is finished when Redis answers, and handed to on_orphan
    (its audit must still go out); the one still queued never reaches Redis (the Kafka
    path decides it from the republished event)."""
    stall = asyncio.Event()
    store = FakeState(stall=stall)
    api = api_with(store, decision_timeout_s=0.05)
    orphans: list[str] = []
    api.service.batcher.on_orphan = lambda event, outcome: orphans.append(event.event_id)
    api.service.batcher.start()
    first = asyncio.create_task(api.post_decision(body("in-flight")))
    await store.entered.wait()  # the decision loop has taken it: the store hangs
    second = await api.post_decision(body("queued"))
    assert orjson.loads(second.body)["degraded"] is True
    assert orjson.loads((await first).body)["degraded"] is True
    stall.set()
    normal = await api.post_decision(body("after"))  # the loop is free again
    assert normal.status == 200 and orjson.loads(normal.body)["degraded"] is False
    assert store.ingested == ["in-flight", "after"] and orphans == ["in-flight"]
    await api.service.batcher.stop()


async def test_full_queue_is_429_with_retry_after() -> None:
    api = api_with(FakeState(), batch_max=1)  # a queue of 8, and the decision loop is not running
    waiting = [asyncio.create_task(api.post_decision(body(f"e{i}"))) for i in range(8)]
    await asyncio.sleep(0)  # let the eight take their places in the queue
    last = await api.post_decision(body("e8"))
    assert last.status == 429 and last.headers["Retry-After"] == "1"
    assert orjson.loads(last.body)["error"]["code"] == "overloaded"
    for task in waiting:
        task.cancel()


def test_readiness_reports_each_check() -> None:
    reply = api_with(FakeState()).readyz()
    assert reply.status == 503 and orjson.loads(reply.body) == {
        "ready": False,
        "checks": {"redis": True, "broker": False, "rules": True},
    }


async def test_a_replayed_event_id_with_another_payload_is_409_conflicting_replay() -> None:
    store = FakeState()
    api = api_with(store)
    api.service.batcher.start()
    sent = body("r1")
    first = await api.post_decision(sent)
    assert first.status == 200
    event, raw = orjson.loads(first.body), orjson.loads(sent)
    replay = await api.post_decision(orjson.dumps(raw))  # the same payload: a replay
    assert replay.status == 200 and replay.body == first.body and replay.headers["Beacon-Replayed"] == "true"
    conflict = await api.post_decision(orjson.dumps({**raw, "type": "transfer"}))
    assert conflict.status == 409, conflict
    assert orjson.loads(conflict.body) == {
        "error": {
            "code": "conflicting_replay",
            "message": "event r1 of channel atm was decided on another payload; "
            "a repeat must carry the same payload",
            "field": "event_id",
        }
    }
    assert event["event_id"] == "r1"
    text = api.metrics.exposition().decode()
    assert 'beacon_dlq_total{path="http",reason="conflicting_replay"} 1.0' in text
    await api.service.batcher.stop()


async def test_one_event_twice_in_a_batch_with_two_payloads_decides_the_first() -> None:
    from engine.domain.events import Event

    store = FakeState()
    service = DecisionService(Settings.build(env={}), store, fixture_rules(), BuiltinScorer())
    now = time.time()
    a = Event("b1", "c", "atm", "withdrawal", now, amount=10.0)
    b = Event("b1", "c", "atm", "withdrawal", now, amount=99.0)
    outcomes = await service.decide_batch([a, b, a, b])
    assert [(o.decision is not None, o.replayed, o.conflict) for o in outcomes] == [
        (True, False, False),
        (False, False, True),
        (False, True, False),
        (False, False, True),
    ]
    assert outcomes[2].body == outcomes[0].body and outcomes[1].body == b""
    later = await service.decide_batch([b, a])
    assert [(o.replayed, o.conflict) for o in later] == [(False, True), (True, False)]
    assert later[1].body == outcomes[0].body


async def test_scores_are_opt_in_and_the_default_body_is_the_stored_one() -> None:
    store = FakeState()
    api = api_with(store)
    api.service.batcher.start()
    plain = await api.post_decision(body("s1"))
    assert plain.body == store.answers[("atm", "s1")] and b'"scores"' not in plain.body
    scored = orjson.loads((await api.post_decision(body("s2"), scores=True)).body)
    assert set(scored["scores"]) == {"fraud", "churn", "challengers", "offers"} and "explain" not in scored
    await api.service.batcher.stop()


async def test_a_degraded_answer_carries_the_scores_when_asked() -> None:
    api = api_with(FakeState(fail=True))
    api.service.batcher.start()
    view = orjson.loads((await api.post_decision(body(), scores=True)).body)
    assert view["degraded"] is True and view["scores"]["fraud"] > 0
    await api.service.batcher.stop()


async def test_outbound_scoring_maps_errors_to_codes_and_counts_calls() -> None:
    store = FakeState()
    api = api_with(store)
    store.profiles["c"] = {"income_band": "high"}
    ask = {"customer_id": "c", "channel": "atm", "offers": ["x"]}
    ok = await api.score_offers(orjson.dumps(ask))
    assert ok.status == 200 and orjson.loads(ok.body)["offers"] == [{"id": "x", "status": "unknown_offer"}]
    assert (await api.score_offers(orjson.dumps(ask), channel="mobile")).status == 403
    assert (await api.score_offers(orjson.dumps({**ask, "customer_id": "z"}))).status == 404
    store.fail = True
    down = await api.score_offers(orjson.dumps(ask))
    assert down.status == 503 and orjson.loads(down.body)["error"]["code"] == "state_unavailable"
    samples = api.metrics.registry.get_sample_value
    counts = {o: samples("beacon_offer_scoring_requests_total", {"outcome": o})
              for o in ("scored", "wrong_channel", "unknown_customer", "state_unavailable")}  # fmt: skip
    assert counts == {"scored": 1.0, "wrong_channel": 1.0, "unknown_customer": 1.0, "state_unavailable": 1.0}
