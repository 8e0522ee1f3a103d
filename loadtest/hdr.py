"""An HDR-style latency histogram: log-linear buckets with a bounded relative error.

Every percentile the load test quotes comes from one of these. Values are recorded in
whole units (microseconds by default); below ``2 * 10**digits`` units each unit has its
own bucket, above it each power of two is cut into the same number of linear buckets,
so a bucket is never wider than ``10**-digits`` of the values it holds (3 digits: 0.1%,
whatever the magnitude). Memory is one counter per bucket actually used, so a phase of a
million events costs a few thousand integers, and histograms of several generator
processes (or several seconds) merge exactly by adding counters.

A percentile is nearest-rank, reported as the highest value of its bucket (as
HdrHistogram does: never below what was observed) and never above the exact maximum.
Events that were never answered count as infinitely late: pass ``total`` (events sent)
and ranks beyond the recorded count are ``inf``.

>>> h = Histogram()
>>> for ms in (1, 2, 3, 4, 100):
...     h.record(ms / 1000)
>>> h.percentile(40) * 1000, h.percentile(60) * 1000, h.percentile(100) * 1000
(2.0, 3.001, 100.0)
>>> h.percentile(99, total=10)  # five more were sent and never answered
inf
>>> g = Histogram.from_dict(h.to_dict()); g.merge(h); g.count, g.percentile(40) * 1000
(10, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class Histogram:
    """Counts of non-negative values (seconds), in log-linear buckets of ``unit`` seconds."""

    __slots__ = ("_half", "_sub", "_sub_bits", "count", "counts", "digits", "max", "min", "sum", "unit")

    def __init__(self, digits: int = 3, unit: float = 1e-6) -> None:
        if not 1 <= digits <= 5:
            raise ValueError(f"digits must be 1..5, got {digits}")
        self.digits = digits
        self.unit = unit
        # the smallest power of two above 2 * 10**digits: within it, 1-unit resolution
        self._sub_bits = math.ceil(math.log2(2 * 10**digits))
        self._sub = 1 << self._sub_bits
        self._half = self._sub >> 1
        self.counts: dict[int, int] = {}
        self.count = 0
        self.sum = 0.0  # exact, for the mean
        self.min = math.inf
        self.max = 0.0  # exact, so the reported maximum is what was observed

    def index(self, units: int) -> int:
        """Bucket of a value in whole units.

        >>> h = Histogram(digits=2)  # 256 one-unit buckets, then 128 per power of two
        >>> h.index(255), h.index(256), h.index(257), h.index(512)
        (255, 256, 256, 384)
        """
        if units < self._sub:
            return units
        shift = units.bit_length() - self._sub_bits
        return self._sub + (shift - 1) * self._half + ((units >> shift) - self._half)

    def highest(self, index: int) -> int:
        """The largest value (units) that falls in bucket ``index``.

        >>> h = Histogram(digits=2)
        >>> h.highest(255), h.highest(256), h.highest(384)
        (255, 257, 515)
        """
        if index < self._sub:
            return index
        shift = (index - self._sub) // self._half + 1
        mantissa = (index - self._sub) % self._half + self._half
        return ((mantissa + 1) << shift) - 1

    def record(self, seconds: float, n: int = 1) -> None:
        """Count ``n`` observations of ``seconds`` (negative clamps to 0; inf is refused)."""
        if not math.isfinite(seconds):
            raise ValueError("record only answered events; pass total= for the lost ones")
        seconds = max(seconds, 0.0)
        i = self.index(int(seconds / self.unit + 0.5))
        self.counts[i] = self.counts.get(i, 0) + n
        self.count += n
        self.sum += seconds * n
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def record_all(self, values: Iterable[float]) -> Histogram:
        """Record every finite value (infinite ones are left out); returns self."""
        for v in values:
            if math.isfinite(v):
                self.record(v)
        return self

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts (same digits and unit) to this histogram."""
        if (other.digits, other.unit) != (self.digits, self.unit):
            raise ValueError("histograms of different precision do not merge")
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def percentile(self, p: float, total: int | None = None) -> float:
        """Nearest-rank ``p``-th percentile in seconds; ``total`` counts unrecorded events
        as infinitely late. ``nan`` when there is nothing at all.

        >>> h = Histogram(); h.record_all([0.010] * 99 + [0.5]).percentile(99.9)
        0.5
        """
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {p}")
        n = max(total or 0, self.count)
        if n == 0:
            return math.nan
        rank = max(math.ceil(round(p / 100.0 * n, 9)), 1)  # round: 99.9% of 1000 is 999, not 999.0000001
        if rank > self.count:
            return math.inf
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(self.highest(i) * self.unit, self.max)
        return self.max  # not reached: the counts add up to self.count

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (bucket index -> count), for results files and other processes."""
        return {
            "digits": self.digits,
            "unit": self.unit,
            "count": self.count,
            "sum": self.sum,
            "min": self.min if self.count else None,
            "max": self.max,
            "counts": [[i, c] for i, c in sorted(self.counts.items())],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        h = cls(digits=int(d["digits"]), unit=float(d["unit"]))
        h.counts = {int(i): int(c) for i, c in d["counts"]}
        h.count = int(d["count"])
        h.sum = float(d["sum"])
        h.min = math.inf if d.get("min") is None else float(d["min"])
        h.max = float(d["max"])
        return h


def merged(histograms: Iterable[Histogram]) -> Histogram:
    """One histogram holding the counts of all of them.

    >>> a, b = Histogram().record_all([0.001, 0.002]), Histogram().record_all([0.003])
    >>> m = merged([a, b]); m.count, m.max
    (3, 0.003)
    """
    out = Histogram()
    for h in histograms:
        if not out.count and (h.digits, h.unit) != (out.digits, out.unit):
            out = Histogram(h.digits, h.unit)
        out.merge(h)
    return out
