"""The commit step against a real Redis: contact-policy caps, decline cool-down, global
daily caps under concurrent workers, alert suppression, and byte-identical repeats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer
from engine.service.decisions import DecisionService
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.state import StateStore
from tests.helpers import isolated
from tests.unit.rulefixture import fixture_rules

pytestmark = pytest.mark.integration
T0 = time.time() - 3600
RICH = {"income_band": "high", "products": ["current", "savings"], "kyc_risk": "low"}


async def _service(settings: Settings) -> DecisionService:
    return DecisionService(
        settings, StateStore(connect(settings), settings), fixture_rules(), BuiltinScorer()
    )


@pytest.fixture
async def settings(infra: Settings) -> Settings:
    return isolated(infra, max_event_age_s=40 * 86400.0)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[DecisionService]:
    svc = await _service(settings)
    yield svc
    await svc.store._redis.aclose()


def login(i: int, customer: str = "c1", ts: float | None = None, **kw: object) -> Event:
    return Event(f"e{i}", customer, "internet", "login", ts if ts is not None else T0 + i, **kw)  # type: ignore[arg-type]


async def _shown(service: DecisionService, event: Event) -> tuple[list[str], dict[str, str]]:
    [outcome] = await service.decide_batch([event])
    body = orjson.loads(outcome.body)
    assert "dropped" not in body and outcome.decision is not None  # caps are explained in the audit
    audit = orjson.loads(outcome.decision.audit_bytes(outcome.timings_ms))
    return [a["id"] for a in body["actions"]], {d["id"]: d["why"] for d in audit["explain"]["dropped"]}


async def test_per_offer_cap_then_fallback_and_the_reason_is_explained(service: DecisionService) -> None:
    await service.store.put_profile("c1", RICH, 3600)
    shown = [(await _shown(service, login(i)))[0] for i in range(3)]
    assert shown[:2] == [["credit_card_gold"], ["credit_card_gold"]]
    ids, dropped = await _shown(service, login(3))
    assert ids == ["internet_default"]
    assert dropped["credit_card_gold"] == "offer cap reached: at most 2 per 7d"


async def test_overall_cap_counts_every_offer_shown(service: DecisionService) -> None:
    await service.store.put_profile("c2", {"income_band": "high", "products": []}, 3600)
    # Two offers per decision (gold and savings) against an overall cap of 3 per day.
    first, _ = await _shown(service, login(1, "c2"))
    second, dropped = await _shown(service, login(2, "c2"))
    assert first == ["credit_card_gold", "savings_boost"]
    assert len(second) == 1 and any(why.startswith("overall cap reached") for why in dropped.values())


async def test_decline_starts_a_cool_down(service: DecisionService) -> None:
    await service.store.put_profile("c3", RICH, 3600)
    assert (await _shown(service, login(1, "c3")))[0] == ["credit_card_gold"]
    declined = Event("r1", "c3", "mobile", "offer_response", T0 + 2,
                     attributes={"action_id": "credit_card_gold", "response": "declined"})  # fmt: skip
    await service.decide_batch([declined])
    ids, dropped = await _shown(service, login(3, "c3"))
    assert "credit_card_gold" not in ids
    assert "cool-down" in dropped["credit_card_gold"]


async def test_global_daily_cap_holds_across_concurrent_workers(settings: Settings) -> None:
    workers = [await _service(settings) for _ in range(2)]
    customers = [f"g{i}" for i in range(12)]
    await workers[0].store.put_profiles([(c, RICH) for c in customers], 3600)
    events = [login(i, c) for i, c in enumerate(customers)]
    halves = [events[0::2], events[1::2]]
    results = await asyncio.gather(*(w.decide_batch(h) for w, h in zip(workers, halves, strict=True)))
    shown = [a["id"] for outs in results for o in outs for a in orjson.loads(o.body)["actions"]]
    assert shown.count("credit_card_gold") == 2  # the fixture's daily_cap, never more
    for w in workers:
        await w.store._redis.aclose()


async def test_alert_is_suppressed_within_its_window_but_the_verdict_stands(service: DecisionService) -> None:
    pins = [Event(f"p{i}", "c4", "atm", "pin_failure", T0 + i, terminal_id="T1") for i in range(5)]
    bodies = [orjson.loads(o.body) for o in await service.decide_batch(pins[:3])]
    bodies += [orjson.loads(o.body) for o in await service.decide_batch(pins[3:])]
    alerted = [[a["rule_id"] for a in b["alerts"]] for b in bodies]
    assert alerted == [[], [], ["pin_bruteforce"], [], []]
    assert [b["risk"]["verdict"] for b in bodies[2:]] == ["block", "block", "block"]
    view = await service.store.customer_view("c4")
    assert [a["rule_id"] for a in view["open_alerts"]] == ["pin_bruteforce"]


async def test_a_repeat_gets_the_same_bytes_and_counts_nothing(service: DecisionService) -> None:
    await service.store.put_profile("c5", RICH, 3600)
    [first] = await service.decide_batch([login(1, "c5")])
    [again] = await service.decide_batch([login(1, "c5")])
    assert again.replayed and again.body == first.body
    assert first.decision is not None and [a.id for a in first.decision.actions] == ["credit_card_gold"]
    view = await service.store.customer_view("c5")
    assert [d["actions"] for d in view["recent_decisions"]] == [["credit_card_gold"]]
