"""A second producer for records no channel waits on: audit records, alerts, DLQ copies.

Decisions go out on Faust's producer with a 1 ms linger, because a channel is waiting.
Everything else goes through this one with a longer linger (``bulk_linger_ms``), so
it travels in fewer, larger batches: less produce work for the worker, and fewer
stored batches on a broker whose fetch cost grows with their number.

Two ways in. :meth:`BulkProducer.send` returns the delivery future, for a caller that
retries itself (the outbox relay deletes an entry only once its records are delivered;
the Kafka path acknowledges a DLQ'd input only once its copy is).
:meth:`BulkProducer.publish` is for the records of degraded HTTP answers, which cannot go
to the Redis outbox (Redis was unavailable) and nobody else would retry: they go through
a :class:`Spool`, which delivers them in order and keeps them in memory, bounded, while
the broker is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import BrokerResponseError, KafkaError

from engine.domain.recordsig import record_signer
from engine.ops.kafkaauth import kafka_auth
from engine.service.metrics import Metrics
from engine.settings import Settings

log = logging.getLogger("beacon.bulk")
_WINDOW = 1000  # records handed to the producer before waiting for their delivery
_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0)
_DROP_LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


Send = Callable[[Record], Awaitable["asyncio.Future[Any]"]]


def worth_retrying(exc: BaseException) -> bool:
    """Whether a failed delivery may succeed later. Timeouts, lost connections and a
    closed producer mean the broker is unavailable: yes. A broker that answered it will
    never take this record (too large, not authorised, invalid), or an error that is
    not the broker's: no, since retrying would block every record behind it for good."""
    if isinstance(exc, BrokerResponseError):
        return bool(exc.retriable)
    return isinstance(exc, KafkaError | asyncio.CancelledError)


class Spool:
    """Records delivered in order, at least once, retried while the broker is unavailable.

    One task hands a window of records to the producer and waits for their delivery;
    what failed goes back to the head of the queue, in order, and is retried with
    backoff. The spool holds at most ``max_records`` (queued plus in flight). When it is
    full the oldest waiting record is dropped, counted and logged: the alternative is
    to grow without bound until the worker runs out of memory and loses everything it
    holds, or to make HTTP answers wait for the broker, which is the outage the spool
    exists to absorb. The oldest goes first because it has waited longest and the
    newest is the likelier still to matter to a risk officer; the audit record of each
    decision is also in Redis (the customer's recent decisions) for the dedupe window.
    """

    def __init__(self, send: Send, max_records: int, metrics: Metrics | None = None) -> None:
        self._send = send
        self._max = max(1, max_records)
        self._metrics = metrics
        self._queue: deque[Record] = deque()
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self._dropped_logged = 0
        self._drop_logged_at = 0.0

    @property
    def depth(self) -> int:
        """Records not yet delivered: queued plus in flight."""
        return len(self._queue) + self._in_flight

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="bulk-spool")

    async def stop(self, timeout: float) -> int:
        """Deliver what is spooled, for at most ``timeout`` seconds; returns what is left."""
        deadline = time.monotonic() + timeout
        while self.depth and self._task is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self.depth

    def put(self, record: Record) -> None:
        """Queue a record; never waits."""
        if self.depth >= self._max:
            if not self._queue:  # everything held is in flight: the new record is the oldest waiting
                self._drop(record, "the spool is full")
                return
            self._drop(self._queue.popleft(), "the spool is full")
        self._queue.append(record)
        self._gauge()
        self._wakeup.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            window = [self._queue.popleft() for _ in range(min(len(self._queue), _WINDOW))]
            self._in_flight = len(window)
            retry = await self._deliver(window)
            self._in_flight = 0
            if retry:
                self._queue.extendleft(reversed(retry))  # back at the head, in their order
                while self.depth > self._max:
                    self._drop(self._queue.popleft(), "the spool is full")
                self._gauge()
                await asyncio.sleep(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
                failures += 1
            else:
                failures = 0
                self._gauge()

    async def _deliver(self, window: list[Record]) -> list[Record]:
        """Hand a window to the producer and wait for it; returns the records to retry."""
        futures: list[asyncio.Future[Any]] = []
        refused: BaseException | None = None
        try:
            for record in window:
                futures.append(await self._send(record))
        except Exception as exc:  # noqa: BLE001 - the producer's buffer stayed full, or it is closed
            refused = exc
        results: list[Any] = list(await asyncio.gather(*futures, return_exceptions=True))
        results += [refused] * (len(window) - len(futures))
        retry: list[Record] = []
        for record, result in zip(window, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if worth_retrying(result):
                retry.append(record)
            else:
                self._drop(record, f"it cannot be delivered: {result!r}")
        if self._metrics is not None and retry:
            self._metrics.broker.failed("produce")
        elif self._metrics is not None:
            self._metrics.broker.ok()
        if retry and len(retry) == len(window):
            log.warning("broker unavailable (%r); %d records spooled", results[0], self.depth)
        return retry

    def _drop(self, record: Record, why: str) -> None:
        self.dropped += 1
        if self._metrics is not None:
            self._metrics.spool_dropped.inc()
        now = time.monotonic()
        if self._dropped_logged == 0 or now - self._drop_logged_at >= _DROP_LOG_EVERY_S:
            log.error(
                "RECORDS LOST: dropped a record for %s (%s); %d dropped since start, %d since last said",
                record.topic, why, self.dropped, self.dropped - self._dropped_logged,
            )  # fmt: skip
            self._dropped_logged, self._drop_logged_at = self.dropped, now

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.spooled.set(self.depth)


class BulkProducer:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._started = asyncio.Event()
        self.signer = record_signer(settings)
        self.spool = Spool(self._send_record, settings.spool_max_records, metrics)

    async def start(self) -> None:
        s = self._settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            **kafka_auth(s),
            linger_ms=s.bulk_linger_ms,
            max_batch_size=512 * 1024,
            client_id=f"{s.app_id}-bulk",
            # Audit records, alerts and labels: acknowledged by every in-sync replica, and
            # a retried send is not written twice.
            acks="all",
            enable_idempotence=s.bulk_idempotence,
        )
        await self._producer.start()
        self._started.set()
        self.spool.start()

    async def started(self) -> None:
        await self._started.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        left = await self.spool.stop(timeout)
        if left:
            log.error("RECORDS LOST: %d spooled records not delivered at shutdown", left)
        if self._producer is not None:
            await self._producer.stop()  # flushes what is still lingering
            self._producer = None

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> Any:
        """Queue a record; returns the delivery future (await it before acknowledging input)."""
        await self._started.wait()
        assert self._producer is not None
        headers = self.signer.headers(topic, key, value, headers)  # alerts, labels, audit records
        return await self._producer.send(topic, value, key=key, headers=headers)

    def publish(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Fire and forget, never waiting: delivered in order through the spool."""
        self.spool.put(Record(topic, key, value, headers))

    async def _send_record(self, record: Record) -> Any:
        return await self.send(record.topic, record.key, record.value, record.headers)
