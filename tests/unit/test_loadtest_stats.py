"""The load test's pure helpers: schedule, percentiles, verdicts (no clocks, no I/O)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.stats import (
    Bounds,
    achieved_rate,
    drift_ms,
    due,
    percentile,
    ratio,
    schedule,
    summarize,
    sustained,
)


def test_schedule_is_fixed_rate_from_start() -> None:
    times = schedule(5, rate=1000.0, start=2.0)
    assert times[0] == 2.0
    assert [round(b - a, 9) for a, b in itertools.pairwise(times)] == [0.001] * 4


def test_schedule_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        schedule(3, rate=0.0, start=0.0)


def test_due_counts_events_whose_time_has_come() -> None:
    times = [1.0, 2.0, 3.0]
    assert due(times, 0, 0.5) == 0
    assert due(times, 0, 2.0) == 2
    assert due(times, 2, 10.0) == 3


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100
    assert percentile(values, 100) == 100
    assert percentile([7.0], 50) == 7.0
    assert math.isnan(percentile([], 50))


def test_percentile_does_not_need_sorted_input() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.floats(0.1, 100))
def test_percentile_is_an_observed_value_within_bounds(values: list[float], p: float) -> None:
    got = percentile(values, p)
    assert got in values
    assert min(values) <= got <= max(values)


def test_unanswered_events_count_as_infinitely_late() -> None:
    s = summarize([0.001] * 98, sent=100)
    assert s.answered == 98 and s.lost == 2
    assert s.p50_ms == pytest.approx(1.0)
    assert math.isinf(s.p99_ms) and math.isinf(s.max_ms)


def test_summary_in_milliseconds() -> None:
    s = summarize([0.001, 0.002, 0.003, 0.004], sent=4)
    assert (s.p50_ms, s.p99_ms, s.max_ms) == pytest.approx((2.0, 4.0, 4.0))
    assert s.mean_ms == pytest.approx(2.5)


def test_drift_shows_a_growing_backlog() -> None:
    steady = [(float(t), 0.005) for t in range(100)]
    growing = [(float(t), 0.005 + 0.01 * t) for t in range(100)]
    assert drift_ms(steady) == 0.0
    assert drift_ms(growing) > 500


def test_sustained_needs_answers_bounds_and_throughput() -> None:
    bounds = Bounds(p99_ms=50.0, max_drift_ms=20.0)
    good = summarize([0.004] * 1000, sent=1000)
    assert sustained(good, 0.0, 1000.0, 1000.0, bounds)
    assert not sustained(good, 0.0, 800.0, 1000.0, bounds)  # fell behind the rate
    assert not sustained(good, 30.0, 1000.0, 1000.0, bounds)  # backlog grows
    slow = summarize([0.004] * 980 + [0.2] * 20, sent=1000)
    assert not sustained(slow, 0.0, 1000.0, 1000.0, bounds)  # p99 over the bound
    lossy = summarize([0.004] * 990, sent=1000)
    assert not sustained(lossy, 0.0, 1000.0, 1000.0, bounds)


def test_achieved_rate_and_ratio() -> None:
    assert achieved_rate([0.0, 1.0], [0.5, 2.0]) == pytest.approx(1.0)
    assert achieved_rate([], []) == 0.0
    assert ratio(6.0, 2.0) == 3.0
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.inf, 1.0))
