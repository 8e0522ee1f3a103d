"""The outbox relay: the records each commit wrote to Redis (engine/store/outbox.py), to Kafka.

One relay per worker, a consumer of the outbox's group. It reads a page of new entries,
hands their records to the bulk producer (acks from all in-sync replicas, idempotent),
waits for delivery and deletes the entries whose records all arrived. Entries it could
not deliver stay pending and are claimed again, by this relay or another, once idle for
``outbox_claim_idle_s``: that is the retry, with the claim time as its backoff, and it
also picks up what a dead worker read and never delivered. A record the broker will
never take (too large, not authorised) is dropped with its entry, counted and logged,
rather than blocking the outbox for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from agents.bulk import BulkProducer, worth_retrying
from engine.errors import StoreError
from engine.service.metrics import Metrics
from engine.settings import Settings
from engine.store.outbox import Entry, Outbox

log = logging.getLogger("beacon.relay")
_PAGE = 500
_BLOCK_MS = 200
_STORE_RETRY_S = 1.0
_FORGET_IDLE_MS = 3_600_000  # a consumer idle this long with nothing pending: its worker is gone


class Relay:
    def __init__(self, outbox: Outbox, bulk: BulkProducer, settings: Settings, metrics: Metrics) -> None:
        self.outbox = outbox
        self.bulk = bulk
        self.metrics = metrics
        self._topic = settings.topic
        self._claim_every_s = max(settings.outbox_claim_idle_s / 2, 0.5)
        self._linger_s = settings.bulk_linger_ms / 1000.0

    async def run(self) -> None:
        """Until cancelled; Redis or broker failures are waited out, never raised."""
        while True:
            try:
                await self.outbox.ensure_group()
                await self.outbox.forget_idle_consumers(_FORGET_IDLE_MS)
                break
            except StoreError as exc:
                log.warning("outbox not reachable yet (%s); retrying", exc)
                await asyncio.sleep(_STORE_RETRY_S)
        claimed_at = 0.0
        while True:
            _raise_if_cancelled()
            try:
                if time.monotonic() - claimed_at >= self._claim_every_s:
                    claimed_at = time.monotonic()
                    await self.relay(await self.outbox.claim(_PAGE))
                entries = await self.outbox.read(_PAGE, _BLOCK_MS)
                await self.relay(entries)
                if 0 < len(entries) < _PAGE:
                    # Let entries gather, as the producer lingers: at low rates a read,
                    # a produce and a delete per decision cost more than the decision.
                    await asyncio.sleep(self._linger_s)
            except StoreError as exc:
                self.metrics.store.failed(exc.kind)
                log.warning("outbox unavailable (%s); retrying", exc)
                await asyncio.sleep(_STORE_RETRY_S)

    async def relay(self, entries: list[Entry]) -> int:
        """Send the entries' records, wait for them, delete the delivered entries; returns
        how many were delivered (the others stay pending for a later claim)."""
        if not entries:
            return 0
        sent: list[tuple[Entry, list[Any]]] = []
        try:
            for entry in entries:
                futures = [
                    await self.bulk.send(self._topic(topic), entry.customer, value)
                    for topic, value in entry.records
                ]
                sent.append((entry, futures))
        except Exception as exc:  # noqa: BLE001 - the producer is closed or its buffer stayed full
            log.warning("outbox records not handed to the broker (%r); retried later", exc)
        done: list[Entry] = []
        for entry, futures in sent:
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if not failed:
                done.append(entry)
            elif not any(worth_retrying(r) for r in failed):
                self._lost(entry, failed[0])
                done.append(entry)
        if len(done) < len(entries):
            self.metrics.broker.failed("produce")
        else:
            self.metrics.broker.ok()
        await self.outbox.done(done)
        self.metrics.outbox_relayed.inc(len(done))
        return len(done)

    def _lost(self, entry: Entry, why: BaseException) -> None:
        self.metrics.spool_dropped.inc()
        log.error(
            "RECORDS LOST: outbox entry %s (customer %s) refused by the broker for good: %r",
            entry.id.decode(), entry.customer.decode(errors="replace"), why,
        )  # fmt: skip


def _raise_if_cancelled() -> None:
    """A cancellation some library caught and dropped (it happened under redis-py's cluster
    pipeline, leaving the relay polling after shutdown) still ends the relay: asyncio keeps
    the request counted on the task until someone uncancels it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
