"""``beacon models report`` as text: the scores the channels received (``models.served``),
the trainer's current model (``models.quality.ProgressiveQuality``), the trainer's lag.

A window with fewer than ``MIN_POSITIVES`` positives gets no AUC: with a rare class its
AUC rests on a handful of frauds and is noise (one fraud in a window reads 1.000 or
0.000), so the report says "too few positives to measure" instead of a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.served import MAX_ROWS, MIN_POSITIVES, POSITIVES

__all__ = ["MIN_POSITIVES", "render_full", "render_report", "render_served"]

# -- report -------------------------------------------------------------------------------

_COLUMNS = (
    "model",
    "labels",
    "positives",
    "window",
    "base rate",
    "ROC AUC",
    "PR AUC",
    "ECE",
    "log loss",
    "delay p50",
    "delay p90",
)
_FOOTER = (
    "labels, positives: lifetime counts. window: how many recent labels the other columns describe.\n"
    "ECE: expected calibration error over 10 equal-width bins. delay: from decision to label."
)


def render_report(summaries: Mapping[str, Mapping[str, Any]], min_positives: int = MIN_POSITIVES) -> str:
    """A plain-text table of ``ProgressiveQuality.summary()`` dicts by model name, for a human.
    A window with fewer than ``min_positives`` positives gets no AUC; keys starting with
    ``_`` are not models.

    >>> from models.quality import ProgressiveQuality
    >>> q = ProgressiveQuality()
    >>> for y, p in [(False, 0.1), (True, 0.7), (False, 0.3)]:
    ...     q.record(y, p, delay_s=90.0)
    >>> report = render_report({"fraud": q.summary(), "churn": ProgressiveQuality().summary()})
    >>> for line in report.splitlines()[1:3]:
    ...     print(" | ".join(line.split()[:5]))
    churn | 0 | 0 | 0 | n/a
    fraud | 3 | 1 | 3 | 0.3333
    >>> "n/a (needs both classes)" in report, "too few positives to measure (1 < 30)" in report
    (True, True)
    """
    summaries = {k: v for k, v in summaries.items() if not k.startswith("_")}
    if not summaries:
        return "no model quality to report: no models are registered"
    rows = [list(_COLUMNS)]
    rows.extend(_report_row(name, summaries[name], min_positives) for name in sorted(summaries))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.extend(["", _FOOTER])
    return "\n".join(lines)


def _report_row(name: str, s: Mapping[str, Any], min_positives: int) -> list[str]:
    delay = s.get("label_delay_s") or {}
    few = int(s.get("window_positives") or 0)
    if s.get("roc_auc") is not None and few < min_positives:
        s = {**s, "roc_auc": None, "pr_auc": None}
        roc, pr = f"too few positives to measure ({few} < {min_positives})", "-"
    else:
        roc, pr = "n/a (needs both classes)", "n/a (needs a positive)"
    return [
        name,
        _integer(s.get("labels")),
        _integer(s.get("positives")),
        _integer(s.get("n")),
        _fixed(s.get("base_rate"), "n/a", 4),
        _fixed(s.get("roc_auc"), roc, 3),
        _fixed(s.get("pr_auc"), pr, 3),
        _fixed(s.get("ece"), "n/a", 3),
        _fixed(s.get("log_loss"), "n/a", 4),
        _duration(delay.get("p50")),
        _duration(delay.get("p90")),
    ]


def _integer(value: Any) -> str:
    return "0" if value is None else f"{int(value):,}"


def _fixed(value: Any, missing: str, digits: int) -> str:
    if value is None:
        return missing
    return f"{float(value):.{digits}f}"


def _duration(seconds: Any) -> str:
    """Seconds in the largest unit that is at least 1: ``42.0s``, ``1.5m``, ``2.0h``, ``3.1d``."""
    if seconds is None:
        return "n/a"
    s = float(seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.1f}s"


_SERVED_COLUMNS = (
    "model",
    "labels",
    "window",
    "positives",
    "base rate",
    "ROC AUC",
    "PR AUC",
    "delay p50",
    "delay p90",
    "note",
)


def render_served(summaries: Mapping[str, Mapping[str, Any]], lag: Mapping[str, Any] | None = None) -> str:
    """The table of decided scores by model, and the trainer's lag, for a human.

    >>> from models.served import ServedQuality
    >>> q = ServedQuality(min_positives=30)
    >>> q.record(True, 0.9, 10.0)
    >>> q.record(False, 0.1, 10.0)
    >>> text = render_served({"fraud": q.summary()}, {"labels": 15000, "seconds": 42.0})
    >>> row = text.splitlines()[1]
    >>> row.split()[:7], row.endswith("too few positives to measure (1 < 30)")
    (['fraud', '2', '2', '1', '0.5000', '-', '-'], True)
    >>> text.splitlines()[-1].startswith("trainer lag: 15,000 labels and 42.0s behind")
    True
    """
    rows = [list(_SERVED_COLUMNS)]
    for name in sorted(summaries):
        s = summaries[name]
        delay = s.get("label_delay_s") or {}
        note = s.get("too_few") or ""
        auc = ["-", "-"] if note else [_fixed3(s.get("roc_auc")), _fixed3(s.get("pr_auc"))]
        base = s.get("base_rate")
        rows.append(
            [
                name,
                f"{s.get('labels', 0):,}",
                f"{s.get('n', 0):,}",
                f"{s.get('window_positives', 0):,}",
                "n/a" if base is None else f"{base:.4f}",
                *auc,
                _duration(delay.get("p50")),
                _duration(delay.get("p90")),
                note,
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(_SERVED_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += ["", _lag_line(lag)]
    return "\n".join(lines)


def _lag_line(lag: Mapping[str, Any] | None) -> str:
    if not lag:
        return "trainer lag: unknown (the trainer has not reported it)"
    return (
        f"trainer lag: {int(lag.get('labels') or 0):,} labels and {_duration(lag.get('seconds') or 0.0)} "
        f"behind (consumed, not yet learned); scoring snapshots at most "
        f"{int(lag.get('snapshot_gap') or 0):,} labels behind the trainer"
    )


def _fixed3(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def render_full(report: Mapping[str, Any]) -> str:
    """``beacon models report``: the scores the channels received first, then the
    trainer's current model, then the trainer's lag (``Trainer.report()`` as saved)."""

    models = {k: v for k, v in report.items() if not k.startswith("_")}
    served = {k: v["served"] for k, v in models.items() if isinstance(v.get("served"), Mapping)}
    parts = []
    if served:
        parts += [
            f"Scores the channels received, joined with their labels (window: the last {POSITIVES} "
            f"positives and the negatives of the same period, at most {MAX_ROWS:,} labels):",
            render_served(served, report.get("_trainer")),
            "",
        ]
    parts += ["The trainer's current model, each label scored before it is learned:", render_report(models)]
    return "\n".join(parts)
