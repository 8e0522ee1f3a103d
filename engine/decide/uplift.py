"""The statistics of offer reports: intervals for a rate and for the difference of two
rates (uplift), and off-policy estimates from logged propensities. Pure; the standard
library's ``statistics.NormalDist`` gives the quantile, nothing else is needed.

Intervals are 95 % by default (``z`` = 1.96). Every estimate says how many units it
rests on, and an off-policy estimate warns in plain words when that is too few.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054
MIN_DECISIONS = 1000  # an off-policy estimate on fewer decisions is flagged
MIN_WEIGHTED = 100  # ... and on fewer decisions with a non-zero weight (or effective sample size)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (Newcombe 1998, method 3); (0, 1)
    when ``n`` is 0. Unlike the Wald interval it stays within [0, 1] and is sound for
    small ``k``. Newcombe's own example, 81 of 263:

    >>> [round(x, 4) for x in wilson(81, 263)]
    [0.2553, 0.3662]
    >>> wilson(0, 0)
    (0.0, 1.0)
    """
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Difference:
    """``p1 - p2`` with its interval; ``n1``, ``n2``: the units each rate rests on."""

    diff: float | None
    low: float | None
    high: float | None
    n1: int
    n2: int

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {"uplift": _r(self.diff), "low": _r(self.low), "high": _r(self.high),
                "excludes_zero": self.excludes_zero}  # fmt: skip


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> Difference:
    """The difference of two independent proportions ``k1/n1 - k2/n2`` with Newcombe's
    hybrid score interval (Newcombe 1998, method 10: built from the two Wilson intervals;
    sound for small counts and rates near 0, where the Wald interval is not). Newcombe's
    example, 56 of 70 against 48 of 80:

    >>> d = newcombe(56, 70, 48, 80)
    >>> round(d.diff, 4), round(d.low, 4), round(d.high, 4), d.excludes_zero
    (0.2, 0.0524, 0.3339, True)
    >>> newcombe(5, 10, 0, 0).diff is None  # nothing to compare with
    True
    """
    if n1 <= 0 or n2 <= 0:
        return Difference(None, None, None, n1, n2)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Difference(d, low, high, n1, n2)


def off_policy(samples: Iterable[tuple[float, float]], z: float = Z95,
               min_decisions: int = MIN_DECISIONS) -> dict[str, Any]:  # fmt: skip
    """Off-policy estimate of the mean reward per decision another policy would have
    earned, from ``(weight, reward)`` per logged decision, the weight being the target
    policy's probability of the action logged over the logged probability of it.

    Inverse propensity (IPS: mean of weight x reward; unbiased, normal interval from the
    sample variance) and self-normalised (SNIPS: sum of weight x reward over sum of
    weights; a little biased, far less variable; delta-method interval). ``ess``: the
    effective sample size (sum of weights squared over sum of squared weights): how many
    decisions the estimate is really worth. A hand-checked case:

    >>> est = off_policy([(2.0, 1.0), (2.0, 0.0), (0.0, 1.0), (0.0, 0.0)])
    >>> est["ips"]["estimate"], est["snips"]["estimate"], est["decisions"], est["weighted"], est["ess"]
    (0.5, 0.5, 4, 2, 2.0)
    >>> est["warning"].startswith("rests on only 4 decisions")
    True
    """
    ws: list[float] = []
    rs: list[float] = []
    for w, r in samples:
        ws.append(float(w))
        rs.append(float(r))
    n = len(ws)
    weighted = sum(1 for w in ws if w > 0)
    sum_w = sum(ws)
    sum_w2 = sum(w * w for w in ws)
    ess = (sum_w * sum_w / sum_w2) if sum_w2 > 0 else 0.0
    out: dict[str, Any] = {"decisions": n, "weighted": weighted, "ess": round(ess, 3),
                           "ips": _empty(), "snips": _empty(), "logged": _empty()}  # fmt: skip
    if n:
        wr = [w * r for w, r in zip(ws, rs, strict=True)]
        ips = sum(wr) / n
        out["ips"] = _interval(ips, _stdev(wr) / math.sqrt(n), z)
        logged = sum(rs) / n
        out["logged"] = _interval(logged, _stdev(rs) / math.sqrt(n), z)
        if sum_w > 0:
            snips = sum(wr) / sum_w
            se = math.sqrt(sum((w * (r - snips)) ** 2 for w, r in zip(ws, rs, strict=True))) / sum_w
            out["snips"] = _interval(snips, se, z)
    out["warning"] = _warning(n, weighted, ess, min_decisions)
    return out


def _warning(n: int, weighted: int, ess: float, min_decisions: int) -> str | None:
    if n < min_decisions:
        return (f"rests on only {n} decisions (fewer than {min_decisions}): too few to trust; "
                "read it as a direction, not a number")  # fmt: skip
    if weighted < MIN_WEIGHTED or ess < MIN_WEIGHTED:
        return (f"only {weighted} of {n} decisions are ones the other setting would also have made "
                f"(effective sample size {ess:.0f}): too few to trust")  # fmt: skip
    return None


def _stdev(xs: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mean = sum(xs) / n
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))


def _interval(estimate: float, se: float, z: float) -> dict[str, float | None]:
    return {"estimate": _r(estimate), "low": _r(estimate - z * se), "high": _r(estimate + z * se)}


def _empty() -> dict[str, float | None]:
    return {"estimate": None, "low": None, "high": None}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)
