"""The phases of a rebalance run (loadtest.rebalance), found in the workers' own logs, and
the latency of each: pure functions, no I/O but reading the logs.

A worker logs (JSON lines, ``ts`` in ISO 8601) ``Heartbeat failed ... because it is
rebalancing`` when the group coordinator has begun a rebalance, and ``generation id N``
(faust.tables.recovery) when it takes up its partitions of generation ``N``. A rebalance
window runs from its cause (the first failed heartbeat after a worker joins; the signal
that stops one) to the moment the last member took up the next generation.

>>> lines = [LogLine(10.0, "w1", "Heartbeat failed for group g because it is rebalancing"),
...          LogLine(14.5, "w1", "generation id 4 app consumers id 4"),
...          LogLine(15.0, "w2", "generation id 4 app consumers id 4")]
>>> first_heartbeat_failure(lines, after=9.0), rebalance_end(lines, after=10.0)
(10.0, (15.0, 4))
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import orjson

from loadtest.stats import percentile
from loadtest.tables import table

_GENERATION = re.compile(r"generation id (\d+) ")
_HEARTBEAT_FAILED = "because it is rebalancing"


class LogLine(NamedTuple):
    at: float  # seconds since the epoch
    worker: str
    message: str


class Answer(NamedTuple):
    """A decision record read back from ``decisions.<channel>``."""

    event_id: str
    decision_id: str
    partition: int
    at: float  # the record's timestamp (when the worker produced it), seconds since the epoch


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # wall clock, seconds since the epoch
    end: float


def read_log(path: Path) -> list[LogLine]:
    """A worker's JSON log lines (anything else in the file, like a traceback, is skipped)."""
    out = []
    for raw in path.read_bytes().splitlines():
        try:
            rec = orjson.loads(raw)
            out.append(LogLine(datetime.fromisoformat(rec["ts"]).timestamp(), path.stem, rec["message"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return out


def merged_logs(paths: Iterable[Path]) -> list[LogLine]:
    return sorted((line for p in paths if p.exists() for line in read_log(p)), key=lambda x: x.at)


def generations(lines: Iterable[LogLine]) -> list[tuple[float, str, int]]:
    """(time, worker, generation) each time a worker took up a generation's partitions."""
    out = []
    for line in lines:
        m = _GENERATION.search(line.message)
        if m:
            out.append((line.at, line.worker, int(m.group(1))))
    return out


def first_heartbeat_failure(lines: Iterable[LogLine], after: float) -> float | None:
    return next((x.at for x in lines if x.at >= after and _HEARTBEAT_FAILED in x.message), None)


def rebalance_end(lines: Iterable[LogLine], after: float) -> tuple[float, int] | None:
    """When the last member took up the first generation assigned after ``after``, and
    that generation; None if none was."""
    gens = [(at, g) for at, _, g in generations(lines) if at >= after]
    if not gens:
        return None
    first = min(g for _, g in gens)
    return max(at for at, g in gens if g == first), first


def settled(lines: Sequence[LogLine], workers: int, quiet_s: float, now: float) -> bool:
    """True once ``workers`` members hold the same, newest generation and no heartbeat
    has failed for ``quiet_s``: the group is stable and traffic can start."""
    latest: dict[str, int] = {}
    for _, worker, gen in generations(lines):
        latest[worker] = gen
    if len(latest) < workers or len(set(latest.values())) != 1:
        return False
    last_failure = max((x.at for x in lines if _HEARTBEAT_FAILED in x.message), default=0.0)
    last_assign = max(at for at, _, _ in generations(lines))
    return now - max(last_failure, last_assign) >= quiet_s


def latencies_ms(sent: dict[str, float], answers: Iterable[Answer]) -> dict[str, float]:
    """Each event's first decision record's time minus the event's intended send time."""
    first: dict[str, float] = {}
    for a in answers:
        if a.event_id in sent and (a.event_id not in first or a.at < first[a.event_id]):
            first[a.event_id] = a.at
    return {eid: (at - sent[eid]) * 1000.0 for eid, at in first.items()}


def longest_gap(times: Sequence[float], start: float, end: float) -> float:
    """The longest interval between consecutive ``times`` (sorted) that overlaps
    [start, end), clipped to it: how long nothing came out during the phase.

    >>> longest_gap([0.0, 1.0, 4.0, 4.5], 0.5, 10.0)
    5.5
    """
    inside = [start, *(t for t in times if start < t < end), end]
    # the gap running into the phase from the last record before it counts from start
    return max((b - a for a, b in itertools.pairwise(inside)), default=0.0)


def phase_rows(phases: Sequence[Phase], sent: dict[str, float], answers: Sequence[Answer], t0: float) -> str:
    """The Markdown table: per phase (events by intended send time), latency of the first
    decision per event, the longest pause of all output and of one partition, and
    repeated decision records on the topic."""
    lat = latencies_ms(sent, answers)
    times = sorted(a.at for a in answers)
    by_partition: dict[int, list[float]] = defaultdict(list)
    for a in answers:
        by_partition[a.partition].append(a.at)
    for ts in by_partition.values():
        ts.sort()
    seen: dict[str, int] = defaultdict(int)
    for a in answers:
        seen[a.event_id] += 1
    rows = []
    for ph in phases:
        ids = [eid for eid, at in sent.items() if ph.start <= at < ph.end]
        values = [lat[e] for e in ids if e in lat]
        stall = max((longest_gap(ts, ph.start, ph.end) for ts in by_partition.values()), default=0.0)
        rows.append(
            [
                ph.name,
                f"{ph.start - t0:.1f}-{ph.end - t0:.1f}",
                len(ids),
                _ms(percentile(values, 50)),
                _ms(percentile(values, 99)),
                _ms(max(values, default=math.nan)),
                f"{longest_gap(times, ph.start, ph.end):.2f}",
                f"{stall:.2f}",
                sum(seen[e] - 1 for e in ids if seen[e] > 1),
            ]
        )
    header = ["phase", "window (s)", "events", "p50 ms", "p99 ms", "max ms",
              "longest pause, all (s)", "longest stall, one partition (s)", "repeats on topic"]  # fmt: skip
    return table(header, rows)


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"
