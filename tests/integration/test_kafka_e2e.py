"""End to end through Kafka: 10,000 generated events for 1,000 customers.

Exactly one decision per valid event, on its channel's topic; every invalid event in
the DLQ with its reason; Redis counters equal to the generator's tally; and a replay
of the same records changes no counter and repeats the same decisions.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from engine.domain.state import WINDOWS
from engine.ops.infra import ensure_topics
from engine.ops.traffic import Population, TrafficGenerator
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.state import StateStore
from tests.helpers import consume_until, isolated, running_worker

pytestmark = pytest.mark.integration

N_EVENTS = 10_000
N_CUSTOMERS = 1_000


async def _produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        topic = settings.topic("interactions")
        for i in range(0, len(records), 500):
            futs = [await producer.send(topic, value, key=key) for key, value in records[i : i + 500]]
            for fut in futs:
                await fut
    finally:
        await producer.stop()


async def test_ten_thousand_events_exactly_once_with_matching_state(infra: Settings, logdir: Path) -> None:
    settings = isolated(infra)
    await ensure_topics(settings)
    gen = TrafficGenerator(Population(N_CUSTOMERS, seed=3), seed=4, invalid_rate=0.02, fraud_rate=0.02)
    now = time.time()
    records, valid_ids = [], []
    for i in range(N_EVENTS):
        key, value, valid = gen.next_record(now - 3600 + i * 0.3)
        records.append((key, value))
        if valid:
            valid_ids.append(orjson.loads(value)["event_id"])
    decision_topics = [settings.topic(f"decisions.{c}") for c in ("atm", "internet", "mobile")]
    dlq = settings.topic("interactions.dlq")

    with running_worker(settings, logdir) as worker:
        await _produce(settings, records)
        out = await consume_until(settings.kafka_bootstrap, [*decision_topics, dlq], N_EVENTS, timeout=240)
        by_topic = Counter(t for t, *_ in out)
        decisions = [(t, orjson.loads(v)) for t, _, v, _ in out if t != dlq]
        dead = [(v, dict(h)) for t, _, v, h in out if t == dlq]

        # Exactly one decision per valid event, on the topic of the event's channel.
        ids = Counter(d["event_id"] for _, d in decisions)
        assert len(decisions) == gen.tally.valid, (by_topic, worker.log()[-3000:])
        assert set(ids) == set(valid_ids) and max(ids.values()) == 1
        assert all(t == settings.topic(f"decisions.{d['channel']}") for t, d in decisions)
        # Every invalid event is in the DLQ, with its original bytes and a reason.
        assert len(dead) == gen.tally.invalid
        assert all(h["beacon-error-code"] for _, h in dead)
        originals = {v for _, v in records}
        assert all(v in originals for v, _ in dead)

        store = StateStore(connect(settings), settings)
        await _assert_state_matches(store, gen)

        # Replaying every record changes no counter and repeats the same decisions.
        first = {d["event_id"]: d for _, d in decisions}
        await _produce(settings, records)
        again = await consume_until(
            settings.kafka_bootstrap, decision_topics, 2 * gen.tally.valid, timeout=240
        )
        replayed = [orjson.loads(v) for _, _, v, _ in again][len(decisions) :]
        assert len(replayed) == gen.tally.valid
        assert all(first[d["event_id"]] == d for d in replayed)
        await _assert_state_matches(store, gen)


async def _assert_state_matches(store: StateStore, gen: TrafficGenerator) -> None:
    customers = {cid for cid, _ in gen.tally.counts}
    mismatches = []
    for cid in sorted(customers):
        view = await store.customer_view(cid)
        for window in ("24h", "7d", "30d"):
            got = view["windows"][window]
            for (c, dim), count in gen.tally.counts.items():
                if c != cid:
                    continue
                cell = got.get(dim, {"count": 0, "amount": 0.0})
                if cell["count"] != count or round(cell["amount"] * 100) != gen.tally.cents[(c, dim)]:
                    mismatches.append((cid, window, dim, cell, count, gen.tally.cents[(c, dim)]))
    assert not mismatches, mismatches[:10]
    assert {w.name for w in WINDOWS} >= {"24h", "7d", "30d"}


async def test_hostile_records_go_to_the_dlq_and_the_agent_keeps_going(infra: Settings, logdir: Path) -> None:
    settings = isolated(infra)
    await ensure_topics(settings)
    good = orjson.dumps(
        {"event_id": "after", "customer_id": "Z1", "channel": "atm", "type": "withdrawal", "ts": time.time()}
    )
    hostile = {
        b"": "invalid_json",
        b"\xff\xfe\x00garbage": "invalid_utf8",
        b'{"event_id": "x", "customer_id": "Z1", "channel": "atm", "type": "login", "pad": "'
        + b"y" * 20_000
        + b'"}': "too_large",
        b"[]": "not_an_object",
        b'{"event_id": "n", "customer_id": "Z1", "channel": "atm", "type": "login", "ts": 1e400}': (
            "invalid_json"
        ),
    }
    with running_worker(settings, logdir):
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=1_048_576)
        await producer.start()
        try:
            topic = settings.topic("interactions")
            for value in hostile:
                await producer.send_and_wait(topic, value, key=b"Z1")
            await producer.send_and_wait(topic, None, key=b"Z1")  # a tombstone: no value at all
            await producer.send_and_wait(topic, good, key=b"Z1")
        finally:
            await producer.stop()
        dlq, decisions = settings.topic("interactions.dlq"), settings.topic("decisions.atm")
        out = await consume_until(settings.kafka_bootstrap, [dlq, decisions], len(hostile) + 2, timeout=60)
    dead = [(v, dict(h)) for t, _, v, h in out if t == dlq]
    codes = {v: h["beacon-error-code"].decode() for v, h in dead}
    assert {v: codes.get(v) for v in hostile} == hostile
    assert codes.get(b"") == "invalid_json" and len(dead) == len(hostile) + 1
    assert all(h["beacon-source"] for _, h in dead)
    assert [orjson.loads(v)["event_id"] for t, _, v, _ in out if t == decisions] == ["after"]
    view = await StateStore(connect(settings), settings).customer_view("Z1")
    assert view["windows"]["24h"]["all"]["count"] == 1  # no rejected record touched state
