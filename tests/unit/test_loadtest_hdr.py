"""The load test's HDR-style histogram and the per-process parts built on it (no I/O)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.hdr import Histogram, merged
from loadtest.part import Part
from loadtest.part import merged as merged_parts
from loadtest.stats import percentile

latencies = st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=1, max_size=300)


@given(latencies, st.floats(0.1, 100.0))
def test_percentile_within_relative_error_and_never_below_observed(values: list[float], p: float) -> None:
    exact = percentile(values, p)  # nearest rank, the value observed
    got = Histogram(digits=3).record_all(values).percentile(p)
    # never below what was observed (up to the microsecond rounding), never above the max,
    # within 0.1% (one bucket) above it
    assert got >= exact - 0.5e-6
    assert got <= max(values)
    assert got <= exact * (1 + 1 / 1024) + 1e-6


@given(latencies, latencies)
def test_merging_equals_recording_everything_in_one(a: list[float], b: list[float]) -> None:
    one = Histogram().record_all(a + b)
    two = merged([Histogram().record_all(a), Histogram().record_all(b)])
    assert one.counts == two.counts and one.count == two.count and one.max == two.max
    for p in (50, 99, 99.9, 100):
        assert one.percentile(p) == two.percentile(p)


def test_two_digits_bound_the_error_at_one_percent() -> None:
    h = Histogram(digits=2)
    for ms in (1.0, 12.3, 123.4, 1234.5, 9999.0):
        h.record(ms / 1000)
        top = h.highest(h.index(round(ms * 1000)))
        assert ms * 1000 <= top <= ms * 1000 * 1.01


def test_lost_events_are_infinitely_late() -> None:
    h = Histogram().record_all([0.001] * 990)
    assert h.percentile(99, total=1000) == pytest.approx(0.001)
    assert math.isinf(h.percentile(99.9, total=1000))
    assert math.isnan(Histogram().percentile(50))
    with pytest.raises(ValueError):
        h.record(math.inf)


def test_round_trip_through_a_dict_keeps_everything() -> None:
    h = Histogram().record_all([0.0005, 0.002, 0.75, 3.0])
    back = Histogram.from_dict(h.to_dict())
    assert (back.counts, back.count, back.sum, back.min, back.max) == (h.counts, h.count, h.sum, h.min, h.max)
    with pytest.raises(ValueError):
        back.merge(Histogram(digits=2))


def test_memory_is_bounded_by_buckets_not_events() -> None:
    h = Histogram(digits=2)
    for i in range(100_000):
        h.record(0.001 + (i % 5000) * 1e-5)  # 1 to 51 ms
    assert h.count == 100_000 and len(h.counts) < 1000


def _part(proc: int, start: float, latencies: list[float | None], late: float = 0.0) -> Part:
    part = Part(start=start, proc=proc)
    for i, lat in enumerate(latencies):
        intended = start + i * 0.25
        part.fired(intended, late)
        if lat is None:
            part.failed("503")
        else:
            part.answered_at(intended, intended + lat)
    return part


def test_parts_of_several_processes_merge_into_one_phase() -> None:
    a = _part(0, 10.0, [0.002] * 8)
    b = _part(1, 10.0, [0.004] * 7 + [None], late=0.05)
    m = merged_parts([a, b])
    s = m.summary()
    assert (s.sent, s.answered, s.lost, s.errors) == (16, 15, 1, 1)
    assert s.p50_ms == pytest.approx(2.0, rel=1e-3) and s.p99_ms == math.inf
    assert [p["proc"] for p in m.procs] == [0, 1] and m.procs[1]["late_max_ms"] == 50.0
    assert m.achieved_rate() == pytest.approx(15 / (1.75 + 0.002), rel=1e-6)  # to the last answer
    series = m.series()
    assert [r["sent"] for r in series] == [8, 8]
    assert series[1]["p99_ms"] is not None and math.isinf(series[1]["p99_ms"])  # the lost one
    # the inputs are left as they were
    assert a.sent == 8 and not a.procs


def test_part_crosses_a_process_boundary_intact() -> None:
    a = _part(3, 5.0, [0.001, 0.003, None])
    a.last_hop.record(0.004)
    back = Part.from_wire(a.to_wire())
    assert back.summary() == a.summary()
    assert back.series() == a.series()
    assert back.own_lateness() == a.own_lateness() and back.last_hop.count == 1


def test_drift_shows_a_backlog_growing_over_the_phase() -> None:
    steady = _part(0, 0.0, [0.005] * 40)
    growing = _part(0, 0.0, [0.005 + 0.05 * i for i in range(40)])
    assert steady.drift_ms() == pytest.approx(0.0, abs=1e-6)
    assert growing.drift_ms() > 1000
