"""The trainer's model-quality report as people read it (``beacon models report``, the
replay's summary): what the trainer last wrote, once the trainer has caught up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from engine.errors import BrokerError
from engine.ops.kafkaauth import kafka_auth
from engine.settings import Settings
from engine.store.feedback import FeedbackStore
from engine.store.outbox import Outbox

_STILL_POLLS = 3  # label counts unchanged this many polls in a row, with nothing behind


async def quality_report(settings: Settings, client: Any, settle_s: float = 0.0) -> str | None:
    """The trainer's quality report as text, None before it has written one.

    With ``settle_s``, waits (at most that long) until the trainer has caught up: nothing
    left in the workers' outbox, the trainer's consumer group committed to the end of
    ``decisions.audit`` and ``feedback``, and its label counts still. Label counts alone
    stand still while the trainer is paused or its pacer holds a partition, so a report
    taken then would describe part of the labels as if it were all of them; short of
    caught up, the report says how far behind it was."""
    from models.report import render_full

    store = FeedbackStore(client, settings.key_prefix, settings.feedback_ttl_s)
    behind = await _wait_settled(settings, client, store, settle_s) if settle_s > 0 else ""
    summaries = await store.load_quality()
    if not summaries:
        return None
    head = f"the trainer had not caught up after {settle_s:.0f}s: {behind}\n\n" if behind else ""
    return head + render_full(summaries)


async def _wait_settled(settings: Settings, client: Any, store: FeedbackStore, settle_s: float) -> str:
    """Wait until the trainer has caught up; "" once it has, else what was still behind."""
    outbox = Outbox(client, settings)
    deadline, last, still, behind = time.monotonic() + settle_s, None, 0, "no report from the trainer"
    async with _trainer_group(settings) as uncommitted:
        while time.monotonic() < deadline and still < _STILL_POLLS:
            await asyncio.sleep(max(min(settings.snapshot_interval_s, 2.0), 0.5))
            queued, unread = await outbox.backlog(), await uncommitted()
            counts = {k: v.get("labels") for k, v in (await store.load_quality()).items()}
            caught_up = queued == 0 and unread == 0 and bool(counts)
            still = still + 1 if caught_up and counts == last else 0
            last = counts
            behind = f"{unread:,} records of decisions.audit and feedback unlearned, {queued:,} in the outbox"
    return "" if still >= _STILL_POLLS else behind


@contextlib.asynccontextmanager
async def _trainer_group(settings: Settings) -> AsyncIterator[Any]:
    """A function giving the records on the trainer's two topics that its consumer group
    has not committed yet (the trainer commits what it has learned, never what it holds)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    topics = (settings.topic("decisions.audit"), settings.topic("feedback"))
    # Never subscribes, so it never joins the group: it only reads the group's offsets.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        **kafka_auth(settings),
        group_id=f"{settings.app_id}-trainer",
        enable_auto_commit=False,
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        raise BrokerError(f"cannot read the trainer's offsets ({settings.kafka_bootstrap}): {exc}") from exc

    async def uncommitted() -> int:
        await consumer.topics()  # fresh metadata: partitions of topics created since
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not parts:
            return 0
        ends, starts = await consumer.end_offsets(parts), await consumer.beginning_offsets(parts)
        total = 0
        for tp in parts:
            committed = await consumer.committed(tp)
            total += max(ends[tp] - (starts[tp] if committed is None else committed), 0)
        return total

    try:
        yield uncommitted
    finally:
        await consumer.stop()
