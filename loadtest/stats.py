"""Pure helpers of the load test: the open-loop schedule, percentiles, and verdicts.

Latency is always measured from an event's *intended* send time on a fixed schedule,
so a client that fell behind (or a stalled system) cannot hide queueing. An event that
never got an answer counts as infinitely late. Every percentile of a :class:`Summary`
comes from an HDR-style histogram (:mod:`loadtest.hdr`: nearest rank, within 0.1% of
an observed value and never below it).

>>> schedule(4, rate=2.0, start=10.0)
[10.0, 10.5, 11.0, 11.5]
>>> percentile([1.0, 2.0, 3.0, 4.0], 50)
2.0
>>> s = summarize([0.001, 0.002, 0.003, math.inf], sent=4)
>>> s.answered, s.lost, s.p50_ms, s.max_ms
(3, 1, 2.0, inf)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loadtest.hdr import Histogram

PERCENTILES = (50.0, 95.0, 99.0, 99.9)


def schedule(n: int, rate: float, start: float) -> list[float]:
    """Intended send times of ``n`` events at a fixed ``rate`` (events/s) from ``start``."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    return [start + i / rate for i in range(n)]


def due(times: Sequence[float], first: int, now: float) -> int:
    """Index one past the last event in ``times[first:]`` that is due at ``now``.

    >>> due([0.0, 1.0, 2.0, 3.0], 1, 2.5)
    3
    """
    i = first
    while i < len(times) and times[i] <= now:
        i += 1
    return i


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported p99 was really observed).

    ``values`` need not be sorted. ``nan`` for an empty sequence.
    """
    if not values:
        return math.nan
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = sorted(values)
    rank = math.ceil(p / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class Summary:
    """Latency of one phase, in milliseconds; ``inf`` where an answer never came."""

    sent: int
    answered: int
    lost: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(latencies_s: Sequence[float], sent: int, errors: int = 0) -> Summary:
    """Summarize latencies in seconds; missing answers (``sent`` minus given) count as inf."""
    values = list(latencies_s)
    hist = Histogram().record_all(values)
    return summary_of(hist, max(sent, len(values)), errors)


def summary_of(hist: Histogram, sent: int, errors: int = 0) -> Summary:
    """The summary of one phase from its latency histogram: events sent but not in the
    histogram (lost, failed) are infinitely late.

    >>> s = summary_of(Histogram().record_all([0.001] * 999), sent=1000)
    >>> s.p99_ms, s.p999_ms, s.lost
    (1.0, 1.0, 1)
    """
    sent = max(sent, hist.count)
    ps = [hist.percentile(p, total=sent) * 1000.0 for p in PERCENTILES]
    lost = sent - hist.count
    return Summary(
        sent=sent,
        answered=hist.count,
        lost=lost,
        errors=errors,
        p50_ms=ps[0],
        p95_ms=ps[1],
        p99_ms=ps[2],
        p999_ms=ps[3],
        max_ms=(math.inf if lost else hist.max * 1000.0) if sent else math.nan,
        mean_ms=hist.mean * 1000.0,
    )


def drift_ms(samples: Sequence[tuple[float, float]], fraction: float = 0.2) -> float:
    """Growth of the median latency over a phase: p50 of the last ``fraction`` of the
    events (by intended time) minus p50 of the first, in ms. A system that keeps up has
    a drift near zero; a growing backlog shows as a drift of the order of the phase.

    ``samples`` are (intended time, latency in seconds); unanswered ones are inf.

    >>> round(drift_ms([(float(t), 0.001 * t) for t in range(10)]), 1)
    8.0
    """
    if len(samples) < 2:
        return 0.0
    ordered = sorted(samples)
    k = max(1, int(len(ordered) * fraction))
    head = Histogram().record_all(lat for _, lat in ordered[:k])
    tail = Histogram().record_all(lat for _, lat in ordered[-k:])
    return (tail.percentile(50, total=k) - head.percentile(50, total=k)) * 1000.0


@dataclass(frozen=True)
class Bounds:
    """What "sustained" means for one path (documented in BENCHMARKS.md)."""

    p99_ms: float
    max_drift_ms: float = 20.0
    min_answered: float = 0.999  # fraction of sent events answered successfully (errors are lost)


def sustained(summary: Summary, drift: float, achieved_rate: float, rate: float, bounds: Bounds) -> bool:
    """True when the system kept up with ``rate``: (nearly) every event answered without
    error, p99 within the bound, no growing backlog, and throughput close to the rate.

    >>> ok = summarize([0.002] * 1000, sent=1000)
    >>> sustained(ok, drift=0.0, achieved_rate=499.0, rate=500.0, bounds=Bounds(p99_ms=50))
    True
    >>> sustained(ok, drift=500.0, achieved_rate=499.0, rate=500.0, bounds=Bounds(p99_ms=50))
    False
    """
    if summary.sent == 0:
        return False
    good = summary.answered / summary.sent
    return (
        good >= bounds.min_answered
        and summary.p99_ms <= bounds.p99_ms
        and drift <= bounds.max_drift_ms
        and achieved_rate >= 0.95 * rate
    )


def achieved_rate(intended: Sequence[float], answered_at: Sequence[float]) -> float:
    """Answers per second over the phase: answers / (last answer - first intended send).

    >>> achieved_rate([0.0, 0.5, 1.0], [0.01, 0.51, 1.01])
    2.9702970297029703
    """
    if not intended or not answered_at:
        return 0.0
    span = max(answered_at) - min(intended)
    return len(answered_at) / span if span > 0 else math.inf


def ratio(a: float, b: float) -> float:
    """``a / b``, or nan when either is not a positive finite number."""
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return math.nan
    return a / b
