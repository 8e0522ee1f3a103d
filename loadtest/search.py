"""The search for the highest sustainable rate: rising rates, then bisection.

Every phase measured for one path and one number of workers feeds the same search: the
fixed-rate ladder first (rising rates, stopped once a rate is clearly not sustained),
then short bisection steps between the highest rate sustained and the lowest one not.
If even the lowest rate fails, the search halves it; if every rate holds, it doubles.
A rate counts only if every lower rate measured was sustained too, so a lucky phase
above a failure cannot raise the result.

>>> s = Search(lowest=25, highest=4000, precision=0.1)
>>> for rate, ok in ((100, True), (200, True), (500, False)):
...     s.record(rate, ok)
>>> s.next()
350.0
>>> s.record(350, False); s.next()
280.0
>>> s.record(280, True); s.next(), s.best
(320.0, 280.0)
>>> s.record(320, True); s.next() is None, s.best, s.bracket()
(True, 320.0, (320.0, 350.0))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def nice(rate: float) -> float:
    """A rate rounded to two significant digits (what a person would pick).

    >>> nice(162.5), nice(1625.0), nice(37.0)
    (160.0, 1600.0, 37.0)
    """
    if rate <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(rate)) - 1)
    return float(round(rate / scale) * scale)


@dataclass
class Search:
    lowest: float = 25.0  # below this the search gives up: nothing sustainable
    highest: float = 5000.0  # above this it stops doubling
    precision: float = 0.1  # done once the bracket is narrower than this share of its low end
    results: dict[float, bool] = field(default_factory=dict)

    def record(self, rate: float, sustained: bool) -> None:
        # a rate measured twice counts as sustained only if it was both times
        self.results[float(rate)] = self.results.get(float(rate), True) and sustained

    @property
    def best(self) -> float:
        """The highest rate sustained with every lower measured rate sustained (0: none)."""
        out = 0.0
        for rate in sorted(self.results):
            if not self.results[rate]:
                break
            out = rate
        return out

    @property
    def failed(self) -> float:
        """The lowest rate not sustained (inf: none yet)."""
        return min((r for r, ok in self.results.items() if not ok), default=math.inf)

    def bracket(self) -> tuple[float, float]:
        return self.best, self.failed

    def next(self) -> float | None:
        """The next rate to try, or None when the answer is known well enough."""
        ok, bad = self.bracket()
        if math.isinf(bad):  # everything held so far: go higher
            rate = nice(ok * 2) if ok else self.lowest
            return rate if rate <= self.highest and rate not in self.results else None
        if not ok:  # even the lowest failed: go lower
            rate = nice(bad / 2)
            return rate if rate >= self.lowest and rate not in self.results else None
        if bad - ok <= self.precision * ok:
            return None
        rate = nice((ok + bad) / 2)
        return rate if ok < rate < bad and rate not in self.results else None
