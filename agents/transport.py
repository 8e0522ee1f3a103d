"""A Kafka transport with a configurable consumer fetch wait that backs off when idle.

faust-streaming 0.15.3 hard-codes ``fetch_max_wait_ms=1500`` when it builds the
worker's aiokafka consumer (there is no setting for it), which makes every decision
wait on fetch. This subclass builds the consumer as Faust does and then sets the fetch
wait from ``app.beacon_fetch_wait`` (Settings.fetch_max_wait_ms, default 5 ms) before
the consumer starts. It is registered as the ``beacon://`` broker scheme.

A short fetch wait costs CPU whether or not records come: the embedded broker holds
each fetch for about the wait, so at 5 ms the consumer thread sends, encodes and
decodes ~200 fetches a second, ~13% of a core on an idle worker and the same again
beside HTTP-only traffic (py-spy, BENCHMARKS.md). :class:`FetchPacer` keeps the short
wait while records a channel waits on (``interactions``) flow and lengthens it once none
has come for a second; the first event after a quiet spell waits at most the idle wait
(on Apache Kafka, which answers a fetch as soon as data arrives, not even that). Records
of other topics (the desk's ``risk.alerts``) do not count: nobody waits on them within
milliseconds, and beside HTTP traffic they would keep the short wait for good.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

DEFAULT_FETCH_MAX_WAIT_MS = 5


@dataclass
class FetchPacer:
    """The fetch wait to use: ``busy_ms`` while records flow, ``idle_ms`` after
    ``idle_after_s`` without any (pure: the clock is passed in).

    >>> p = FetchPacer(busy_ms=5, idle_ms=50, idle_after_s=1.0)
    >>> p.observe(got_records=False, now=0.5), p.observe(False, 1.6), p.observe(True, 9.0)
    (5, 50, 5)
    """

    busy_ms: int
    idle_ms: int
    idle_after_s: float = 1.0
    last_records_at: float = 0.0

    def observe(self, got_records: bool, now: float) -> int:
        if got_records:
            self.last_records_at = now
            return self.busy_ms
        if now - self.last_records_at >= self.idle_after_s:
            return max(self.idle_ms, self.busy_ms)
        return self.busy_ms


class LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        busy, idle, urgent = getattr(self.app, "beacon_fetch_wait", (DEFAULT_FETCH_MAX_WAIT_MS, 0, ""))
        self._beacon_pacer = FetchPacer(int(busy), int(idle), last_records_at=time.monotonic())
        self._beacon_urgent_topic = urgent
        # aiokafka hands this value to its Fetcher when the consumer starts.
        consumer._fetch_max_wait_ms = int(busy)
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout, max_records)
        pacer: FetchPacer | None = getattr(self, "_beacon_pacer", None)
        fetcher = getattr(consumer, "_fetcher", None)
        if pacer is not None and fetcher is not None:
            # The fetcher reads this when it builds each fetch request.
            urgent = any(tp.topic == self._beacon_urgent_topic for tp in records)
            fetcher._fetch_max_wait_ms = pacer.observe(urgent, time.monotonic())
        return records


class LowLatencyConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> LowLatencyConsumerThread:
        return LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """Commit what the agents acknowledged before a rebalance takes partitions away.

        faust-streaming 0.15.3 forgets the acknowledged offsets of revoked partitions first
        (``Consumer.on_partitions_revoked``) and commits only on its timer, so the next
        owner re-decided up to ``commit_interval_s`` of events at every rebalance (state
        dedupes them; the channel got the same decision twice). What is still in flight
        (taken, not yet acknowledged) is redelivered, as before.
        tests/integration/test_many_workers.py counts the repeats (BENCHMARKS.md)."""
        try:
            if await self.commit():
                log.info("committed before the rebalance (%d partitions revoked)", len(revoked))
        except Exception as exc:  # noqa: BLE001 (the timer's commit is still there; repeats are deduped)
            log.warning("could not commit before the rebalance: %r", exc)
        await super().on_partitions_revoked(revoked)


class Transport(faust_aiokafka.Transport):
    Consumer = LowLatencyConsumer


def register() -> None:
    drivers.TRANSPORTS.data["beacon"] = f"{__name__}:Transport"
