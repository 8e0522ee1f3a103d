"""Open-loop Kafka load: an aiokafka producer with a short linger sends each event at its
intended time, keyed by customer id; a consumer (fetch wait 5 ms) reads the answers and
matches them to events by ``event_id``. With several generator processes, each sends
the customers whose answers come back on its own partitions and reads only those.

The same client measures the bare broker floor by consuming the topic it produces to:
produce-then-consume round trips one at a time, and at the same rates as the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter as clock
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from loadtest.openloop import Event, Job, Recorder, respond, run_job, serial
from loadtest.part import Part

log = logging.getLogger("loadtest.kafka")


Answered = Callable[[float, dict[str, Any], float], None]  # (arrival, decision, last hop s)


def owner(key: bytes, partitions: int, procs: int) -> int:
    """Which of ``procs`` generator processes handles a customer's events on the Kafka
    path: the one that reads the partition its answers come back on (Beacon keys every
    record by customer id with Kafka's default partitioner), so no process reads answers
    meant for another.

    >>> owner(b"C000042", 4, 2) in (0, 1), owner(b"C000042", 4, 1)
    (True, 0)
    """
    return int((murmur2(key) & 0x7FFFFFFF) % partitions) % procs


@dataclass
class KafkaClient:
    bootstrap: str
    answer_topics: list[str]
    linger_ms: float = 1.0
    fetch_max_wait_ms: int = 5
    assign: tuple[int, int, int] | None = None  # (procs, this process, partitions): read only its own
    waiting: dict[str, Answered] = field(default_factory=dict)
    unexpected: int = 0
    current: Recorder | None = None  # the job running now (the progress bar reads it)
    _producer: AIOKafkaProducer | None = None
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=self.linger_ms, acks=1, request_timeout_ms=30000
        )
        topics = self.answer_topics if self.assign is None else []
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",  # topics are fresh per run: nothing old is read
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            fetch_min_bytes=1,
        )
        await self._producer.start()
        await self._consumer.start()
        if self.assign is not None:
            procs, me, partitions = self.assign
            mine = [p for p in range(partitions) if p % procs == me]
            self._consumer.assign([TopicPartition(t, p) for t in self.answer_topics for p in mine])
        self._task = asyncio.get_running_loop().create_task(self._consume())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def __aenter__(self) -> KafkaClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _consume(self) -> None:
        assert self._consumer is not None
        getmany = self._consumer.getmany
        waiting = self.waiting
        while True:
            batches = await getmany(timeout_ms=100)
            at = clock()
            wall_ms = time.time() * 1000.0
            for records in batches.values():
                for record in records:
                    try:
                        body = orjson.loads(record.value)
                        event_id = body["event_id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        self.unexpected += 1
                        continue
                    callback = waiting.pop(event_id, None)
                    if callback is None:
                        self.unexpected += 1
                    else:
                        callback(at, body, max(wall_ms - record.timestamp, 0.0) / 1000.0)

    async def send(self, topic: str, event: Event, on_error: Callable[[BaseException], None]) -> None:
        assert self._producer is not None
        fut = await self._producer.send(topic, event.value, key=event.key)
        fut.add_done_callback(partial(_check_delivery, on_error))

    async def run(self, topic: str, job: Job, start: float, proc: int = 0) -> Part:
        """Send ``job.events[i]`` at ``start + job.offsets[i]``; returns what was measured."""
        rec = Recorder([start + o for o in job.offsets], start, proc, job.max_in_flight)
        self.current = rec
        responder = job.responder

        def answered(i: int, at: float, body: dict[str, Any], hop_s: float) -> None:
            if body.get("degraded"):  # decided without state: a failure, not a decision
                rec.fail(i, "degraded")
                return
            rec.answer(i, at)
            rec.part.last_hop.record(hop_s)
            if responder is not None:
                responder.seen(body, at)

        for i, event in enumerate(job.events):
            self.waiting[event.event_id] = partial(answered, i)

        def failed(i: int, event_id: str, exc: BaseException) -> None:
            if self.waiting.pop(event_id, None) is not None:
                rec.fail(i, f"produce:{type(exc).__name__}")

        answers: list[str] = []  # ids of the offer responses sent in slots of the schedule

        async def fire(i: int) -> None:
            ev = respond(responder, job.events[i])
            if ev is not job.events[i]:  # an offer response takes this slot
                rec.part.responses += 1
                answers.append(ev.event_id)
                self.waiting[ev.event_id] = self.waiting.pop(job.events[i].event_id)
            await self.send(topic, ev, partial(failed, i, ev.event_id))

        try:
            return await run_job(rec, fire, job.drain_s)
        finally:
            self.current = None
            for event_id in [e.event_id for e in job.events] + answers:
                self.waiting.pop(event_id, None)
            self.unexpected += rec.part.unexpected

    async def round_trip(self, topic: str, event: Event, timeout: float) -> float:
        """Send one event and wait for its answer; seconds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        self.waiting[event.event_id] = partial(_resolve, fut)
        t0 = clock()
        await self.send(topic, event, partial(_reject, fut))
        try:
            return await asyncio.wait_for(fut, timeout) - t0
        finally:
            self.waiting.pop(event.event_id, None)

    async def serial_floor(self, topic: str, events: Sequence[Event], timeout: float = 10.0) -> list[float]:
        it = iter(events)

        async def one() -> None:
            await self.round_trip(topic, next(it), timeout)

        return await serial(len(events), one)


def _resolve(fut: asyncio.Future[float], at: float, body: dict[str, Any], hop_s: float) -> None:
    if not fut.done():
        fut.set_result(at)


def _reject(fut: asyncio.Future[float], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _check_delivery(on_error: Callable[[BaseException], None], fut: asyncio.Future[Any]) -> None:
    if fut.cancelled():
        on_error(asyncio.CancelledError())
    elif fut.exception() is not None:
        exc = fut.exception()
        assert exc is not None
        log.warning("produce failed: %r", exc)
        on_error(exc)


async def probe(client: KafkaClient, topic: str, events: Sequence[Event], timeout: float) -> float:
    """Wait until the path answers at all (a fresh worker's consumer may not be assigned yet).
    Sends one event every few seconds until one is answered; returns seconds waited."""
    t0 = clock()
    for event in events:
        with contextlib.suppress(TimeoutError):
            await client.round_trip(topic, event, timeout=3.0)
            return clock() - t0
        if clock() - t0 > timeout:
            break
    raise RuntimeError(f"no answer on {client.answer_topics} within {timeout:.0f} s")


async def audit_stats(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[str, float]:
    """How the worker batched: read every audit record of ``topic`` (fresh per phase) and
    summarize the per-batch timings it carries (batch size, state, decide, record ms)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    sizes: list[float] = []
    stages: dict[str, list[float]] = {"state_ms": [], "decide_ms": [], "record_ms": []}
    deadline = clock() + timeout
    try:
        quiet = 0
        while clock() < deadline and quiet < 3:
            batches = await consumer.getmany(timeout_ms=300, max_records=5000)
            quiet = 0 if batches else quiet + 1
            for records in batches.values():
                for record in records:
                    timing = orjson.loads(record.value).get("timing_ms") or {}
                    if "batch" in timing:
                        sizes.append(float(timing["batch"]))
                    for name, values in stages.items():
                        if name in timing:
                            values.append(float(timing[name]))
    finally:
        await consumer.stop()
    if not sizes:
        return {}
    out = {
        "audit_records": float(len(sizes)),
        # each event reports its batch's size: weight by 1/size to average over batches
        "batches": round(sum(1.0 / s for s in sizes), 1),
        "events_per_batch_mean": round(len(sizes) / sum(1.0 / s for s in sizes), 2),
        "events_per_batch_max": max(sizes),
    }
    for name, values in stages.items():
        if values:
            out[f"{name}_p50"] = round(sorted(values)[len(values) // 2], 3)
    return out
