"""A worker killed with SIGKILL mid-stream and replaced: nothing lost, nothing doubled.

Delivery is at-least-once (records after the last committed offset are redelivered to
the new worker), so an event may be answered twice; but every event gets a decision,
a repeat carries the same decision id, and state counts every event exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from engine.ops.infra import ensure_topics
from engine.ops.launcher import start_worker
from engine.ops.traffic import Population, TrafficGenerator
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.state import StateStore
from tests.helpers import Record, consume_until, isolated, paced

pytestmark = pytest.mark.integration
N_EVENTS = 4_000


async def test_sigkill_mid_stream_loses_and_doubles_nothing(infra: Settings, logdir: Path) -> None:
    settings = isolated(infra, commit_interval_s=2.0)
    await ensure_topics(settings)
    gen = TrafficGenerator(Population(300, seed=5), seed=6)
    now = time.time()
    events = [gen.next_event(now - 1800 + i * 0.2) for i in range(N_EVENTS)]
    topic = settings.topic("interactions")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=2)
    await producer.start()
    first = start_worker(settings, logdir)
    second = None
    try:
        sending = asyncio.create_task(_send_paced(producer, topic, events, rate=800))
        await asyncio.sleep(2.0)  # mid-stream
        first.kill()
        assert not sending.done(), "the kill must land while events are still flowing"
        second = await asyncio.to_thread(start_worker, settings, logdir)
        await sending
        topics = [settings.topic(f"decisions.{c}") for c in ("atm", "internet", "mobile")]
        wanted = {e["event_id"] for e in events}

        def all_seen(records: list[Record]) -> bool:
            return wanted <= {orjson.loads(v)["event_id"] for _, _, v, _ in records}

        out = await consume_until(settings.kafka_bootstrap, topics, N_EVENTS, timeout=180, done=all_seen)
        decided: dict[str, set[str]] = {}
        for _, _, value, _ in out:
            d = orjson.loads(value)
            decided.setdefault(d["event_id"], set()).add(d["decision_id"])
        missing = wanted - set(decided)
        assert not missing, (len(missing), second.log()[-2000:])
        assert all(len(ids) == 1 for ids in decided.values())  # a repeat keeps its decision id
        store = StateStore(connect(settings), settings)
        for cid in {e["customer_id"] for e in events}:
            view = await store.customer_view(cid)
            for dim in ("all", "ch:atm", "ch:mobile", "ch:internet"):
                got = view["windows"]["24h"].get(dim, {"count": 0})["count"]
                assert got == gen.tally.counts[(cid, dim)], (cid, dim)
    finally:
        await producer.stop()
        first.stop()
        if second is not None:
            second.stop()


async def _send_paced(
    producer: AIOKafkaProducer, topic: str, events: list[dict[str, Any]], rate: float
) -> None:
    deliveries = []

    async def send(event: dict[str, Any]) -> None:
        key = str(event["customer_id"]).encode()
        deliveries.append(await producer.send(topic, orjson.dumps(event), key=key))

    await paced(events, rate, send)
    await asyncio.gather(*deliveries)


async def test_sigterm_mid_stream_finishes_in_flight_and_commits(infra: Settings, logdir: Path) -> None:
    """A graceful stop (SIGTERM, as compose and Kubernetes send): the worker finishes what
    it holds, commits, and exits 0; its successor starts after the last committed record,
    so no event is decided twice and none is left out."""
    settings = isolated(infra, commit_interval_s=2.0)
    await ensure_topics(settings)
    gen = TrafficGenerator(Population(200, seed=7), seed=8)
    now = time.time()
    events = [gen.next_event(now - 1800 + i * 0.2) for i in range(2_000)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=2)
    await producer.start()
    first = start_worker(settings, logdir)
    second = None
    try:
        sending = asyncio.create_task(_send_paced(producer, settings.topic("interactions"), events, rate=400))
        await asyncio.sleep(2.0)
        first.proc.terminate()
        code = await asyncio.to_thread(first.proc.wait, 30)
        assert code == 0, first.log()[-3000:]
        assert not sending.done(), "the stop must land while events are still flowing"
        second = await asyncio.to_thread(start_worker, settings, logdir)
        await sending
        topics = [settings.topic(f"decisions.{c}") for c in ("atm", "internet", "mobile")]
        wanted = [e["event_id"] for e in events]

        def all_seen(records: list[Record]) -> bool:
            return set(wanted) <= {orjson.loads(v)["event_id"] for _, _, v, _ in records}

        out = await consume_until(settings.kafka_bootstrap, topics, len(events), timeout=180, done=all_seen)
        decided = [orjson.loads(v)["event_id"] for _, _, v, _ in out]
        assert set(decided) == set(wanted), len(set(wanted) - set(decided))
        assert len(decided) == len(wanted), f"{len(decided) - len(wanted)} decisions were made twice"
    finally:
        await producer.stop()
        first.stop()
        if second is not None:
            second.stop()
