"""Quality of the scores the channels received, over windows sized by positives.

``ProgressiveQuality`` measures the trainer's current model on each label before it
learns it: not what a channel was told when it decided, which came from a snapshot some
labels older (and, while the trainer is behind, much older). ``ServedQuality`` joins the
score each decision carried (``decisions.audit`` ``scores``, kept by the trainer with
the decision's inputs) with its label when the label arrives.

Its window is the last ``positives`` positive labels and the negatives of the same
period (from the oldest of those positives on), at most ``max_rows`` labels. With a rare
class a fixed number of rows holds a handful of positives and its AUC is noise (one
fraud in a window makes ROC and PR AUC 1.000 or 0.000); below ``min_positives`` the
summary gives no AUC and says why.

>>> q = ServedQuality(positives=2, min_positives=2)
>>> for y, p in [(True, 0.9), (False, 0.1), (True, 0.3), (False, 0.5), (True, 0.8), (False, 0.2)]:
...     q.record(y, p, delay_s=60.0, ts=0.0)
>>> s = q.summary()
>>> s["n"], s["window_positives"], s["roc_auc"]  # from the second positive on: 0.3 F0.5 0.8 F0.2
(4, 2, 0.75)
>>> ServedQuality(min_positives=30).summary()["too_few"]
'too few positives to measure (0 < 30)'
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from models.quality import _average_precision, _quantile, _roc_auc

__all__ = ["MAX_ROWS", "MIN_POSITIVES", "POSITIVES", "ServedQuality", "decided_score", "too_few"]

MIN_POSITIVES = 30  # below this, a window's AUC is noise: the report says so instead

POSITIVES = 100  # positives a window holds: the AUC's standard error is a few hundredths
MAX_ROWS = 100_000  # labels a window holds at most (fraud at 0.1%: 100 positives)


def too_few(positives: int, minimum: int) -> str:
    return f"too few positives to measure ({positives} < {minimum})"


class ServedQuality:
    """Decided scores and their labels over the last ``positives`` positives."""

    def __init__(
        self, positives: int = POSITIVES, min_positives: int = MIN_POSITIVES, max_rows: int = MAX_ROWS
    ):
        self.positives = positives
        self.min_positives = min_positives
        self._rows: deque[tuple[bool, float, float | None, float]] = deque()
        self._max_rows = max_rows
        self._window_positives = 0
        self.labels = 0  # lifetime, with a decided score

    def record(self, y: bool, p: float, delay_s: float | None = None, ts: float = 0.0) -> None:
        """One label and the score its decision carried; ``ts``: the decision's event time."""
        y = bool(y)
        self._rows.append((y, min(max(float(p), 0.0), 1.0), delay_s, float(ts)))
        self.labels += 1
        self._window_positives += y
        rows = self._rows
        while rows and (
            len(rows) > self._max_rows
            or self._window_positives > self.positives
            or (self._window_positives == self.positives and not rows[0][0])
        ):
            self._window_positives -= rows.popleft()[0]

    def correct(self, y: bool, p: float, delay_s: float | None = None, ts: float = 0.0) -> None:
        """A label turned over (a fraud report after the payment matured as legitimate):
        the row learned the other way takes the new label, so the window holds each
        decision once; one already out of the window is recorded anew.

        >>> q = ServedQuality(positives=5, min_positives=1)
        >>> q.record(False, 0.4, 60.0, ts=10.0); q.correct(True, 0.4, 7200.0, ts=10.0)
        >>> q.summary()["n"], q.summary()["window_positives"], q.labels
        (1, 1, 1)
        """
        y, p = bool(y), min(max(float(p), 0.0), 1.0)
        for i in range(len(self._rows) - 1, -1, -1):
            old_y, old_p, _, old_ts = self._rows[i]
            if old_y != y and old_p == p and old_ts == float(ts):
                del self._rows[i]
                self._window_positives -= old_y
                self.labels -= 1
                break
        self.record(y, p, delay_s, ts)

    def summary(self) -> dict[str, Any]:
        """JSON-able; AUCs are None (and ``too_few`` says why) below ``min_positives``."""
        groups: dict[float, list[int]] = {}
        for y, p, _, _ in self._rows:
            groups.setdefault(p, [0, 0])[0 if y else 1] += 1
        ordered = [(pos, neg) for _, (pos, neg) in sorted(groups.items())]
        n, pos = len(self._rows), self._window_positives
        measurable = pos >= self.min_positives and n > pos
        delays = sorted(max(d, 0.0) for _, _, d, _ in self._rows if d is not None)
        return {
            "n": n,
            "labels": self.labels,
            "window_positives": pos,
            "min_positives": self.min_positives,
            "base_rate": pos / n if n else None,
            "mean_p": sum(p for _, p, _, _ in self._rows) / n if n else None,
            "roc_auc": _roc_auc(ordered) if measurable else None,
            "pr_auc": _average_precision(ordered) if measurable else None,
            "too_few": None if measurable else too_few(pos, self.min_positives),
            "from_ts": self._rows[0][3] if n else None,
            "to_ts": self._rows[-1][3] if n else None,
            "label_delay_s": {"p50": _quantile(delays, 0.5), "p90": _quantile(delays, 0.9)},
        }


def decided_score(scores: Mapping[str, Any], model: str, offer: str | None = None) -> float | None:
    """The score a decision carried for ``model`` (``offers``: the named offer's), as the
    trainer keeps it: ``{"fraud": .., "churn": .., "offer": {id: ..}, "<challenger>": ..}``.

    >>> decided_score({"fraud": 0.2, "offer": {"gold": 0.4}}, "offers", "gold")
    0.4
    >>> decided_score({"fraud": 0.2}, "churn") is None
    True
    """
    value = (scores.get("offer") or {}).get(offer) if model == "offers" else scores.get(model)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
