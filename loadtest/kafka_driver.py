"""Open-loop Kafka load: an aiokafka producer with a short linger sends each event at its
intended time, keyed by customer id; a consumer (fetch wait 5 ms) reads the answers and
matches them to events by ``event_id``.

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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from loadtest.openloop import Event, Recorder, run_schedule, serial

log = logging.getLogger("loadtest.kafka")


@dataclass
class KafkaClient:
    bootstrap: str
    answer_topics: list[str]
    linger_ms: float = 1.0
    fetch_max_wait_ms: int = 5
    waiting: dict[str, Callable[[float], None]] = field(default_factory=dict)
    unexpected: int = 0
    last_hop_ms: list[float] = field(default_factory=list)  # answer's broker timestamp -> received
    _producer: AIOKafkaProducer | None = None
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=self.linger_ms, acks=1, request_timeout_ms=30000
        )
        self._consumer = AIOKafkaConsumer(
            *self.answer_topics,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",  # topics are fresh per run: nothing old is read
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            fetch_min_bytes=1,
        )
        await self._producer.start()
        await self._consumer.start()
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
                        event_id = orjson.loads(record.value)["event_id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        self.unexpected += 1
                        continue
                    callback = waiting.pop(event_id, None)
                    if callback is None:
                        self.unexpected += 1
                    else:
                        callback(at)
                        self.last_hop_ms.append(wall_ms - record.timestamp)

    async def send(self, topic: str, event: Event, on_error: Callable[[BaseException], None]) -> None:
        assert self._producer is not None
        fut = await self._producer.send(topic, event.value, key=event.key)
        fut.add_done_callback(partial(_check_delivery, on_error))

    async def open_loop(
        self, topic: str, events: Sequence[Event], intended: list[float], drain_s: float
    ) -> tuple[Recorder, float]:
        """Send ``events[i]`` at ``intended[i]``; returns the recorder and the client's worst lag."""
        rec = Recorder(intended)
        for i, event in enumerate(events[: len(intended)]):
            self.waiting[event.event_id] = partial(rec.answer, i)

        def failed(i: int, event_id: str, exc: BaseException) -> None:
            if self.waiting.pop(event_id, None) is not None:
                rec.fail(i, f"produce:{type(exc).__name__}")

        async def fire(i: int) -> None:
            ev = events[i]
            await self.send(topic, ev, partial(failed, i, ev.event_id))

        lag = await run_schedule(intended, fire)
        await rec.wait(drain_s)
        for event in events[: len(intended)]:
            self.waiting.pop(event.event_id, None)
        return rec, lag

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


def _resolve(fut: asyncio.Future[float], at: float) -> None:
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
