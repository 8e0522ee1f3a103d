"""Read a few counters from a worker's ``/metrics`` page (Prometheus text format).

>>> page = 'a_total{path="kafka"} 3.0\\n# HELP x\\nb_sum 0.5\\nb_count 2.0\\n'
>>> m = parse(page)
>>> m[('a_total', 'path="kafka"')], m[('b_count', '')]
(3.0, 2.0)
>>> delta(parse('b_sum 1.5\\nb_count 5'), m)[('b_sum', '')]
1.0
>>> added([{('c', ''): 1.0}, {('c', ''): 2.0, ('d', ''): 1.0}])
{('c', ''): 3.0, ('d', ''): 1.0}
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

Samples = dict[tuple[str, str], float]


def parse(text: str) -> Samples:
    """``{(metric name, label text): value}`` for every sample line."""
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if "{" in head:
            name, _, labels = head.partition("{")
            labels = labels.rstrip("}")
        else:
            name, labels = head, ""
        try:
            out[(name, labels)] = float(value)
        except ValueError:
            continue
    return out


def delta(after: Samples, before: Samples) -> Samples:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def added(many: Iterable[Samples]) -> Samples:
    """Samples of several workers summed (counters and histogram buckets add up)."""
    out: Samples = {}
    for samples in many:
        for k, v in samples.items():
            out[k] = out.get(k, 0.0) + v
    return out


def label(labels: str, name: str) -> str | None:
    """The value of one label in a sample's label text.

    >>> label('topic="a.b",partition="3"', "partition")
    '3'
    """
    found = re.search(rf'(?:^|,){re.escape(name)}="([^"]*)"', labels)
    return found.group(1) if found else None


def total(samples: Samples, name: str, label_part: str = "") -> float:
    """Sum of the samples of ``name`` whose labels contain ``label_part``."""
    return sum(v for (n, labels), v in samples.items() if n == name and label_part in labels)


def mean_ms(samples: Samples, histogram: str, label_part: str = "") -> float:
    """Mean of a histogram over the window in ms (``nan`` when nothing was observed)."""
    count = total(samples, histogram + "_count", label_part)
    if count <= 0:
        return math.nan
    return total(samples, histogram + "_sum", label_part) / count * 1000.0


def quantile_ms(samples: Samples, histogram: str, q: float, label_part: str = "") -> float:
    """Upper bound (ms) of the bucket holding quantile ``q``, summed over the series whose
    labels contain ``label_part`` (Prometheus-style buckets, no interpolation: as coarse
    as the worker's buckets; ``inf`` if it lies in the last, open one).

    >>> s = parse('h_bucket{le="0.01",path="kafka"} 5\\nh_bucket{le="0.05",path="kafka"} 9\\n'
    ...           'h_bucket{le="+Inf",path="kafka"} 10\\n')
    >>> quantile_ms(s, "h", 0.5, 'path="kafka"'), quantile_ms(s, "h", 0.99, 'path="kafka"')
    (10.0, inf)
    """
    buckets: dict[float, float] = {}
    for (name, labels), value in samples.items():
        if name == histogram + "_bucket" and label_part in labels:
            le = label(labels, "le")
            if le is not None:
                bound = float(le)
                buckets[bound] = buckets.get(bound, 0.0) + value
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    return next(bound * 1000.0 for bound, count in ordered if count >= rank)
