"""Arrival-rate shapes: a constant rate, or a bank's day compressed into the run.

The schedule stays open loop: every intended send time is computed up front from the
shape, before the first event goes out, so the system under test cannot slow the
arrivals down. A shape is a curve of rate multipliers over the run whose mean is 1, so
``--rate`` is the mean rate and the run sends ``rate * duration`` events whatever the
shape; the peak is ``peak(shape)`` times the mean.

>>> fixed = shaped_schedule(4, rate=2.0, duration=2.0, start=10.0, shape="flat")
>>> fixed
[10.0, 10.5, 11.0, 11.5]
>>> times = shaped_schedule(2400, rate=100.0, duration=24.0, start=0.0, shape="day")
>>> night = sum(1 for t in times if t < 5.0); evening = sum(1 for t in times if 18.0 <= t < 21.0)
>>> night < 5 * 100 * 0.25, evening > 3 * 100 * 1.5
(True, True)
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

# Relative activity of a retail bank's digital and ATM channels by hour of the day:
# a night trough, a morning ramp, a lunchtime peak, a dip, an evening peak (mobile
# banking after work), then the wind-down. Normalized to a mean of 1 where used.
DAY_HOURS = (
    0.25, 0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.60,  # 00-07
    0.90, 1.10, 1.20, 1.35, 1.70, 1.60, 1.20, 1.15,  # 08-15
    1.20, 1.40, 1.60, 1.80, 1.70, 1.30, 0.80, 0.45,  # 16-23
)  # fmt: skip
SHAPES = ("flat", "day")
STEPS = 2400  # pieces of constant rate the run is cut into (1/100 of a compressed hour)


def multiplier(shape: str, x: float) -> float:
    """Rate multiplier (mean 1 over the run) at fraction ``x`` in [0, 1) of the run.

    The day's hourly points are joined linearly (and wrap from 23:00 to midnight).

    >>> multiplier("flat", 0.3)
    1.0
    >>> round(multiplier("day", 19 / 24), 2), round(multiplier("day", 3.5 / 24), 2)
    (1.95, 0.09)
    """
    if shape == "flat":
        return 1.0
    if shape != "day":
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    hour = (x % 1.0) * 24.0
    h0 = int(hour)
    frac = hour - h0
    a, b = DAY_HOURS[h0], DAY_HOURS[(h0 + 1) % 24]
    return (a + (b - a) * frac) / _DAY_MEAN


_DAY_MEAN = sum(DAY_HOURS) / len(DAY_HOURS)  # the linear joins keep the mean of the points


def peak(shape: str) -> float:
    """Highest multiplier of a shape (the peak rate is this times the mean rate).

    >>> peak("flat"), round(peak("day"), 2)
    (1.0, 1.95)
    """
    return max(multiplier(shape, i / STEPS) for i in range(STEPS))


def shaped_schedule(n: int, rate: float, duration: float, start: float, shape: str = "flat") -> list[float]:
    """Intended send times of ``n`` events over ``duration`` seconds from ``start``, with
    the arrival rate following ``shape`` around the mean ``rate``.

    Event *i* goes out when the expected number of arrivals so far reaches *i*: the run
    is cut into pieces of constant rate, and within a piece events are evenly spaced.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive, got {rate} and {duration}")
    if shape == "flat":
        return [start + i / rate for i in range(n)]
    dt = duration / STEPS
    weights = [multiplier(shape, (k + 0.5) / STEPS) for k in range(STEPS)]
    scale = rate * duration / sum(weights)  # exactly rate * duration arrivals over the run
    per_step = [w * scale for w in weights]  # arrivals in each piece
    cum = list(itertools.accumulate(per_step, initial=0.0))
    return [start + _time_of(i, cum, per_step, dt) for i in range(n)]


def _time_of(i: float, cum: Sequence[float], per_step: Sequence[float], dt: float) -> float:
    """Time (from the start) at which the cumulative arrivals reach ``i``."""
    k = min(max(bisect.bisect_right(cum, i) - 1, 0), len(per_step) - 1)
    inside = (i - cum[k]) / per_step[k] if per_step[k] > 0 else 0.0
    return (k + min(inside, 1.0)) * dt
