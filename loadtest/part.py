"""What one generator process measured in one phase, in a form that merges exactly.

Each process keeps HDR histograms (:mod:`loadtest.hdr`) rather than raw latencies: one
for the whole phase, one per second of intended send time (the time series the plots
and the drift come from), and one of its own lateness in firing events. Parts from
several processes (or from one) merge by adding counters, so ``--procs N`` reports
exactly what one process would have, had it kept up.

Times are ``time.perf_counter()`` seconds: on Linux that is CLOCK_MONOTONIC, shared by
every process of the machine, so a part's ``start`` means the same in all of them.

>>> a, b = Part(start=100.0, proc=0), Part(start=100.0, proc=1)
>>> for i in range(10):
...     a.fired(100.0 + i / 10, late=0.0001)
...     a.answered_at(100.0 + i / 10, 100.0 + i / 10 + 0.002)
>>> b.fired(100.5, late=0.030); b.failed("503")
>>> m = merged([a, b]); s = m.summary()
>>> (s.sent, s.answered, s.lost, s.errors, round(s.p50_ms, 3))
(11, 10, 1, 1, 2.0)
>>> [p["late_max_ms"] for p in m.procs], m.series()[0]["sent"]
([0.1, 30.0], 11)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from loadtest.hdr import Histogram
from loadtest.stats import Summary, summary_of


@dataclass
class Part:
    start: float  # the phase's first intended send time (all processes share it)
    proc: int = 0  # which generator process
    sent: int = 0
    answered: int = 0
    errors: int = 0
    unexpected: int = 0  # answers to events not in this phase (stragglers, duplicates)
    responses: int = 0  # offer responses sent in slots of the schedule
    stopped_early: bool = False  # the backlog grew past the limit: the rest was not sent
    statuses: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)
    by_second: dict[int, Histogram] = field(default_factory=dict)  # by intended second
    sent_by_second: Counter[int] = field(default_factory=Counter)
    answered_by_second: Counter[int] = field(default_factory=Counter)  # by arrival second
    last_answer: float = 0.0
    late: Histogram = field(default_factory=Histogram)  # how late this process fired
    last_hop: Histogram = field(default_factory=Histogram)  # Kafka: answer's broker timestamp -> received
    procs: list[dict[str, Any]] = field(default_factory=list)  # filled when merged

    # ---- recording (one process) -------------------------------------------------

    def fired(self, intended: float, late: float) -> None:
        self.sent += 1
        self.sent_by_second[int(intended - self.start)] += 1
        self.late.record(late)

    def answered_at(self, intended: float, at: float) -> None:
        latency = at - intended
        self.answered += 1
        self.statuses["ok"] += 1
        self.latency.record(latency)
        second = int(intended - self.start)
        hist = self.by_second.get(second)
        if hist is None:
            hist = self.by_second[second] = Histogram()
        hist.record(latency)
        self.answered_by_second[int(at - self.start)] += 1
        self.last_answer = max(self.last_answer, at)

    def failed(self, status: str) -> None:
        self.errors += 1
        self.statuses[status] += 1

    def own_lateness(self) -> dict[str, Any]:
        """This process's lateness in firing its events (its drift from the schedule)."""
        return {
            "proc": self.proc,
            "sent": self.sent,
            "late_p50_ms": round(self.late.percentile(50) * 1000.0, 2) if self.sent else 0.0,
            "late_p99_ms": round(self.late.percentile(99) * 1000.0, 2) if self.sent else 0.0,
            "late_max_ms": round(self.late.max * 1000.0, 2),
        }

    # ---- merging and results -----------------------------------------------------

    def merge(self, other: Part) -> None:
        if not self.procs:
            self.procs = [self.own_lateness()]
        self.procs += other.procs or [other.own_lateness()]
        self.sent += other.sent
        self.answered += other.answered
        self.errors += other.errors
        self.unexpected += other.unexpected
        self.responses += other.responses
        self.stopped_early |= other.stopped_early
        self.statuses.update(other.statuses)
        self.latency.merge(other.latency)
        for s, h in other.by_second.items():
            self.by_second.setdefault(s, Histogram()).merge(h)
        self.sent_by_second.update(other.sent_by_second)
        self.answered_by_second.update(other.answered_by_second)
        self.last_answer = max(self.last_answer, other.last_answer)
        self.late.merge(other.late)
        self.last_hop.merge(other.last_hop)

    def summary(self) -> Summary:
        return summary_of(self.latency, self.sent, self.errors)

    def drift_ms(self, fraction: float = 0.2) -> float:
        """Growth of the median latency over the phase: p50 of the events of the last
        seconds holding ``fraction`` of the events minus that of the first (unanswered
        events count as infinitely late). Near zero when the system keeps up.

        >>> p = Part(start=0.0)
        >>> for t in range(10):
        ...     p.fired(float(t), 0.0); p.answered_at(float(t), t + 0.001 * (1 + t))
        >>> round(p.drift_ms(), 1)
        8.0
        """
        seconds = sorted(self.sent_by_second)
        if len(seconds) < 2:
            return 0.0
        head, tail = self._edge(seconds, fraction), self._edge(seconds[::-1], fraction)
        return (tail[0].percentile(50, total=tail[1]) - head[0].percentile(50, total=head[1])) * 1000.0

    def _edge(self, seconds: list[int], fraction: float) -> tuple[Histogram, int]:
        """Merged latency of the first seconds (in the order given) holding ``fraction``."""
        want = max(1, int(self.sent * fraction))
        hist, n = Histogram(), 0
        for s in seconds:
            if s in self.by_second:
                hist.merge(self.by_second[s])
            n += self.sent_by_second[s]
            if n >= want:
                break
        return hist, n

    def achieved_rate(self) -> float:
        """Answers per second from the first intended send to the last answer."""
        span = self.last_answer - self.start
        if not self.answered:
            return 0.0
        return self.answered / span if span > 0 else math.inf

    def series(self) -> list[dict[str, Any]]:
        """Per second of the phase: events due, answers that arrived, and the latency
        percentiles (ms) of the events due in that second (``inf``: some never answered)."""
        last = max([*self.sent_by_second, *self.answered_by_second], default=-1)
        out = []
        for s in range(last + 1):
            hist, sent = self.by_second.get(s) or Histogram(), self.sent_by_second.get(s, 0)
            row: dict[str, Any] = {"t": s, "sent": sent, "answers": self.answered_by_second.get(s, 0)}
            for name, p in (("p50_ms", 50), ("p99_ms", 99), ("p999_ms", 99.9)):
                row[name] = round(hist.percentile(p, total=sent) * 1000.0, 3) if sent else None
            out.append(row)
        return out

    def process_table(self) -> list[dict[str, Any]]:
        return self.procs or [self.own_lateness()]

    # ---- crossing a process boundary ---------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not isinstance(v, Histogram | dict)}
        out["statuses"] = dict(self.statuses)
        out["sent_by_second"] = dict(self.sent_by_second)
        out["answered_by_second"] = dict(self.answered_by_second)
        out["latency"] = self.latency.to_dict()
        out["late"] = self.late.to_dict()
        out["last_hop"] = self.last_hop.to_dict()
        out["by_second"] = {s: h.to_dict() for s, h in self.by_second.items()}
        return out

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Part:
        part = cls(start=d["start"], proc=d["proc"])
        for k in ("sent", "answered", "errors", "unexpected", "responses", "stopped_early", "last_answer"):
            setattr(part, k, d[k])
        part.procs = list(d.get("procs") or [])
        part.statuses = Counter(d["statuses"])
        part.sent_by_second = Counter(d["sent_by_second"])
        part.answered_by_second = Counter(d["answered_by_second"])
        part.latency = Histogram.from_dict(d["latency"])
        part.late = Histogram.from_dict(d["late"])
        part.last_hop = Histogram.from_dict(d["last_hop"])
        part.by_second = {int(s): Histogram.from_dict(h) for s, h in d["by_second"].items()}
        return part


def merged(parts: Iterable[Part]) -> Part:
    """One part from several processes' parts of the same phase."""
    items = list(parts)
    if not items:
        raise ValueError("nothing to merge")
    out = Part.from_wire(items[0].to_wire())  # a copy: the inputs stay as they were
    for other in items[1:]:
        out.merge(other)
    if not out.procs:
        out.procs = [out.own_lateness()]
    return out
