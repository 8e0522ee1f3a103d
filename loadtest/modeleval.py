"""Exact ranking metrics and the direct-River baseline of the model benchmark.

Metrics are exact over every scored row (no binning): ROC AUC by the rank-sum
(Mann-Whitney) statistic with tied scores sharing their average rank, average precision
as scikit-learn defines it (sum over distinct thresholds of the recall gained times the
precision there; tied scores form one threshold), and the recall in the top fraction of
scores (ties broken against the positives: a constant score finds nothing).

>>> y = [False, False, True, True]
>>> s = [0.1, 0.4, 0.35, 0.8]
>>> roc_auc(y, s), round(average_precision(y, s), 4)
(0.75, 0.8333)
>>> roc_auc(y, [0.5] * 4), average_precision(y, [0.5] * 4), recall_at_top(y, [0.5] * 4, 0.25)
(0.5, 0.5, 0.0)

The baseline is River used directly on the same rows, features and label delays: score
a row first, then learn it once ``delay`` later rows have been scored (``delay=0``:
learn each row right after scoring it).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from river import compose, linear_model, optim, preprocessing


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    n = len(labels)
    pos = sum(1 for y in labels if y)
    neg = n - pos
    if pos == 0 or neg == 0:
        return math.nan
    order = sorted(range(n), key=lambda i: scores[i])
    rank_sum = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        avg_rank = (i + j) / 2.0 + 1.0  # ranks i+1 .. j+1 share their mean
        rank_sum += avg_rank * sum(1 for k in range(i, j + 1) if labels[order[k]])
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def average_precision(labels: Sequence[bool], scores: Sequence[float]) -> float:
    n = len(labels)
    pos = sum(1 for y in labels if y)
    if pos == 0:
        return math.nan
    order = sorted(range(n), key=lambda i: -scores[i])
    ap, tp, seen, last_recall = 0.0, 0, 0, 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        tp += sum(1 for k in range(i, j + 1) if labels[order[k]])
        seen = j + 1
        recall = tp / pos
        ap += (recall - last_recall) * (tp / seen)
        last_recall = recall
        i = j + 1
    return ap


def recall_at_top(labels: Sequence[bool], scores: Sequence[float], fraction: float = 0.001) -> float:
    """Share of all positives among the top ``fraction`` of rows by score (at least one row)."""
    pos = sum(1 for y in labels if y)
    if pos == 0:
        return math.nan
    k = max(1, math.ceil(fraction * len(labels)))
    # Ties against the positives: among equal scores, negatives rank first.
    order = sorted(range(len(labels)), key=lambda i: (-scores[i], labels[i]))
    return sum(1 for i in order[:k] if labels[i]) / pos


def summary(labels: Sequence[bool], scores: Sequence[float]) -> dict[str, float]:
    return {
        "pr_auc": average_precision(labels, scores),
        "roc_auc": roc_auc(labels, scores),
        "recall_top_0.1pct": recall_at_top(labels, scores, 0.001),
        "recall_top_1pct": recall_at_top(labels, scores, 0.01),
    }


def river_model(kind: str, weight_pos: float = 5.0) -> compose.Pipeline:
    """``StandardScaler | LogisticRegression``; for fraud the log loss weights positives."""
    if kind == "fraud":
        lr = linear_model.LogisticRegression(loss=optim.losses.Log(weight_pos=weight_pos))
    else:
        lr = linear_model.LogisticRegression()
    return preprocessing.StandardScaler() | lr


def river_direct(
    xs: Sequence[Mapping[str, float]], labels: Sequence[bool], delay: int, kind: str, weight_pos: float = 5.0
) -> list[float]:
    """Scores River gives each row, learning each row ``delay`` rows after scoring it.

    >>> xs = [{"a": float(i % 2)} for i in range(200)]
    >>> ys = [i % 2 == 1 for i in range(200)]
    >>> s = river_direct(xs, ys, delay=10, kind="offer")
    >>> s[0], roc_auc(ys[100:], s[100:])
    (0.5, 1.0)
    """
    model: Any = river_model(kind, weight_pos)
    pending: deque[tuple[Mapping[str, float], bool]] = deque()
    out: list[float] = []
    for x, y in zip(xs, labels, strict=True):
        out.append(float(model.predict_proba_one(dict(x)).get(True, 0.0)))
        pending.append((x, y))
        if len(pending) > delay:
            x0, y0 = pending.popleft()
            model.learn_one(dict(x0), y0)
    return out
