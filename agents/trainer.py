"""The trainer's stream loop: ``decisions.audit`` and ``feedback`` in, learned, offsets
committed after. The learning itself is ``engine.service.trainer.Trainer``.

Each consumed batch (all partitions of both topics) is learned as one: in event-time
order, decisions before labels of the same instant (``Trainer.on_batch``). Replaying the
same history learns the same way within a batch; what lands in which batch depends on
what the broker returns per fetch, so across batches the order is by partition arrival
(a label fetched a batch before its decision waits for it, as before)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from engine.service.trainbatch import Record
from engine.service.trainer import Trainer
from engine.settings import Settings


async def consume(trainer: Trainer, settings: Settings, stop: asyncio.Event) -> None:
    """Kafka loop: audit and feedback records in, offsets committed after they are learned."""
    from aiokafka import AIOKafkaConsumer

    audit, feedback = settings.topic("decisions.audit"), settings.topic("feedback")
    consumer = AIOKafkaConsumer(
        audit,
        feedback,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.app_id}-trainer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            records: list[Record] = []
            newest = 0
            for tp, got in batch.items():
                kind = "audit" if tp.topic == audit else "label"
                records.extend((kind, orjson.loads(record.value)) for record in got)
                newest = max([newest, *(record.timestamp for record in got)])
            before = dict(trainer.learner.learned)
            await trainer.on_batch(records)
            await trainer.maybe_snapshot()
            if batch:
                await consumer.commit()
            await record_lag(consumer, trainer, feedback, newest / 1000.0, before)
    finally:
        await trainer.maybe_snapshot(force=True)
        await consumer.stop()


async def record_lag(
    consumer: Any, trainer: Trainer, feedback: str, newest_s: float, before: dict[str, int]
) -> None:
    """The trainer's lag per partition: high-water mark less its position. It commits
    after each batch it has learned, so its position is its committed offset. Its lag in
    labels is that lag on the feedback topic; in seconds, the age of the newest record it
    learned while records wait (the oldest waiting is at most that old), 0 when none waits."""
    labels = 0
    metrics = trainer.metrics
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        lag = max(highwater - await consumer.position(tp), 0)
        labels += lag if tp.topic == feedback else 0
        if metrics is not None:
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
    if newest_s:
        trainer.lag = {"labels": labels, "seconds": max(time.time() - newest_s, 0.0) if labels else 0.0}
    if metrics is not None:
        metrics.behind(int(trainer.lag.get("labels", 0)), float(trainer.lag.get("seconds", 0.0)))
        for name, n in trainer.learner.learned.items():
            if n > before.get(name, 0):
                metrics.labels_learned.labels(name).inc(n - before.get(name, 0))
