"""Read one of Beacon's topics over a period, once, to its end: what reports and
backtests read (``decisions.audit``, ``feedback``).

Each partition is sought to the first record at or after ``since`` (the broker's record
timestamp, ``offsets_for_times``) and read to its end as it was when the read began, so a
read ends even while workers keep writing: every record before the end offset taken at
the start, and past it only records stamped before the start (the embedded broker
reports an end offset at the start of the last batch, short of the records in it). No
consumer group: nothing is committed and no live consumer is disturbed. On a signed
topic, a record without a valid ``beacon-sig`` by a trusted key is skipped and counted
when verify keys are configured, as the trainer refuses it (agents/trainer.py); so is a
record that is not a JSON object.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.domain.recordsig import RecordSigner, record_signer
from engine.errors import BrokerError
from engine.ops.kafkaauth import kafka_auth
from engine.settings import Settings

log = logging.getLogger("beacon.topicread")
_POLL_MS = 500
_IDLE_POLLS = 20  # polls without a record or progress before a read gives up (~10 s)


@dataclass
class ReadCounts:
    """What a read skipped, by reason (``record_unsigned``, ``record_forged``, ``not_json``...)."""

    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


async def read_topic(
    settings: Settings,
    name: str,
    since: float,
    until: float | None = None,
    counts: ReadCounts | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The JSON values of topic ``name`` (without the prefix) whose record timestamp is in
    [since, until), partition by partition in offset order, up to the end as the read began."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    counts = counts if counts is not None else ReadCounts()
    topic = settings.topic(name)
    signer = record_signer(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        **kafka_auth(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        await consumer.start()
    except Exception as exc:
        raise BrokerError(f"cannot reach the broker at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        await consumer.topics()  # fetches the metadata
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            return
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        began_ms = int(time.time() * 1000)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: max(int(since * 1000), 0) for tp in tps})
        todo: set[Any] = set()
        for tp in tps:
            found = starts.get(tp)
            if found is not None and (found.timestamp is None or found.timestamp >= 0):
                consumer.seek(tp, found.offset)
                todo.add(tp)
        idle = 0
        while todo and idle < _IDLE_POLLS:
            batch = await consumer.getmany(*todo, timeout_ms=_POLL_MS)
            if not any(batch.values()):
                # Nothing more to fetch: a partition at its end offset is done. (Some
                # brokers report end offsets short of the last batch: a partition ends
                # on an empty fetch, not on its end offset alone.)
                idle += 1
                todo -= {tp for tp in todo if await consumer.position(tp) >= ends[tp]}
                continue
            idle = 0
            for tp in sorted(batch, key=lambda t: t.partition):
                for r in batch[tp]:
                    if r.offset >= ends[tp] and r.timestamp >= began_ms:  # written after the read began
                        todo.discard(tp)
                        break
                    value = _value(r, signer, counts)
                    if value is None or not since * 1000 <= r.timestamp < (until or math.inf) * 1000:
                        continue
                    counts.read += 1
                    yield value
        if todo:
            log.warning("%s: stopped %d partition(s) short of their end", topic, len(todo))
    finally:
        await consumer.stop()
        if counts.skipped:
            log.warning(
                "%s: skipped %s", topic, ", ".join(f"{k} {v}" for k, v in sorted(counts.skipped.items()))
            )


def _value(record: Any, signer: RecordSigner, counts: ReadCounts) -> dict[str, Any] | None:
    reason = signer.refusal(record.topic, record.key, record.value or b"", record.headers)
    if reason is not None:
        counts.skip(reason)
        return None
    try:
        value = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        counts.skip("not_json")
        return None
    return value
