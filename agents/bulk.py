"""A second producer for records no channel waits on: audit records, alerts, DLQ copies.

Decisions go out on Faust's producer with a 1 ms linger, because a channel is waiting.
Everything else goes through this one with a longer linger (``bulk_linger_ms``), so
it travels in fewer, larger batches: less produce work for the worker, and fewer
stored batches on a broker whose fetch cost grows with their number.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from engine.settings import Settings


class BulkProducer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._started = asyncio.Event()

    async def start(self) -> None:
        s = self._settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            linger_ms=s.bulk_linger_ms,
            max_batch_size=512 * 1024,
            client_id=f"{s.app_id}-bulk",
        )
        await self._producer.start()
        self._started.set()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # flushes what is still lingering
            self._producer = None

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> Any:
        """Queue a record; returns the delivery future (await it before acknowledging input)."""
        await self._started.wait()
        assert self._producer is not None
        return await self._producer.send(topic, value, key=key, headers=headers)
