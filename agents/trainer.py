"""The trainer's stream loop: ``decisions.audit`` and ``feedback`` in, learned, offsets
committed after. The learning itself is ``engine.service.trainer.Trainer``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from engine.service.trainer import Trainer
from engine.settings import Settings
from models.trainer_metrics import TrainerMetrics


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
            for tp, records in batch.items():
                for record in records:
                    body = orjson.loads(record.value)
                    if tp.topic == audit:
                        await trainer.on_audit(body)
                    else:
                        await trainer.on_label(body)
            await trainer.sweep()
            await trainer.maybe_snapshot()
            if batch:
                await consumer.commit()
            if trainer.metrics is not None:
                await record_lag(consumer, trainer.metrics)
    finally:
        await trainer.maybe_snapshot(force=True)
        await consumer.stop()


async def record_lag(consumer: Any, metrics: TrainerMetrics) -> None:
    """The trainer's lag per partition: high-water mark less its position. It commits
    after each batch it has learned, so its position is its committed offset."""
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        position = await consumer.position(tp)
        metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(highwater - position, 0))
