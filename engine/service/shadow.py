"""Shadow rules at run time: the candidate version decides every event again, off the
channel's critical path, and acts on nothing.

The decision batch (engine/service/decisions.py) hands its fresh decisions to
:meth:`ShadowRunner.offer` once they are committed: one attribute check per batch when
no shadow version runs, an O(1) append when one does. A task of its own then decides
each event again with the shadow version (the same pure ``decide`` on the same snapshot,
features and scores; the models are scored again only if the shadow version's offers
differ), compares (engine/decide/shadow.py), counts, and sends each difference to
``decisions.shadow``. It yields to the loop first, so the batch's answers are handed to
the channels before it starts, and it takes one batch at a time.

The budget: at most ``max_events`` events wait (8 batches by default). What does not
fit is not shadowed: counted in ``beacon_shadow_dropped_total{reason="queue_full"}``, never
waited for, so a slow shadow version cannot slow the channels' answers or grow memory.
A record the broker does not take is counted as ``not_delivered`` (the records are for
analysis; nothing retries them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from engine.decide.degraded import as_answered
from engine.decide.pipeline import DecisionPolicy, Prepared, decide, prepare
from engine.decide.shadow import ShadowDiff, compare
from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.domain.scoring import Scorer
from engine.domain.state import Snapshot
from engine.rules.ruleset import RuleSet

log = logging.getLogger("beacon.shadow")
Item = tuple[Event, Snapshot, Prepared, Decision]  # the event, its state, features+scores, live decision
Emit = Callable[[bytes, bytes], Awaitable[Any]]  # (customer id, record) -> its delivery future


class ShadowMetrics:
    """The shadow version's series (docs/metrics.md); registered with the worker's."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.running = Gauge(
            "beacon_shadow_running", "1 while a shadow rules version runs beside the live one", registry=r
        )
        self.evaluations = Counter(
            "beacon_shadow_evaluations_total",
            "Events decided again by the shadow rules version",
            ["channel"],
            registry=r,
        )
        self.dropped = Counter(
            "beacon_shadow_dropped_total",
            "Events not shadowed (queue_full: over the budget) or difference records not delivered",
            ["reason"],
            registry=r,
        )
        self.cpu = Counter(
            "beacon_shadow_cpu_seconds_total",
            "CPU time the worker spent deciding events again with the shadow version (its cost)",
            registry=r,
        )
        self.fires = Counter(
            "beacon_shadow_fires_total", "Rules the shadow version fired", ["rule"], registry=r
        )
        self.differences = Counter(
            "beacon_shadow_differences_total",
            "Decisions the shadow version would have made differently, by what differs",
            ["kind", "channel"],
            registry=r,
        )
        self.disagreements = Counter(
            "beacon_shadow_disagreements_total",
            "Verdict disagreements between shadow and live, by rule fired by one version only",
            ["rule", "channel"],
            registry=r,
        )


@dataclass(slots=True)
class _Job:
    shadow: RuleSet
    live: RuleSet
    scorer: Scorer
    items: Sequence[Item]


class ShadowRunner:
    def __init__(self, policy: DecisionPolicy, metrics: ShadowMetrics | None, max_events: int) -> None:
        self.policy = policy
        self.metrics = metrics
        self.max_events = max(1, max_events)
        self.emit: Emit | None = None  # set by the worker (agents/app.py): to decisions.shadow
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def offer(self, shadow: RuleSet, live: RuleSet, scorer: Scorer, items: Sequence[Item]) -> None:
        """Queue a batch's decisions for the shadow version; never waits."""
        if not items:
            return
        if self._queued + len(items) > self.max_events:
            if self.metrics is not None:
                self.metrics.dropped.labels("queue_full").inc(len(items))
            return
        self._jobs.append(_Job(shadow, live, scorer, items))
        self._queued += len(items)
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="shadow-rules")
        assert self._wake is not None
        self._wake.set()

    @property
    def depth(self) -> int:
        """Events waiting to be shadowed."""
        return self._queued

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(0)  # behind the answers the batch just resolved
            job = self._jobs.popleft()
            self._queued -= len(job.items)
            try:
                started = time.thread_time()  # this thread's CPU: the shadow's cost, not the machine's
                diffs = self.evaluate(job.shadow, job.live, job.scorer, job.items)
                if self.metrics is not None:
                    self.metrics.cpu.inc(time.thread_time() - started)
                await self._send(diffs)
            except Exception:  # the shadow must never take the worker down
                log.exception("shadow rules: a batch could not be evaluated")

    def evaluate(
        self, shadow: RuleSet, live: RuleSet, scorer: Scorer, items: Sequence[Item]
    ) -> list[ShadowDiff]:
        """Decide each item with ``shadow``, count, and return the differences."""
        m = self.metrics
        same_offers = shadow.offer_ids == live.offer_ids
        diffs: list[ShadowDiff] = []
        for event, snap, prepared, live_decision in items:
            prep = prepared if same_offers else prepare(event, snap, shadow, scorer)
            theirs = as_answered(event, decide(event, snap, shadow, scorer, self.policy, prep))
            diff = compare(live_decision, theirs)
            if m is not None:
                m.evaluations.labels(event.channel).inc()
                for alert in theirs.alerts:
                    m.fires.labels(alert.rule_id).inc()
            if diff is None:
                continue
            diffs.append(diff)
            if m is not None:
                for kind in diff.kinds:
                    m.differences.labels(kind, event.channel).inc()
                if diff.verdict_changed:
                    for rule in diff.blamed():
                        m.disagreements.labels(rule, event.channel).inc()
        return diffs

    async def _send(self, diffs: list[ShadowDiff]) -> None:
        if self.emit is None or not diffs:
            return
        for diff in diffs:
            ev = diff.live_decision.event
            try:
                delivery = await self.emit(ev.customer_id.encode(), diff.record_bytes())
            except Exception as exc:  # noqa: BLE001 - the producer is closed or its buffer stayed full
                log.warning("shadow rules: a difference record was not sent (%r)", exc)
                if self.metrics is not None:
                    self.metrics.dropped.labels("not_delivered").inc()
                continue
            if isinstance(delivery, asyncio.Future):
                delivery.add_done_callback(self._delivered)

    def _delivered(self, delivery: asyncio.Future[Any]) -> None:
        if (delivery.cancelled() or delivery.exception() is not None) and self.metrics is not None:
            self.metrics.dropped.labels("not_delivered").inc()
