"""The trainer's stream loop: ``decisions.audit`` and ``feedback`` in, learned, offsets
committed after. The learning itself is ``engine.service.trainer.Trainer``.

Each consumed batch (all partitions of both topics) is learned as one: in event-time
order, decisions before labels of the same instant (``Trainer.on_batch``). Replaying the
same history learns the same way within a batch; what lands in which batch depends on
what the broker returns per fetch. Across batches and partitions, ``Pacer`` learns a
record only once every decision partition with records still waiting has reached its
event time, so a backlog or a replay is learned close to event-time order: labels
rarely come before their decisions (one that does is parked until its decision is
learned, as before). What is not reproducible: records of close event times on
different partitions may fall in different batches from one run to the next (each batch
is sorted, but not one batch with the next), and a partition that stalls longer than
the pacer's hold is let through out of order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from engine.domain.recordsig import RecordSigner, record_signer
from engine.ops.kafkaauth import kafka_auth
from engine.service.trainbatch import Record, event_ts
from engine.service.trainer import Trainer
from engine.settings import Settings


async def consume(trainer: Trainer, settings: Settings, stop: asyncio.Event) -> None:
    """Kafka loop: audit and feedback records in, offsets committed after they are learned."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    audit, feedback = settings.topic("decisions.audit"), settings.topic("feedback")
    consumer = AIOKafkaConsumer(
        audit,
        feedback,
        bootstrap_servers=settings.kafka_bootstrap,
        **kafka_auth(settings),
        group_id=f"{settings.app_id}-trainer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    signer = record_signer(settings)
    dlq = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **kafka_auth(settings), acks="all")
    await dlq.start()
    await consumer.start()
    pacer = Pacer(audit)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            fetched = {
                tp: [
                    ("audit" if tp.topic == audit else "label", orjson.loads(r.value), r)
                    for r in await _trusted(got, signer, dlq, trainer)
                ]
                for tp, got in batch.items()
            }
            waiting = await _waiting(consumer, audit)
            records = pacer.admit(consumer, fetched, waiting)
            newest = max((r.timestamp for got in fetched.values() for _, _, r in got), default=0)
            before = dict(trainer.learner.learned)
            await trainer.on_batch(records)
            await trainer.maybe_snapshot()
            if batch or records:
                await consumer.commit(await pacer.offsets(consumer))  # what is held is not
            held = sum(len(got) for tp, got in pacer.held.items() if tp.topic == feedback)
            await record_lag(consumer, trainer, feedback, newest / 1000.0, before, held)
    finally:
        await trainer.maybe_snapshot(force=True)
        await consumer.stop()
        await dlq.stop()


async def _trusted(records: list[Any], signer: RecordSigner, dlq: Any, trainer: Trainer) -> list[Any]:
    """The records signed by a trusted producer; the others are copied to ``<topic>.dlq``
    with the reason (delivered before the batch is learned and committed) and counted:
    a forged label is never learned."""
    out = []
    for r in records:
        reason = signer.refusal(r.topic, r.key, r.value, r.headers)
        if reason is None:
            out.append(r)
            continue
        if trainer.metrics is not None:
            trainer.metrics.records_refused.labels(r.topic, reason).inc()
        headers = [
            ("beacon-error-code", reason.encode()),
            ("beacon-error-message", b"record not signed by a trusted producer"),
            ("beacon-source", f"{r.topic}/{r.partition}/{r.offset}".encode()),
        ]
        await dlq.send_and_wait(f"{r.topic}.dlq", r.value, key=r.key, headers=headers)
    return out


async def _waiting(consumer: Any, topic: str) -> dict[Any, int]:
    """Records of ``topic`` on the broker this consumer has not fetched yet, per partition
    (a partition never fetched yet counts as waiting)."""
    out = {}
    for tp in consumer.assignment():
        if tp.topic == topic:
            highwater = consumer.highwater(tp)
            out[tp] = 1 if highwater is None else max(highwater - await consumer.position(tp), 0)
    return out


class Pacer:
    """Keeps the learning order close to event time across partitions and topics.

    A backlog or a replay fetches partitions unevenly: one partition's decisions run
    hours ahead of another's, labels come before their decisions (parked, retried), and
    the stream clock the fast ones move matures the slow ones' offers and payments into
    ignored and legitimate labels before their answers are read. So the pacer learns a
    record only once its event time is at most the watermark: the event time every
    decision partition with records still on the broker has reached. Records past it
    wait in memory, uncommitted, their partition paused (at most one fetch each), until
    the watermark reaches them, or ``hold_s`` at most (a partition that stalls cannot
    hold the others longer than that).
    """

    def __init__(self, audit: str, hold_s: float = 30.0) -> None:
        self.audit = audit
        self.hold_s = hold_s
        self.reached: dict[Any, float] = {}  # decision partition -> newest event time fetched
        self.held: dict[Any, list[tuple[str, Any, Any]]] = {}  # partition -> records waiting
        self.since: dict[Any, float] = {}  # partition -> when its records began to wait

    def admit(
        self, consumer: Any, fetched: dict[Any, list[tuple[str, Any, Any]]], waiting: dict[Any, int]
    ) -> list[Record]:
        """The records to learn now, of those held and ``fetched`` ({partition: [(kind,
        body, record)]}); ``waiting``: records on the broker per decision partition."""
        assigned = set(consumer.assignment())
        for tp in [tp for tp in self.held if tp not in assigned]:  # revoked: its new owner reads them
            del self.held[tp]
            self.since.pop(tp, None)
        for tp, got in fetched.items():
            self.held.setdefault(tp, []).extend(got)
            if tp.topic == self.audit and got:
                self.reached[tp] = max(self.reached.get(tp, 0.0), event_ts(got[-1][0], got[-1][1]))
        behind = [self.reached.get(tp, 0.0) for tp, n in waiting.items() if n > 0]
        mark = min(behind) if behind else float("inf")
        now = time.monotonic()
        out: list[Record] = []
        for tp, got in list(self.held.items()):
            overdue = now - self.since.get(tp, now) > self.hold_s
            n = (
                len(got)
                if overdue
                else next((i for i, r in enumerate(got) if event_ts(r[0], r[1]) > mark), len(got))
            )
            out.extend((kind, body) for kind, body, _ in got[:n])
            if n == len(got):
                del self.held[tp]
                if self.since.pop(tp, None) is not None:
                    consumer.resume(tp)
            else:
                self.held[tp] = got[n:]
                if tp not in self.since:
                    consumer.pause(tp)
                    self.since[tp] = now
        return out

    async def offsets(self, consumer: Any) -> dict[Any, int]:
        """What to commit: each partition's position, or its first record still held."""
        out = {}
        for tp in consumer.assignment():
            held = self.held.get(tp)
            out[tp] = held[0][2].offset if held else await consumer.position(tp)
        return out


async def record_lag(
    consumer: Any, trainer: Trainer, feedback: str, newest_s: float, before: dict[str, int], held: int = 0
) -> None:
    """The trainer's lag per partition: high-water mark less its position (records it
    has not fetched; it commits what it learned after each batch). Its lag in labels:
    that lag on the feedback topic plus the labels the pacer ``held``; in seconds: the
    age (Kafka timestamp) of the newest record it fetched while records wait (the oldest
    waiting is at most that old, give or take what the pacer holds), 0 when none waits."""
    labels = held
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
