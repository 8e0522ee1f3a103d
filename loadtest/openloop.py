"""The open-loop scheduler and the per-phase recorder shared by every driver.

Events are sent at intended times on a schedule computed up front (a fixed rate, or a
shape such as a compressed day: :mod:`loadtest.shape`), whatever the system under test
does; each answer's latency is measured from its event's intended time. When the client
falls behind (a full connection pool, a slow loop) the lateness is counted, not hidden.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter as clock
from typing import Any, NamedTuple

import orjson

from engine.ops.traffic import TrafficGenerator
from loadtest.hdr import Histogram
from loadtest.part import Part
from loadtest.responses import Responder
from loadtest.shape import shaped_schedule
from loadtest.stats import Bounds, Summary, summarize, sustained


class Event(NamedTuple):
    event_id: str
    key: bytes
    value: bytes


@dataclass
class Job:
    """One share of a phase for one generator process: its events, their intended send
    times as offsets from the phase's start (known only when it starts), and how to send."""

    events: list[Event]
    offsets: list[float]
    drain_s: float
    max_in_flight: int = 0  # stop sending once this many are unanswered (0: never)
    responder: Responder | None = None  # answer offers shown, in slots of the schedule


class Recorder:
    """Intended times and answers of one share of a phase, in ``time.perf_counter()``
    seconds (not ``loop.time()``: uvloop's clock ticks in whole milliseconds). What it
    measures goes into a :class:`~loadtest.part.Part`, live (the progress bar reads it)."""

    def __init__(
        self, intended: list[float], start: float | None = None, proc: int = 0, max_in_flight: int = 0
    ):
        self.intended = intended
        first = intended[0] if intended else clock()
        self.part = Part(start=first if start is None else start, proc=proc)
        self.max_in_flight = max_in_flight
        self._state = bytearray(len(intended))  # 0 waiting, 1 answered, 2 failed, 3 never sent
        self.outstanding = len(intended)
        self._all_done = asyncio.Event()
        if not intended:
            self._all_done.set()

    @property
    def statuses(self) -> Counter[str]:
        return self.part.statuses

    @property
    def unexpected(self) -> int:
        return self.part.unexpected

    @property
    def errors(self) -> int:
        return self.part.errors

    def fired(self, i: int, late: float) -> None:
        self.part.fired(self.intended[i], late)

    def overloaded(self) -> bool:
        """True once more events are unanswered than ``max_in_flight``: the system is
        clearly not keeping up, and sending the rest would only make a longer queue."""
        p = self.part
        return bool(self.max_in_flight) and p.sent - p.answered - p.errors > self.max_in_flight

    def answer(self, i: int, at: float) -> None:
        if self._state[i]:
            self.part.unexpected += 1
            return
        self._state[i] = 1
        self.part.answered_at(self.intended[i], at)
        self._one_done()

    def fail(self, i: int, status: str) -> None:
        """An event that got no usable answer (error status, exception): counted as lost."""
        if self._state[i]:
            return
        self._state[i] = 2
        self.part.failed(status)
        self._one_done()

    def stop_sending(self) -> None:
        """Events not fired yet will not be: stop waiting for them."""
        self.part.stopped_early = True
        for i in range(self.part.sent, len(self.intended)):
            if not self._state[i]:
                self._state[i] = 3
                self._one_done()

    def _one_done(self) -> None:
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
        return self.part.summary()


async def run_schedule(
    intended: list[float],
    fire: Callable[[int], Awaitable[None]],
    on_fire: Callable[[int, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> float:
    """Call ``fire(i)`` for each event at (or as soon as possible after) ``intended[i]``;
    ``on_fire(i, seconds late)`` first. Stops early when ``stop()`` says so.

    Returns how late, at worst, the client fired an event (seconds): a measure of the
    client's own overload, reported next to the results.
    """
    worst = 0.0
    i, n = 0, len(intended)
    while i < n:
        now = clock()
        while i < n and intended[i] <= now:
            late = now - intended[i]
            worst = max(worst, late)
            if on_fire is not None:
                on_fire(i, late)
            await fire(i)
            i += 1
            now = clock()
        if stop is not None and stop():
            return worst
        if i < n:
            await asyncio.sleep(max(intended[i] - clock(), 0.0))
    return worst


async def run_job(rec: Recorder, fire: Callable[[int], Awaitable[None]], drain_s: float) -> Part:
    """The open loop of one share: fire on schedule, stop early if clearly overloaded,
    then wait up to ``drain_s`` for the answers still due."""
    await run_schedule(rec.intended, fire, rec.fired, rec.overloaded)
    if rec.part.sent < len(rec.intended):
        rec.stop_sending()
    await rec.wait(drain_s)
    return rec.part


def respond(responder: Responder | None, event: Event) -> Event:
    """The event for a slot of the schedule: an offer response whose time has come, if
    any (it takes the slot of the generated ``event``), else ``event`` itself."""
    if responder is None:
        return event
    answer = responder.take(clock(), time.time())
    if answer is None:
        return event
    return Event(answer["event_id"], str(answer["customer_id"]).encode(), orjson.dumps(answer))


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
    workers: int = 1  # worker processes serving the phase
    role: str = ""  # floor, ladder (fixed rates, reported) or search (looking for the limit)
    shape: str = "flat"  # of the arrival rate (loadtest.shape)
    started_at: float = 0.0  # wall clock, for plots over the run
    stopped_early: bool = False  # the backlog passed the limit and the rest was not sent
    series: list[dict[str, Any]] = field(default_factory=list)  # per second (Part.series)
    procs: list[dict[str, Any]] = field(default_factory=list)  # each generator process's lateness
    hist: dict[str, Any] = field(default_factory=dict)  # the latency histogram (Histogram.to_dict)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["summary"] = self.summary.to_dict()
        return out


def phase_result(
    name: str,
    path: str,
    rate: float,
    duration_s: float,
    part: Part,
    bounds: Bounds,
    **extra: Any,
) -> Phase:
    """A phase from the (merged) part of every generator process."""
    summary = part.summary()
    drift = part.drift_ms()
    achieved = part.achieved_rate()
    ok = sustained(summary, drift, achieved, rate, bounds) and not part.stopped_early
    return Phase(
        name=name,
        path=path,
        rate=rate,
        duration_s=duration_s,
        summary=summary,
        drift_ms=round(drift, 2) if math.isfinite(drift) else drift,
        achieved_rate=round(achieved, 1),
        sustained=ok,
        client_lag_ms=round(part.late.max * 1000.0, 2),
        statuses=dict(part.statuses),
        extra={"responses": part.responses, "unexpected": part.unexpected, **extra},
        stopped_early=part.stopped_early,
        series=part.series(),
        procs=part.process_table(),
        hist=part.latency.to_dict(),
    )


def offsets(rate: float, duration_s: float, shape: str = "flat") -> list[float]:
    """Intended send times of a phase as offsets (s) from its start, computed up front."""
    n = max(int(rate * duration_s), 1)
    return shaped_schedule(n, rate, duration_s, 0.0, shape)


def plan(rate: float, duration_s: float, lead_s: float = 0.05, shape: str = "flat") -> list[float]:
    """Intended times (perf_counter clock) of a phase starting ``lead_s`` from now."""
    start = clock() + lead_s
    return [start + o for o in offsets(rate, duration_s, shape)]


def make_events(gen: TrafficGenerator, wall_times: Sequence[float]) -> list[Event]:
    """Generated events stamped with their intended wall-clock send times (so the
    worker's validation sees fresh timestamps). Generated before a phase, not during it."""
    out: list[Event] = []
    for ts in wall_times:
        ev = gen.next_event(ts)
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
        role="floor",
        started_at=time.time() - total,
        hist=Histogram().record_all(latencies).to_dict(),
    )
