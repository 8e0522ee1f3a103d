"""Progressive (test-then-train) quality of an online model, exact over a recent window.

Each time a label arrives, the score the model gave *before* learning from it is
recorded with the label (and, when known, how long the label took to arrive). The last
``window`` pairs are kept; ROC AUC, PR AUC (average precision), calibration and log loss
are computed exactly over them on demand. River's ``metrics.ROCAUC`` approximates the
curve with 10 thresholds and understates AUC on rare, well-ranked targets, which is the
common case here, so it is not used.

>>> q = ProgressiveQuality(window=100)
>>> for y, p in [(False, 0.1), (False, 0.4), (True, 0.35), (True, 0.8)]:
...     q.record(y, p, delay_s=60.0)
>>> q.roc_auc()
0.75
>>> round(q.pr_auc(), 4)
0.8333
>>> q.summary()["label_delay_s"]
{'mean': 60.0, 'p50': 60.0, 'p90': 60.0}

Without both classes in the window, ROC AUC is undefined rather than a made-up number:

>>> q = ProgressiveQuality()
>>> q.record(False, 0.02)
>>> q.roc_auc() is None and q.pr_auc() is None
True

``QualityMetrics`` exports summaries to Prometheus; ``models.report`` prints them for a
human (``beacon models report``, ``beacon replay``).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import deque
from collections.abc import Mapping
from itertools import groupby
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ProgressiveQuality", "QualityMetrics"]

# Clipping for log loss, so one confident mistake costs a lot but never infinity.
_EPS = 1e-15


class ProgressiveQuality:
    """Scores and labels of one model over a bounded recent window, plus lifetime counts.

    ``record`` is O(1). ``roc_auc``, ``pr_auc``, ``calibration``, ``ece`` and
    ``log_loss`` read the window (AUCs sort it: O(n log n)); ``summary`` sorts it once
    for both AUCs. ``labels``, ``positives`` and the mean label delay are lifetime
    values; everything else describes the window. The object pickles with its window.

    A label delay is the time from the decision to its label. A negative delay (clock
    skew between systems) counts as 0; ``None`` means unknown and is left out.

    >>> q = ProgressiveQuality(window=3)
    >>> for i in range(5):
    ...     q.record(i % 2 == 0, 0.1 * i)
    >>> len(q), q.labels, q.positives
    (3, 5, 3)
    """

    __slots__ = ("_delay_n", "_delay_sum", "_delays", "_pairs", "labels", "positives", "window")

    def __init__(self, window: int = 5000) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.window = window
        self._pairs: deque[tuple[bool, float]] = deque(maxlen=window)
        self._delays: deque[float] = deque(maxlen=window)
        self.labels = 0
        self.positives = 0
        self._delay_sum = 0.0
        self._delay_n = 0

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"ProgressiveQuality(window={self.window}, n={len(self)}, labels={self.labels})"

    def record(self, y: bool, p: float, delay_s: float | None = None) -> None:
        """Add one labelled prediction: ``p`` is the score the model gave before learning ``y``."""
        p = float(p)
        if not 0.0 <= p <= 1.0:  # also refuses NaN
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        if delay_s is not None:
            delay_s = float(delay_s)
            if not math.isfinite(delay_s):
                raise ValueError(f"delay_s must be finite or None, got {delay_s!r}")
        y = bool(y)
        self._pairs.append((y, p))
        self.labels += 1
        self.positives += y
        if delay_s is not None:
            delay_s = max(delay_s, 0.0)
            self._delays.append(delay_s)
            self._delay_sum += delay_s
            self._delay_n += 1

    # -- window counts -----------------------------------------------------------------

    def window_positives(self) -> int:
        return sum(y for y, _ in self._pairs)

    def base_rate(self) -> float | None:
        """Share of positive labels in the window (the PR AUC of a random model)."""
        n = len(self._pairs)
        return self.window_positives() / n if n else None

    def mean_p(self) -> float | None:
        """Mean score in the window; compare with ``base_rate`` for calibration-in-the-large."""
        n = len(self._pairs)
        return math.fsum(p for _, p in self._pairs) / n if n else None

    # -- ranking -----------------------------------------------------------------------

    def _groups(self) -> list[tuple[int, int]]:
        """(positives, negatives) per distinct score, in increasing order of score."""
        ordered = sorted(self._pairs, key=lambda pair: pair[1])
        groups: list[tuple[int, int]] = []
        for _, members in groupby(ordered, key=lambda pair: pair[1]):
            pos = neg = 0
            for y, _ in members:
                if y:
                    pos += 1
                else:
                    neg += 1
            groups.append((pos, neg))
        return groups

    def roc_auc(self) -> float | None:
        """Exact ROC AUC over the window; ``None`` unless it holds both classes.

        The Mann-Whitney U statistic with ties counted as half (the midrank
        convention), divided by positives x negatives: the probability that a random
        positive scores above a random negative.

        >>> q = ProgressiveQuality()
        >>> for y, p in [(False, 0.2), (True, 0.2), (False, 0.1), (True, 0.9)]:
        ...     q.record(y, p)
        >>> q.roc_auc()  # pairs: (0.2 vs 0.2) ties, the rest are ordered right
        0.875
        """
        return _roc_auc(self._groups())

    def pr_auc(self) -> float | None:
        """Exact average precision over the window; ``None`` without a positive.

        scikit-learn's definition: the sum over thresholds of (R_n - R_{n-1}) x P_n,
        with equal scores forming one threshold. No interpolation, so it does not
        overstate like the trapezoidal area under the PR curve.

        >>> q = ProgressiveQuality()
        >>> for y, p in [(True, 0.9), (False, 0.8), (True, 0.7)]:
        ...     q.record(y, p)
        >>> round(q.pr_auc(), 4)  # 1/2 x 1 + 1/2 x 2/3
        0.8333
        """
        return _average_precision(self._groups())

    # -- calibration and loss ----------------------------------------------------------

    def calibration(self, bins: int = 10) -> list[dict[str, Any]]:
        """Reliability table over ``bins`` equal-width score bins; empty bins are left out.

        Each row: ``bin`` (index), ``lo`` and ``hi`` (its edges), ``mean_p`` (mean
        score), ``rate`` (observed positive rate) and ``n``. A score of exactly 1.0
        falls in the last bin.

        >>> q = ProgressiveQuality()
        >>> for y, p in [(False, 0.05), (False, 0.1), (True, 0.15), (True, 0.95)]:
        ...     q.record(y, p)
        >>> [(row["bin"], row["n"], row["rate"]) for row in q.calibration(bins=10)]
        [(0, 1, 0.0), (1, 2, 0.5), (9, 1, 1.0)]
        """
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        sums = [0.0] * bins
        hits = [0] * bins
        counts = [0] * bins
        for y, p in self._pairs:
            b = min(int(p * bins), bins - 1)
            sums[b] += p
            hits[b] += y
            counts[b] += 1
        return [
            {
                "bin": b,
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "mean_p": sums[b] / counts[b],
                "rate": hits[b] / counts[b],
                "n": counts[b],
            }
            for b in range(bins)
            if counts[b]
        ]

    def ece(self, bins: int = 10) -> float | None:
        """Expected calibration error: the n-weighted mean |mean_p - rate| over the bins.

        >>> q = ProgressiveQuality()
        >>> for y in (True, False, False, False):
        ...     q.record(y, 0.25)
        >>> q.ece()
        0.0
        """
        return _ece(self.calibration(bins), len(self._pairs))

    def log_loss(self) -> float | None:
        """Mean negative log-likelihood over the window (natural log, scores clipped to 1e-15).

        >>> q = ProgressiveQuality()
        >>> q.record(True, 0.5)
        >>> round(q.log_loss(), 6)  # ln 2
        0.693147
        """
        n = len(self._pairs)
        if not n:
            return None
        total = 0.0
        for y, p in self._pairs:
            p = min(max(p, _EPS), 1.0 - _EPS)
            total -= math.log(p if y else 1.0 - p)
        return total / n

    # -- label delay -------------------------------------------------------------------

    def label_delay(self) -> dict[str, float | None]:
        """Seconds from decision to label: lifetime mean; p50 and p90 over the recent window.

        Quantiles interpolate linearly between order statistics (numpy's default).
        """
        ordered = sorted(self._delays)
        return {
            "mean": self._delay_sum / self._delay_n if self._delay_n else None,
            "p50": _quantile(ordered, 0.5),
            "p90": _quantile(ordered, 0.9),
        }

    # -- all of it ---------------------------------------------------------------------

    def summary(self, bins: int = 10) -> dict[str, Any]:
        """Everything above as a JSON-able dict (no NaN or infinity; ``None`` when undefined)."""
        groups = self._groups()
        calibration = self.calibration(bins)
        n = len(self._pairs)
        window_positives = sum(pos for pos, _ in groups)
        return {
            "window": self.window,
            "n": n,
            "labels": self.labels,
            "positives": self.positives,
            "window_positives": window_positives,
            "base_rate": window_positives / n if n else None,
            "mean_p": self.mean_p(),
            "roc_auc": _roc_auc(groups),
            "pr_auc": _average_precision(groups),
            "log_loss": self.log_loss(),
            "ece": _ece(calibration, n),
            "calibration": calibration,
            "label_delay_s": self.label_delay(),
        }


def _roc_auc(groups: list[tuple[int, int]]) -> float | None:
    total_pos = sum(pos for pos, _ in groups)
    total_neg = sum(neg for _, neg in groups)
    if not total_pos or not total_neg:
        return None
    # Twice U, in integers: each positive beats the negatives strictly below it and
    # ties with the negatives at its own score. One rounding, in the final division.
    twice_u = 0
    neg_below = 0
    for pos, neg in groups:
        twice_u += pos * (2 * neg_below + neg)
        neg_below += neg
    return twice_u / (2 * total_pos * total_neg)


def _average_precision(groups: list[tuple[int, int]]) -> float | None:
    total_pos = sum(pos for pos, _ in groups)
    if not total_pos:
        return None
    ap = 0.0
    tp = fp = 0
    for pos, neg in reversed(groups):  # threshold from the highest score down
        tp += pos
        fp += neg
        if pos:  # recall moves only when the threshold admits positives
            ap += (pos / total_pos) * (tp / (tp + fp))
    return ap


def _ece(calibration: list[dict[str, Any]], n: int) -> float | None:
    if not n:
        return None
    return math.fsum(row["n"] * abs(row["mean_p"] - row["rate"]) for row in calibration) / n


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


# -- Prometheus ---------------------------------------------------------------------------

_MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_QUANTILES = (("0.5", "p50"), ("0.9", "p90"))


class QualityMetrics:
    """Model quality as Prometheus series, labelled by model name only.

    The label is bounded: a name must look like an identifier (at most 64 characters)
    and at most ``max_models`` names are accepted, so a bug cannot flood Prometheus. An
    undefined value (say, ROC AUC while the window holds one class) removes its series
    instead of exporting NaN. ``beacon_model_labels_total`` and
    ``beacon_model_positive_labels_total`` are counters that follow the lifetime counts
    in the summaries; when a count goes down (a new ``ProgressiveQuality``, e.g. after a
    restart), the series restarts so Prometheus sees a counter reset.

    >>> from prometheus_client import CollectorRegistry
    >>> metrics = QualityMetrics(CollectorRegistry())
    >>> metrics.update("fraud", {"roc_auc": 0.91, "labels": 120, "label_delay_s": {"p50": 3600.0}})
    >>> metrics.registry.get_sample_value("beacon_model_roc_auc", {"model": "fraud"})
    0.91
    >>> metrics.registry.get_sample_value("beacon_model_labels_total", {"model": "fraud"})
    120.0
    """

    def __init__(self, registry: CollectorRegistry | None = None, max_models: int = 32) -> None:
        self.registry = registry or CollectorRegistry()
        self.max_models = max_models
        r = self.registry
        self.roc_auc = Gauge(
            "beacon_model_roc_auc", "Exact ROC AUC over the recent labelled window", ["model"], registry=r
        )
        self.pr_auc = Gauge(
            "beacon_model_pr_auc",
            "Average precision (PR AUC) over the recent labelled window",
            ["model"],
            registry=r,
        )
        self.calibration_error = Gauge(
            "beacon_model_calibration_error",
            "Expected calibration error (10 equal-width bins) over the recent labelled window",
            ["model"],
            registry=r,
        )
        self.log_loss = Gauge(
            "beacon_model_log_loss", "Mean log loss over the recent labelled window", ["model"], registry=r
        )
        self.base_rate = Gauge(
            "beacon_model_base_rate", "Share of positive labels in the recent window", ["model"], registry=r
        )
        self.label_delay = Gauge(
            "beacon_model_label_delay_seconds",
            "Decision to label delay over the recent labelled window",
            ["model", "quantile"],
            registry=r,
        )
        self.labels = Counter(
            "beacon_model_labels", "Labels the model has learned from (lifetime)", ["model"], registry=r
        )
        self.positive_labels = Counter(
            "beacon_model_positive_labels",
            "Positive labels the model has learned from (lifetime)",
            ["model"],
            registry=r,
        )
        self._counts: dict[str, tuple[int, int]] = {}

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._counts)

    def update(self, model_name: str, summary: Mapping[str, Any]) -> None:
        """Export one model's ``ProgressiveQuality.summary()``; missing keys count as undefined."""
        self._admit(model_name)
        self._set(self.roc_auc, (model_name,), summary.get("roc_auc"))
        self._set(self.pr_auc, (model_name,), summary.get("pr_auc"))
        self._set(self.calibration_error, (model_name,), summary.get("ece"))
        self._set(self.log_loss, (model_name,), summary.get("log_loss"))
        self._set(self.base_rate, (model_name,), summary.get("base_rate"))
        delay = summary.get("label_delay_s") or {}
        for quantile, key in _QUANTILES:
            self._set(self.label_delay, (model_name, quantile), delay.get(key))
        old_labels, old_positives = self._counts[model_name]
        labels = _count(summary.get("labels"), old_labels)
        positives = _count(summary.get("positives"), old_positives)
        _follow(self.labels, model_name, old_labels, labels)
        _follow(self.positive_labels, model_name, old_positives, positives)
        self._counts[model_name] = (labels, positives)

    def forget(self, model_name: str) -> None:
        """Remove every series of a model that is no longer registered."""
        if self._counts.pop(model_name, None) is None:
            return
        for metric in (self.roc_auc, self.pr_auc, self.calibration_error, self.log_loss, self.base_rate):
            _remove(metric, (model_name,))
        for quantile, _ in _QUANTILES:
            _remove(self.label_delay, (model_name, quantile))
        _remove(self.labels, (model_name,))
        _remove(self.positive_labels, (model_name,))

    def _admit(self, model_name: str) -> None:
        if model_name in self._counts:
            return
        if not isinstance(model_name, str) or not _MODEL_NAME.fullmatch(model_name):
            raise ValueError(
                f"model name {model_name!r} is not a valid metric label: use a letter, then up to 63 "
                "letters, digits, '_', '.' or '-'"
            )
        if len(self._counts) >= self.max_models:
            raise ValueError(
                f"refusing model {model_name!r}: already exporting quality for {self.max_models} models "
                f"({', '.join(sorted(self._counts))}); forget() retired ones or raise max_models"
            )
        self._counts[model_name] = (0, 0)

    @staticmethod
    def _set(gauge: Gauge, labels: tuple[str, ...], value: Any) -> None:
        if value is None or isinstance(value, bool):
            _remove(gauge, labels)
            return
        value = float(value)
        if math.isfinite(value):
            gauge.labels(*labels).set(value)
        else:
            _remove(gauge, labels)


def _count(value: Any, default: int) -> int:
    if value is None or isinstance(value, bool):
        return default
    return max(int(value), 0)


def _follow(counter: Counter, model_name: str, old: int, new: int) -> None:
    if new < old:  # a new model object: restart the series, Prometheus sees a reset
        _remove(counter, (model_name,))
        old = 0
    child = counter.labels(model_name)
    if new > old:
        child.inc(new - old)


def _remove(metric: Gauge | Counter, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
