"""The demo's traffic looks like a day at a bank (issue 19, item 6): a real worker decides
30,000 events of simulated traffic (engine/ops/simulation.py), as the demo sends it (its
20,000 customers at 8 events/s: an hour) and spread over a day and a half (3,000
customers: commutes, nights and trips), and raises alerts on well under 1% of the events,
nearly all of them on the planted fraud scenarios, with every kind of scenario caught.
Offer responses and conversions go in like any event and are decided, none refused."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from engine.ops.daylife import Town
from engine.ops.infra import ensure_topics
from engine.ops.simulation import SCENARIOS, Simulation
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.state import StateStore
from tests.helpers import consume_until, isolated, running_worker

pytestmark = pytest.mark.integration

N_EVENTS = 30_000
MONDAY = 1795392000.0  # 2026-11-23 00:00 UTC: fixed times, so every run decides the same events
RUNS = {"demo": (20_000, MONDAY + 10 * 3600, N_EVENTS / 8.0), "day": (3_000, MONDAY, 36 * 3600.0)}


def _generate(customers: int, start: float, span_s: float) -> tuple[Simulation, list[dict]]:
    sim = Simulation(Town(customers, seed=19), seed=6, id_prefix="sim")
    events = []
    for i in range(N_EVENTS):
        ts = start + i * span_s / N_EVENTS
        ev = sim.next_event(ts)
        events.append(ev)
        if i % 50 == 0 and ev["type"] == "login":  # the bank showed the Gold card: answers, conversions
            record = {"decision_id": f"d-{ev['event_id']}", "customer_id": ev["customer_id"],
                      "channel": ev["channel"], "event": {"type": "login"},
                      "actions": [{"id": "credit_card_gold", "kind": "offer"}]}  # fmt: skip
            sim.observe(record, ts)
    return sim, events


async def _produce(settings: Settings, events: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        topic = settings.topic("interactions")
        for i in range(0, len(events), 500):
            futs = [await producer.send(topic, orjson.dumps(e), key=e["customer_id"].encode())
                    for e in events[i : i + 500]]  # fmt: skip
            for fut in futs:
                await fut
    finally:
        await producer.stop()


@pytest.mark.parametrize("run", sorted(RUNS))
async def test_the_demo_traffic_raises_alerts_on_well_under_one_percent_of_events(
    infra: Settings, logdir: Path, run: str
) -> None:
    # The worker takes the events' times as a replayed history's (BEACON_EVENT_CLOCK).
    settings = isolated(infra).replace(event_clock="history")
    await ensure_topics(settings)
    sim, events = _generate(*RUNS[run])
    types = Counter(e["type"] for e in events)
    assert types["conversion"] > 0 and types["offer_response"] > 0, types
    client = connect(settings)
    try:
        await StateStore(client, settings).put_profiles(
            [(c.customer_id, c.profile) for c in sim.town.customers], settings.profile_ttl_s
        )
    finally:
        await client.aclose()
    topics = [settings.topic(f"decisions.{c}") for c in ("atm", "internet", "mobile", "branch")]
    dlq = settings.topic("interactions.dlq")
    with running_worker(settings, logdir) as worker:
        await _produce(settings, events)
        out = await consume_until(settings.kafka_bootstrap, [*topics, dlq], N_EVENTS, timeout=600)
        assert len(out) == N_EVENTS, (len(out), worker.log()[-3000:])
    assert not [v for t, _, v, _ in out if t == dlq][:3]
    decisions = [orjson.loads(v) for _, _, v, _ in out]
    alerts = [(d["customer_id"], a["rule_id"]) for d in decisions for a in d.get("alerts") or []]
    rate = len(alerts) / N_EVENTS
    planted = [a for a in alerts if a[0] in sim.planted_customers]
    by_scenario = Counter(sim.planted_customers[c] for c, _ in planted)
    print(f"\n{run}: {N_EVENTS} events, {len(alerts)} alerts ({rate:.3%}), {len(planted)} on planted scenarios "
          f"{dict(by_scenario)}; scenarios {dict((k, sim.sessions[k]) for k in SCENARIOS)}; "
          f"rules {dict(Counter(r for _, r in alerts))}; "
          f"unplanted {[a for a in alerts if a[0] not in sim.planted_customers]}")  # fmt: skip
    assert 0 < rate < 0.005  # well under 1% of events
    assert len(planted) >= 0.9 * len(alerts)  # nearly all on the planted scenarios
    assert set(by_scenario) == set(SCENARIOS)  # and every kind of scenario caught
