"""The backtest's picture: daily alert volume and precision, as decided and with the
candidate (PNG, matplotlib's Agg backend).

The same report draws the same bytes: no date or software version is written into the
file's metadata, and the figure's size, resolution and fonts are fixed here. matplotlib
is optional (``pip install 'beacon[plots]'``): without it the JSON and Markdown reports
are still written and the caller is told why there is no picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

NO_MATPLOTLIB = "matplotlib is not installed (pip install 'beacon[plots]' or matplotlib)"


def plot(report: Mapping[str, Any], path: Path) -> str | None:
    """Draw ``report["daily"]`` into ``path``; None when written, else why not."""
    try:
        import matplotlib
    except ImportError:
        return NO_MATPLOTLIB
    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    daily = report.get("daily") or {}
    days = sorted(daily)
    x = list(range(len(days)))
    with matplotlib.rc_context({"font.family": "DejaVu Sans", "font.size": 9, "svg.hashsalt": "beacon"}):
        fig = Figure(figsize=(8.0, 6.0), dpi=100)
        volume, quality = fig.subplots(2, 1, sharex=True)
        width = 0.4
        for shift, key, label in (
            (-width / 2, "alerts_old", "as decided"),
            (width / 2, "alerts_new", "candidate"),
        ):
            volume.bar([i + shift for i in x], [daily[d][key] for d in days], width, label=label)
        volume.set_ylabel("alerts (rule fires)")
        volume.yaxis.set_major_locator(MaxNLocator(integer=True))
        volume.set_title("Daily alert volume and precision: as decided vs candidate")
        volume.legend(loc="upper left")
        for key, label, marker in (("precision_old", "as decided", "o"), ("precision_new", "candidate", "s")):
            points = [(i, daily[d][key]) for i, d in zip(x, days, strict=True) if daily[d][key] is not None]
            quality.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=label)
        quality.set_ylim(-0.05, 1.05)
        quality.set_ylabel("precision (share on fraud)")
        quality.legend(loc="best")
        quality.set_xticks(x, days, rotation=45, ha="right")
        fig.tight_layout()
        fig.savefig(path, format="png", metadata={"Software": None})
    return None
