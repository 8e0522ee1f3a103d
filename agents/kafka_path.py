"""The Kafka path: decode a record, hand it to the engine, emit what it decided.

A record is acknowledged only once its decision is delivered to the channel's topic (or
its DLQ copy to the DLQ), so a crash anywhere means redelivery, and redelivery is
harmless because state updates are idempotent. Its audit record, alerts and label were
written to the Redis outbox by the commit, in the same step as the state, and the relay
(agents/relay.py) delivers them: a redelivered record is a replay and publishes nothing.

A record with the ``beacon-answered`` header is an event the HTTP path already answered
without state (engine/decide/degraded.py): it is ingested, decided without sales offers,
audited and its alerts raised like any other, but no decision goes to the channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError

from agents.bulk import BulkProducer
from agents.deadletter import send_dead_letter
from engine.decide.degraded import Answered, answered, answered_by
from engine.domain.events import Event
from engine.errors import EventError, StoreError
from engine.service.decisions import Outcome, conflicting_replay
from engine.service.logs import ids, log_decision
from engine.service.runtime import Runtime

log = logging.getLogger("beacon.kafka")
_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(slots=True)
class _Pending:
    """A record handed to the engine: the agent's event, what it parsed to, the decision's future."""

    event: Any
    ev: Event
    raw: bytes
    fut: asyncio.Future[Outcome]
    dead: bool = False  # sent to the DLQ instead: not acknowledged here


class KafkaPath:
    """Records go to the engine one by one, in order, as the stream hands them over; the
    rest is done per batch: the records that arrived together (one fetch's worth, up to
    ``batch_max``) are awaited, published and acknowledged by one task, so a busy stream
    costs one task, one wait for delivery and one acknowledgement pass per batch rather
    than per record."""

    def __init__(self, app: Any, rt: Runtime, bulk: BulkProducer) -> None:
        self.app = app
        self.rt = rt
        self.bulk = bulk
        s = rt.settings
        self._batch_max = s.batch_max
        self._in_flight = asyncio.Semaphore(s.batch_max * 4)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[_Pending] = []
        self._flush_scheduled = False
        self._dlq = s.topic("interactions.dlq")
        self._decisions = {c: s.topic(f"decisions.{c}") for c in s.channels}

    async def handle(self, event: Any) -> None:
        """Called by the agent for each record; returns once the record is queued."""
        message = event.message
        raw: bytes = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
        try:
            ev = self.rt.service.events.parse(raw)
        except EventError as err:
            await self._dead_letter(event, raw, err)
            return
        except Exception as exc:  # a parser bug must cost one record, not the agent
            log.exception("could not parse a record; sending it to the DLQ")
            await self._dead_letter(event, raw, EventError("internal_error", f"{type(exc).__name__}: {exc}"))
            return
        decision_id = answered_by(_headers(message))
        if decision_id is not None:
            ev = answered(ev, decision_id)
        await self._in_flight.acquire()
        # Queued here, in the stream's order: a customer's events reach Redis as they came.
        fut = await self.rt.service.batcher.submit(ev)
        self._pending.append(_Pending(event, ev, raw, fut))
        if len(self._pending) >= self._batch_max:
            self._flush()
        elif not self._flush_scheduled:
            # Runs once the agent has taken every record already fetched.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def drain(self) -> None:
        """Wait for in-flight records (graceful shutdown)."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            self._track(self._finish(batch))

    def _track(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dead_letter(self, event: Any, raw: bytes, err: EventError) -> None:
        self.rt.metrics.rejected("kafka", err.code)
        delivery = await send_dead_letter(self.bulk, self._dlq, event.message, raw, err)
        self._track(self._ack_after([delivery], event))

    async def _finish(self, batch: list[_Pending]) -> None:
        try:
            decided: list[tuple[_Pending, Outcome]] = []
            for item in batch:
                outcome = await self._decided(item)
                if outcome is not None:
                    decided.append((item, outcome))
            await self._deliver(decided)
            self._acknowledge(decided)
        finally:
            for _ in batch:
                self._in_flight.release()

    async def _decided(self, item: _Pending) -> Outcome | None:
        """The record's outcome, or None once a record the engine could not decide (or a
        conflicting replay: its event id was decided on another payload) is in the DLQ."""
        try:
            outcome = await self._outcome(item.ev, item.fut)
        except Exception as exc:  # noqa: BLE001 - a bug deciding one record must cost that record only
            await self._bury(item, exc)
            return None
        if outcome.conflict:  # nothing was changed or decided: refused like a bad record
            item.dead = True
            await self._dead_letter(item.event, item.raw, conflicting_replay(item.ev))
            return None
        return outcome

    async def _bury(self, item: _Pending, exc: Exception) -> None:
        """A record the engine failed on goes to the DLQ with the reason (acknowledged once there)."""
        ev = item.ev
        log.exception("decision for event %s failed; sending it to the DLQ", ev.event_id, extra=ids(ev))
        item.dead = True
        err = EventError("internal_error", f"{type(exc).__name__}: {exc}")
        await self._dead_letter(item.event, item.raw, err)

    def _acknowledge(self, decided: list[tuple[_Pending, Outcome]]) -> None:
        m = self.rt.metrics
        for item, outcome in decided:
            if item.dead:
                continue
            item.event.ack()
            ev = outcome.event
            m.events.labels("kafka", ev.channel, ev.type, "replayed" if outcome.replayed else "decided").inc()
            if outcome.decision is not None:
                if not isinstance(ev, Answered):  # an answered one was counted where it was answered
                    m.observe_decision("kafka", outcome.decision, outcome.label)
                log_decision("kafka", outcome.decision)

    async def _deliver(self, decided: list[tuple[_Pending, Outcome]]) -> None:
        """Publish what the batch produced, retrying while the broker is unavailable: the
        events are not at fault, so they get no DLQ copy, and their offsets wait. Only the
        outcomes with a record not delivered are published again."""
        attempt, todo = 0, decided
        while todo:
            try:
                todo = await self._publish_batch(todo)
                reason = "a delivery failed"
            except KafkaError as exc:  # the producer refused to queue at all
                reason = str(exc)
            if not todo:
                break
            self.rt.metrics.broker.failed("produce")
            if attempt == 0:
                first = todo[0][1].event
                log.warning("broker unavailable (%s); retrying %d event(s) from %s",
                            reason, len(todo), first.event_id, extra=ids(first))  # fmt: skip
            await asyncio.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])
            attempt += 1
        self.rt.metrics.broker.ok()

    async def _publish_batch(self, todo: list[tuple[_Pending, Outcome]]) -> list[tuple[_Pending, Outcome]]:
        """Queue the batch's decisions to the channels, wait for their delivery; returns
        the outcomes whose decision failed."""
        m = self.rt.metrics
        published = time.perf_counter()
        answers: list[tuple[_Pending, Outcome, Any]] = []
        for item, outcome in todo:
            try:
                answer = await self._publish(outcome)
            except KafkaError:
                raise
            except Exception as exc:  # noqa: BLE001 - likewise a bug building one record's output
                await self._bury(item, exc)
                continue
            if answer is not None:
                answers.append((item, outcome, answer))
        # Latency is what the channel sees: until its decision record is delivered.
        await asyncio.gather(*(a for _, _, a in answers), return_exceptions=True)
        now, elapsed = time.time(), time.perf_counter() - published
        for item, _, answer in answers:
            if not _failed(answer):
                m.stage_latency.labels("publish").observe(elapsed)
                stamp = item.event.message.timestamp
                if stamp:
                    m.decision_latency.labels("kafka").observe(max(now - stamp, 0.0))
        return [(item, outcome) for item, outcome, answer in answers if not item.dead and _failed(answer)]

    async def _outcome(self, ev: Event, fut: asyncio.Future[Outcome]) -> Outcome:
        """Await the decision, retrying while Redis is unavailable (nothing is dropped)."""
        attempt = 0
        while True:
            try:
                return await fut
            except StoreError as exc:  # counted by the service, once per round trip
                delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
                if attempt == 0:
                    log.warning(
                        "state store unavailable (%s); retrying event %s", exc, ev.event_id, extra=ids(ev)
                    )
                attempt += 1
                await asyncio.sleep(delay)
                fut = await self.rt.service.batcher.submit(ev)

    async def _publish(self, outcome: Outcome) -> Any:
        """Queue the channel's decision (none for an event the channel already had an
        answer to); returns its delivery future."""
        ev = outcome.event
        if isinstance(ev, Answered):
            return None
        topic = self._decisions[ev.channel]
        return await self.app.producer.send(topic, ev.customer_id.encode(), outcome.body, None, None, None)

    async def _ack_after(self, deliveries: list[Any], event: Any) -> None:
        try:
            await asyncio.gather(*deliveries)
            event.ack()
        except Exception:
            log.exception("DLQ delivery failed; the record will be redelivered")


def _failed(delivery: asyncio.Future[Any]) -> bool:
    return delivery.cancelled() or delivery.exception() is not None


def _headers(message: Any) -> list[tuple[str, bytes]]:
    """A record's headers as (name, value) pairs, however the transport holds them."""
    headers = message.headers or ()
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)
