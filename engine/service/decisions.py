"""The decision service: the one place both paths (HTTP and Kafka) go through.

parse -> (batch) ingest state in one round trip -> decide (pure) -> record in one
round trip -> outcome. Publishing is the caller's adapter's job.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.decide.degraded import after_degraded_answer, as_answered
from engine.decide.pipeline import DecisionPolicy, decide, prepare
from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.domain.labels import is_label_event, label_of
from engine.domain.scoring import Scorer
from engine.domain.state import Snapshot
from engine.errors import EventError, StoreError
from engine.rules.ruleset import RuleSet
from engine.service.batching import MicroBatcher
from engine.service.eventclock import EventClock
from engine.service.metrics import Metrics
from engine.service.shadow import ShadowRunner
from engine.settings import Settings
from engine.store.base import CustomerState

T = TypeVar("T")
EventKey = tuple[str, str, str]  # customer, channel, event id: one event, however often delivered


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one event. ``decision`` is None for a replay of a stored one, and for
    a ``conflict``: a repeat of an event id with another payload (nothing was changed or
    decided; ``body`` is empty, and the adapters refuse it as ``conflicting_replay``).

    ``label`` is what a fresh decision's event teaches the models (``label_of``, computed
    once here): the metrics count offer responses from it and the Kafka path publishes it
    to ``feedback``. None for a replay and for the many events that carry none."""

    event: Event
    body: bytes  # the channel view, exactly what the channel receives
    decision: Decision | None
    replayed: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    label: dict[str, Any] | None = None
    conflict: bool = False


class DecisionService:
    def __init__(
        self,
        settings: Settings,
        store: CustomerState,
        rules: RuleSet | None,
        scorer: Scorer,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.events = EventClock(settings)  # parses what either path receives
        # None until the worker has loaded a version (engine/service/rulewatch.py swaps it later).
        self.rules: RuleSet | None = rules
        self.scorer = scorer
        self.policy = DecisionPolicy(settings.risk_step_up, settings.risk_block, settings.max_actions)
        # Whether a decision id's HTTP caller was already answered without state (the
        # worker's record of degraded answers): its audit record, written by the commit,
        # then says which answer it follows.
        self.answered_degraded: Callable[[str], bool] = lambda decision_id: False
        # A candidate version run beside ``rules`` and acted on never (engine/service/shadow.py):
        # None unless one is published with `beacon rules publish --shadow` (rulewatch swaps it).
        self.shadow_rules: RuleSet | None = None
        self.shadow = ShadowRunner(self.policy, metrics.shadow if metrics else None, settings.batch_max * 8)
        self.batcher: MicroBatcher[Event, Outcome] = MicroBatcher(
            self.decide_batch, settings.batch_max, max_queue=settings.batch_max * 8
        )

    async def decide_batch(self, events: Sequence[Event]) -> list[Outcome]:
        rules = self.rules  # one rule version for the whole batch, even across a swap
        if rules is None:  # not reached: the worker starts the batcher after the rules
            raise StoreError("rules are not loaded yet")
        t0 = time.perf_counter()
        snapshots = await self._stored(self.store.ingest(events))
        t1 = time.perf_counter()
        results, todo = self._stored_or_new(events, snapshots)
        # A label event is acknowledged, not decided: no features, no model call (decide()).
        scorer = self.scorer
        prepared = [None if is_label_event(ev) else prepare(ev, snap, rules, scorer) for _, ev, snap in todo]
        t2 = time.perf_counter()
        for (key, ev, snap), prep in zip(todo, prepared, strict=True):
            # An event already answered without state (engine/decide/degraded.py) shows no sales offer.
            results[key] = as_answered(ev, decide(ev, snap, rules, self.scorer, self.policy, prep))
        t3 = time.perf_counter()
        stage = {
            "state_ms": round((t1 - t0) * 1000, 3),
            "models_ms": round((t2 - t1) * 1000, 3),
            "rules_ms": round((t3 - t2) * 1000, 3),
            "decide_ms": round((t3 - t1) * 1000, 3),  # models and rules together, as before
            "batch": float(len(events)),
        }
        fresh = [(k, self._followed(r)) for k, r in results.items() if isinstance(r, Decision)]
        done = await self._stored(self.store.commit([d for _, d in fresh], rules.offer_index, stage))
        t4 = time.perf_counter()
        committed: dict[EventKey, Decision | bytes] = dict(results)
        bodies: dict[EventKey, bytes] = {k: r for k, r in results.items() if isinstance(r, bytes)}
        for (key, _), (decision, body) in zip(fresh, done, strict=True):
            # None: a resent commit found it committed already, so it counts as a replay.
            committed[key], bodies[key] = decision if decision is not None else body, body
        if self.metrics is not None:
            m = self.metrics
            m.batch_size.observe(len(events))
            for name, seconds in (
                ("state", t1 - t0),
                ("models", t2 - t1),
                ("rules", t3 - t2),
                ("record", t4 - t3),
            ):
                m.stage_latency.labels(name).observe(seconds)
        timings = {**stage, "record_ms": round((t4 - t3) * 1000, 3)}
        shadow = self.shadow_rules  # the one check a batch pays when no shadow version runs
        if shadow is not None:
            items = [(ev, snap, prep, d) for (key, ev, snap), prep in zip(todo, prepared, strict=True)
                     if prep is not None and isinstance(d := results[key], Decision)]  # fmt: skip
            self.shadow.offer(shadow, rules, scorer, items)
        return _outcomes(events, snapshots, committed, bodies, timings)

    def _followed(self, decision: Decision) -> Decision:
        if self.answered_degraded(decision.decision_id):
            return after_degraded_answer(decision, decision.decision_id)
        return decision

    async def _stored(self, call: Awaitable[T]) -> T:
        """A Redis round trip, its failures and recoveries counted by kind."""
        try:
            result = await call
        except StoreError as exc:
            if self.metrics is not None:
                self.metrics.store.failed(exc.kind)
            raise
        if self.metrics is not None:
            self.metrics.store.ok()
        return result

    @staticmethod
    def _stored_or_new(
        events: Sequence[Event], snapshots: Sequence[Snapshot]
    ) -> tuple[dict[EventKey, Decision | bytes], list[tuple[EventKey, Event, Snapshot]]]:
        """Per distinct event (customer, channel, event id: a channel may reuse an id for two
        customers): the body stored for a repeat, or a decision to make. A conflict (another
        payload under the id) is neither, wherever it is in the batch."""
        results: dict[EventKey, Decision | bytes] = {}
        todo: list[tuple[EventKey, Event, Snapshot]] = []
        seen: set[EventKey] = set()
        for event, snap in zip(events, snapshots, strict=True):
            key = _event_key(event)
            if snap.conflict or key in seen:  # the same event twice in one batch is decided once
                continue
            seen.add(key)
            if snap.stored_decision is not None:
                results[key] = snap.stored_decision
            else:
                todo.append((key, event, snap))
        return results, todo


def conflicting_replay(event: Event) -> EventError:
    """Why a conflict is refused: HTTP 409, or its DLQ record's headers (Kafka)."""
    why = f"event {event.event_id} of channel {event.channel} was decided on another payload"
    return EventError("conflicting_replay", why + "; a repeat must carry the same payload", "event_id")


def _event_key(event: Event) -> EventKey:
    return (event.customer_id, event.channel, event.event_id)


def _outcomes(
    events: Sequence[Event],
    snapshots: Sequence[Snapshot],
    results: dict[EventKey, Decision | bytes],
    bodies: dict[EventKey, bytes],
    timings: dict[str, float],
) -> list[Outcome]:
    """One outcome per input event; only the first copy of a fresh decision carries it."""
    outcomes: list[Outcome] = []
    seen: set[EventKey] = set()
    for event, snap in zip(events, snapshots, strict=True):
        if snap.conflict:
            outcomes.append(Outcome(event, b"", None, timings_ms=timings, conflict=True))
            continue
        key = _event_key(event)
        result = results[key]
        if key in seen or isinstance(result, bytes):
            outcomes.append(Outcome(event, bodies[key], None, replayed=True, timings_ms=timings))
        else:
            outcomes.append(Outcome(event, bodies[key], result, timings_ms=timings, label=label_of(event)))
        seen.add(key)
    return outcomes
