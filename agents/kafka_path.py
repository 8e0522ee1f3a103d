"""The Kafka path: decode a record, hand it to the engine, emit what it decided.

A record is acknowledged only after everything it produced (decision, audit record,
alerts, or its DLQ copy) has been delivered to the broker, so a crash anywhere
means redelivery, and redelivery is harmless because state updates are idempotent.

A record with the ``beacon-answered`` header is an event the HTTP path already answered
without state (engine/decide/degraded.py): it is ingested, decided without sales offers,
audited and its alerts raised like any other, but no decision goes to the channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from agents.bulk import BulkProducer
from engine.decide.degraded import Answered, answered, answered_by
from engine.domain.events import Event, parse_event
from engine.errors import EventError, StoreError
from engine.service.decisions import Outcome
from engine.service.logs import ids, log_decision
from engine.service.runtime import Runtime
from engine.settings import Settings

log = logging.getLogger("beacon.kafka")
_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class KafkaPath:
    def __init__(self, app: Any, rt: Runtime, bulk: BulkProducer) -> None:
        self.app = app
        self.rt = rt
        self.bulk = bulk
        s = rt.settings
        self._in_flight = asyncio.Semaphore(s.batch_max * 4)
        self._tasks: set[asyncio.Task[None]] = set()
        self._dlq = s.topic("interactions.dlq")
        self._decisions = {c: s.topic(f"decisions.{c}") for c in s.channels}

    async def handle(self, event: Any) -> None:
        """Called by the agent for each record; returns once the record is queued."""
        message = event.message
        raw: bytes = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
        try:
            ev = parse_event(raw, self.rt.settings, time.time())
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
        fut = await self.rt.service.batcher.submit(ev)
        task = asyncio.get_running_loop().create_task(self._finish(event, ev, raw, fut))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for in-flight records (graceful shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _dead_letter(self, event: Any, raw: bytes, err: EventError) -> None:
        self.rt.metrics.rejected("kafka", err.code)
        msg = event.message
        headers = [
            ("beacon-error-code", err.code.encode()),
            ("beacon-error-field", (err.field or "").encode()),
            ("beacon-error-message", err.message.encode()[:500]),
            ("beacon-source", f"{msg.topic}/{msg.partition}/{msg.offset}".encode()),
        ]
        delivery = await self.bulk.send(self._dlq, msg.key, raw, headers)
        task = asyncio.get_running_loop().create_task(self._ack_after([delivery], event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, event: Any, ev: Event, raw: bytes, fut: asyncio.Future[Outcome]) -> None:
        try:
            outcome = await self._outcome(ev, fut)
            await self._deliver(event, outcome)
            event.ack()
            m = self.rt.metrics
            m.events.labels("kafka", ev.channel, ev.type, "replayed" if outcome.replayed else "decided").inc()
            if outcome.decision is not None:
                if not isinstance(ev, Answered):  # an answered one was counted where it was answered
                    m.observe_decision("kafka", outcome.decision, outcome.label)
                log_decision("kafka", outcome.decision)
        except Exception as exc:
            log.exception("decision for event %s failed; sending it to the DLQ", ev.event_id, extra=ids(ev))
            await self._dead_letter(event, raw, EventError("internal_error", f"{type(exc).__name__}: {exc}"))
        finally:
            self._in_flight.release()

    async def _deliver(self, event: Any, outcome: Outcome) -> None:
        """Publish what the decision produced, retrying while the broker is unavailable:
        the event is not at fault, so it gets no DLQ copy, and its offset waits."""
        m = self.rt.metrics
        attempt = 0
        while True:
            published = time.perf_counter()
            try:
                answer, records = await self._publish(outcome)
                # Latency is what the channel sees: until its decision record is delivered.
                # The audit and alert records ride the bulk producer's linger; the offset is
                # committed only once they are delivered too.
                if answer is not None:
                    await answer
                    m.stage_latency.labels("publish").observe(time.perf_counter() - published)
                    stamp = event.message.timestamp
                    if stamp:
                        m.decision_latency.labels("kafka").observe(max(time.time() - stamp, 0.0))
                await asyncio.gather(*records)
                m.broker.ok()
                return
            except KafkaError as exc:
                m.broker.failed("produce")
                if attempt == 0:
                    log.warning("broker unavailable (%s); retrying event %s", exc, outcome.event.event_id,
                                extra=ids(outcome.event))  # fmt: skip
                await asyncio.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])
                attempt += 1

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

    async def _publish(self, outcome: Outcome) -> tuple[Any, list[Any]]:
        """Queue the channel's decision (none for an event the channel already had an
        answer to) and the audit and alert records; returns their delivery futures."""
        ev = outcome.event
        answer = None
        if not isinstance(ev, Answered):
            topic = self._decisions[ev.channel]
            answer = await self.app.producer.send(
                topic, ev.customer_id.encode(), outcome.body, None, None, None
            )
        records: list[Any] = []
        if outcome.decision is not None:  # a replay was audited when it was first decided
            records = await publish_audit_and_alerts(self.bulk, self.rt, outcome)
        return answer, records

    async def _ack_after(self, deliveries: list[Any], event: Any) -> None:
        try:
            await asyncio.gather(*deliveries)
            event.ack()
        except Exception:
            log.exception("DLQ delivery failed; the record will be redelivered")


async def publish_audit_and_alerts(bulk: BulkProducer, rt: Runtime, outcome: Outcome) -> list[Any]:
    """Queue the audit record and alerts of a fresh decision; returns the delivery futures."""
    return [await bulk.send(*record) for record in records_of(rt.settings, outcome)]


def records_of(s: Settings, outcome: Outcome) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of what a fresh decision publishes besides the channel's answer:
    its audit record, its alerts, and the label of an outcome reported by a channel
    (nothing for a replay: that was published when it was first decided)."""
    decision, label = outcome.decision, outcome.label
    if decision is None:
        return []
    key = decision.event.customer_id.encode()
    records = [(s.topic("decisions.audit"), key, decision.audit_bytes(outcome.timings_ms))]
    records += [(s.topic("risk.alerts"), key, decision.alert_bytes(alert)) for alert in decision.alerts]
    if label is not None:  # the trainer learns from it
        records.append((s.topic("feedback"), key, orjson.dumps(label)))
    return records


def _headers(message: Any) -> list[tuple[str, bytes]]:
    """A record's headers as (name, value) pairs, however the transport holds them."""
    headers = message.headers or ()
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)
