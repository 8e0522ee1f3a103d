"""The open-loop scheduler and the per-phase recorder shared by every driver.

Events are sent at intended times on a fixed schedule, whatever the system under test
does; each answer's latency is measured from its event's intended time. When the client
falls behind (a full connection pool, a slow loop) the lateness is counted, not hidden.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter as clock
from typing import Any, NamedTuple

import orjson

from loadtest.generator import TrafficGenerator
from loadtest.stats import Bounds, Summary, achieved_rate, drift_ms, schedule, summarize, sustained


class Event(NamedTuple):
    event_id: str
    key: bytes
    value: bytes


@dataclass
class Recorder:
    """Intended times and answers of one phase, in ``time.perf_counter()`` seconds
    (not ``loop.time()``: uvloop's clock ticks in whole milliseconds)."""

    intended: list[float]
    latency: list[float] = field(init=False)
    answered_at: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    unexpected: int = 0  # answers to events not in this phase (warm-up stragglers, duplicates)
    outstanding: int = field(init=False)
    _all_done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.latency = [math.inf] * len(self.intended)
        self.outstanding = len(self.intended)
        if not self.intended:
            self._all_done.set()

    def answer(self, i: int, at: float) -> None:
        if not math.isinf(self.latency[i]):
            self.unexpected += 1
            return
        self.statuses["ok"] += 1
        self.latency[i] = at - self.intended[i]
        self.answered_at.append(at)
        self.outstanding -= 1
        if self.outstanding == 0:
            self._all_done.set()

    def fail(self, i: int, status: str) -> None:
        """An event that got no usable answer (error status, exception): counted as lost."""
        self.statuses[status] += 1
        self.errors += 1
        self.outstanding -= 1
        if self.outstanding == 0:
            self._all_done.set()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._all_done.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def summary(self) -> Summary:
        return summarize(self.latency, sent=len(self.intended), errors=self.errors)


async def run_schedule(intended: list[float], fire: Callable[[int], Awaitable[None]]) -> float:
    """Call ``fire(i)`` for each event at (or as soon as possible after) ``intended[i]``.

    Returns how late, at worst, the client fired an event (seconds): a measure of the
    client's own overload, reported next to the results.
    """
    worst = 0.0
    i, n = 0, len(intended)
    while i < n:
        now = clock()
        while i < n and intended[i] <= now:
            worst = max(worst, now - intended[i])
            await fire(i)
            i += 1
            now = clock()
        if i < n:
            await asyncio.sleep(max(intended[i] - clock(), 0.0))
    return worst


@dataclass
class Phase:
    """The result of one phase: one path at one rate."""

    name: str
    path: str
    rate: float
    duration_s: float
    summary: Summary
    drift_ms: float
    achieved_rate: float
    sustained: bool
    client_lag_ms: float
    statuses: dict[str, int]
    cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["summary"] = self.summary.to_dict()
        return out


def phase_result(
    name: str,
    path: str,
    rate: float,
    duration_s: float,
    rec: Recorder,
    bounds: Bounds,
    client_lag_s: float,
    **extra: Any,
) -> Phase:
    summary = rec.summary()
    drift = drift_ms(list(zip(rec.intended, rec.latency, strict=True)))
    achieved = achieved_rate(rec.intended, rec.answered_at)
    return Phase(
        name=name,
        path=path,
        rate=rate,
        duration_s=duration_s,
        summary=summary,
        drift_ms=round(drift, 2) if math.isfinite(drift) else drift,
        achieved_rate=round(achieved, 1),
        sustained=sustained(summary, drift, achieved, rate, bounds),
        client_lag_ms=round(client_lag_s * 1000.0, 2),
        statuses=dict(rec.statuses),
        extra=dict(extra),
    )


def plan(rate: float, duration_s: float, lead_s: float = 0.05) -> list[float]:
    """Intended times (perf_counter clock) of a phase starting ``lead_s`` from now."""
    return schedule(max(int(rate * duration_s), 1), rate, clock() + lead_s)


def make_events(gen: TrafficGenerator, n: int, wall_start: float, rate: float) -> list[Event]:
    """``n`` generated events stamped with their intended wall-clock send times (so the
    worker's validation sees fresh timestamps). Generated before a phase, not during it."""
    out: list[Event] = []
    for i in range(n):
        ev = gen.next_event(wall_start + i / rate)
        out.append(Event(ev["event_id"], ev["customer_id"].encode(), orjson.dumps(ev)))
    return out


async def serial(n: int, one: Callable[[], Awaitable[None]]) -> list[float]:
    """Closed loop, one request at a time: the bare round-trip floor. Seconds each."""
    out: list[float] = []
    for _ in range(n):
        t0 = clock()
        await one()
        out.append(clock() - t0)
    return out


def serial_result(name: str, path: str, latencies: list[float], **extra: Any) -> Phase:
    summary = summarize(latencies, sent=len(latencies))
    total = sum(latencies)
    return Phase(
        name=name,
        path=path,
        rate=0.0,
        duration_s=round(total, 2),
        summary=summary,
        drift_ms=0.0,
        achieved_rate=round(len(latencies) / total, 1) if total > 0 else 0.0,
        sustained=True,
        client_lag_ms=0.0,
        statuses={"ok": len(latencies)},
        extra=dict(extra),
    )
