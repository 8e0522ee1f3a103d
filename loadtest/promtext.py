"""Read a few counters from a worker's ``/metrics`` page (Prometheus text format).

>>> page = 'a_total{path="kafka"} 3.0\\n# HELP x\\nb_sum 0.5\\nb_count 2.0\\n'
>>> m = parse(page)
>>> m[('a_total', 'path="kafka"')], m[('b_count', '')]
(3.0, 2.0)
>>> delta(parse('b_sum 1.5\\nb_count 5'), m)[('b_sum', '')]
1.0
"""

from __future__ import annotations

import math

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


def total(samples: Samples, name: str, label_part: str = "") -> float:
    """Sum of the samples of ``name`` whose labels contain ``label_part``."""
    return sum(v for (n, labels), v in samples.items() if n == name and label_part in labels)


def mean_ms(samples: Samples, histogram: str, label_part: str = "") -> float:
    """Mean of a histogram over the window in ms (``nan`` when nothing was observed)."""
    count = total(samples, histogram + "_count", label_part)
    if count <= 0:
        return math.nan
    return total(samples, histogram + "_sum", label_part) / count * 1000.0
