"""The decision service: the one place both paths (HTTP and Kafka) go through.

parse -> (batch) ingest state in one round trip -> decide (pure) -> record in one
round trip -> outcome. Publishing is the caller's adapter's job.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.batching import MicroBatcher
from engine.decision import Decision
from engine.events import Event
from engine.metrics import Metrics
from engine.pipeline import DecisionPolicy, decide
from engine.rules import RuleSet
from engine.scoring import Scorer
from engine.settings import Settings
from engine.store import Recorded, StateStore


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one event. ``decision`` is None for a replay of a stored one."""

    event: Event
    body: bytes  # the channel view, exactly what the channel receives
    decision: Decision | None
    replayed: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)


class DecisionService:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        rules: RuleSet,
        scorer: Scorer,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.rules = rules
        self.scorer = scorer
        self.policy = DecisionPolicy(settings.risk_step_up, settings.risk_block, settings.max_actions)
        self.batcher: MicroBatcher[Event, Outcome] = MicroBatcher(
            self.decide_batch, settings.batch_max, max_queue=settings.batch_max * 8
        )

    async def decide_batch(self, events: Sequence[Event]) -> list[Outcome]:
        t0 = time.perf_counter()
        snapshots = await self.store.ingest(events)
        t1 = time.perf_counter()
        outcomes: list[Outcome] = []
        to_record: list[Recorded] = []
        first_in_batch: dict[tuple[str, str], Outcome] = {}
        for event, snap in zip(events, snapshots, strict=True):
            key = (event.channel, event.event_id)
            if key in first_in_batch:  # the same event twice in one batch
                outcomes.append(_replay(event, first_in_batch[key].body))
                continue
            if snap.stored_decision is not None:
                outcome = _replay(event, snap.stored_decision)
            else:
                decision = decide(event, snap, self.rules, self.scorer, self.policy)
                body = decision.channel_bytes()
                outcome = Outcome(event, body, decision)
                to_record.append(Recorded(decision, body))
            first_in_batch[key] = outcome
            outcomes.append(outcome)
        t2 = time.perf_counter()
        await self.store.record(to_record)
        t3 = time.perf_counter()
        if self.metrics is not None:
            m = self.metrics
            m.batch_size.observe(len(events))
            m.stage_latency.labels("state").observe(t1 - t0)
            m.stage_latency.labels("decide").observe(t2 - t1)
            m.stage_latency.labels("record").observe(t3 - t2)
        timings = {
            "state_ms": round((t1 - t0) * 1000, 3),
            "decide_ms": round((t2 - t1) * 1000, 3),
            "record_ms": round((t3 - t2) * 1000, 3),
            "batch": float(len(events)),
        }
        return [Outcome(o.event, o.body, o.decision, o.replayed, timings) for o in outcomes]


def _replay(event: Event, body: bytes) -> Outcome:
    return Outcome(event, body, None, replayed=True)
