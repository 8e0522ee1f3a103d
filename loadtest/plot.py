"""PNG plots of a run, from its results dict: latency percentiles and throughput over
time, and (for the benchmark) latency against the offered rate.

matplotlib is a dev extra; it renders off screen (the Agg backend), so no display is
needed. Lost events (never answered) have no finite latency: a second where some were
lost is drawn at the top edge of the latency axis and marked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on servers and in CI

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from loadtest.tables import FLOOR_OF, floor_for

Ph = dict[str, Any]
PCTS = (("p50_ms", "p50", "-"), ("p99_ms", "p99", "--"), ("p999_ms", "p99.9", ":"))
MAX_COLUMNS = 6


def timeline(results: dict[str, Any], out: Path) -> Path:
    """Per path phase (up to six, the first ones), a column: p50/p99/p99.9 per second of
    intended send time on a log scale, with the floor at the same rate for reference,
    over the offered and the answered rate per second."""
    phases = [q for q in results["phases"] if q["path"] in FLOOR_OF and q.get("series")]
    if not phases:
        phases = [q for q in results["phases"] if q.get("series")]
    shown = phases[:MAX_COLUMNS]
    cols = max(len(shown), 1)
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols + 1, 7), squeeze=False, sharex="col")
    for k, ph in enumerate(shown):
        _latency(axes[0][k], ph, results["phases"])
        _throughput(axes[1][k], ph)
    for k in range(len(shown), cols):
        axes[0][k].set_visible(False)
        axes[1][k].set_visible(False)
    extra = f" (first {MAX_COLUMNS} of {len(phases)} phases)" if len(phases) > MAX_COLUMNS else ""
    fig.suptitle(f"{results.get('command', 'load test')}{extra}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _latency(ax: Axes, ph: Ph, everything: list[Ph]) -> None:
    series = ph["series"]
    top = _top(series)
    for key, label, style in PCTS:
        xs, ys, lost = [], [], []
        for row in series:
            v = row.get(key)
            if v is None:
                continue
            xs.append(row["t"] + 0.5)  # the middle of the second its events were due in
            ys.append(top if math.isinf(v) else max(v, 0.01))
            if math.isinf(v):
                lost.append((row["t"] + 0.5, top))
        ax.plot(xs, ys, style, label=label, linewidth=1.4)
        if lost:
            ax.plot(*zip(*lost, strict=True), "x", color="red", markersize=5)
    floor, _ = floor_for(everything, ph)
    if floor is not None:
        ax.axhline(floor["summary"]["p99_ms"], color="grey", linewidth=0.8, linestyle="-.",
                   label=f"floor p99 @{floor['rate']:.0f}/s")  # fmt: skip
    ax.set_yscale("log")
    _plain(ax.yaxis)
    ax.set_title(ph["name"] + (" (stopped early)" if ph.get("stopped_early") else ""), fontsize=9)
    ax.set_ylabel("latency ms (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def _top(series: list[dict[str, Any]]) -> float:
    """Where to draw seconds with lost events: above every finite value."""
    finite = [
        row[k] for row in series for k, _, _ in PCTS if row.get(k) is not None and math.isfinite(row[k])
    ]
    return max(finite, default=1.0) * 2.0


def _throughput(ax: Axes, ph: Ph) -> None:
    series = ph["series"]
    ts = [row["t"] for row in series] + [len(series)]  # each second drawn over its width
    for key, label in (("sent", "offered /s"), ("answers", "answered /s")):
        values = [row[key] for row in series]
        ax.step(ts, [*values, values[-1] if values else 0], where="post", label=label, linewidth=1.2)
    ax.set_xlabel("seconds into the phase")
    ax.set_ylabel("events per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower center")


GROUP_COLORS = {
    ("http", 1): "tab:blue",
    ("http", 2): "tab:cyan",
    ("kafka", 1): "tab:orange",
    ("kafka", 2): "tab:red",
    ("echo", 1): "grey",
    ("broker", 1): "dimgrey",
}


def whole_run(results: dict[str, Any], out: Path) -> Path:
    """Every open-loop phase of a benchmark where it happened in the run: p50 (thin) and
    p99 (thick) per second on a log scale, each phase labelled with its rate, over the
    answered rate per second; one colour per path and number of workers, floors in grey."""
    phases = [q for q in results["phases"] if q.get("series") and q.get("started_at")]
    t0 = results.get("started_at") or min((q["started_at"] for q in phases), default=0.0)
    fig, (lat, thr) = plt.subplots(2, 1, figsize=(15, 7.5), sharex=True, height_ratios=(3, 2))
    seen: set[tuple[str, int]] = set()
    for ph in phases:
        group = (ph["path"], int(ph.get("workers") or 1))
        color = GROUP_COLORS.get(group, "black")
        label = None if group in seen else _group_label(group)
        seen.add(group)
        at = ph["started_at"] - t0
        series = ph["series"]
        top = _top(series)
        for key, width in (("p50_ms", 0.7), ("p99_ms", 1.8)):
            pts = [(at + r["t"] + 0.5, top if math.isinf(r[key]) else max(r[key], 0.01))
                   for r in series if r.get(key) is not None]  # fmt: skip
            if pts:
                lat.plot(
                    *zip(*pts, strict=True), color=color, linewidth=width, label=label if width > 1 else None
                )
        first = next((r for r in series if r.get("p99_ms") is not None), None)
        if first is not None:
            y = top if math.isinf(first["p99_ms"]) else max(first["p99_ms"], 0.01)
            lat.annotate(f"{ph['rate']:.0f}", (at, y), fontsize=6, color=color, xytext=(0, 4),
                         textcoords="offset points")  # fmt: skip
        xs = [at + r["t"] for r in series] + [at + len(series)]
        answers = [r["answers"] for r in series]
        thr.step(xs, [*answers, answers[-1] if answers else 0], where="post", color=color, linewidth=1.0)
    lat.axhline(25.0, color="black", linewidth=0.8, linestyle="-.", label="25 ms")
    lat.set_yscale("log")
    _plain(lat.yaxis)
    lat.set_ylabel("latency ms (log): p99 thick, p50 thin")
    lat.grid(True, which="both", alpha=0.3)
    lat.legend(fontsize=8, loc="upper left")
    thr.set_ylabel("answered per second")
    thr.set_xlabel("seconds into the run (each phase labelled with its offered rate)")
    thr.grid(True, alpha=0.3)
    fig.suptitle(f"{results.get('command', 'benchmark')} — {results.get('started', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _group_label(group: tuple[str, int]) -> str:
    path, n = group
    name = {"http": "HTTP path", "kafka": "Kafka path", "echo": "HTTP echo floor", "broker": "broker floor"}
    return f"{name.get(path, path)}{f', {n} workers' if n > 1 else ''}"


def by_rate(results: dict[str, Any], out: Path) -> Path:
    """Per path, p50/p99/p99.9 against the offered rate (one worker solid, two dashed),
    with the floor's p50/p99 at the same rates, on log scales; the 25 ms bound marked."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), squeeze=False)
    for ax, path in zip(axes[0], ("http", "kafka"), strict=True):
        _rate_curves(ax, results["phases"], path)
    fig.suptitle(f"{results.get('command', 'benchmark')} — {results.get('started', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _rate_curves(ax: Axes, phases: list[Ph], path: str) -> None:
    colors = {"p50_ms": "tab:blue", "p99_ms": "tab:orange", "p999_ms": "tab:red"}
    for n, style in ((1, "-o"), (2, "--s")):
        runs = sorted((q for q in phases if q["path"] == path and int(q.get("workers") or 1) == n),
                      key=lambda q: q["rate"])  # fmt: skip
        if not runs:
            continue
        for key, label, _ in PCTS:
            ys = [_finite(q["summary"][key]) for q in runs]
            ax.plot([q["rate"] for q in runs], ys, style, color=colors[key], markersize=4,
                    label=f"{label}, {n} worker{'s' if n > 1 else ''}")  # fmt: skip
    floor = sorted(
        (q for q in phases if q["path"] == FLOOR_OF[path] and q["rate"] > 0), key=lambda q: q["rate"]
    )
    for key, label, marker in (("p50_ms", "floor p50", "."), ("p99_ms", "floor p99", "x")):
        ax.plot([q["rate"] for q in floor], [_finite(q["summary"][key]) for q in floor], ":", color="grey",
                marker=marker, label=label)  # fmt: skip
    ax.axhline(25.0, color="black", linewidth=0.8, linestyle="-.", label="25 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain(ax.xaxis)
    _plain(ax.yaxis)
    ax.set_xlabel("offered rate, events/s (log)")
    ax.set_ylabel("latency ms (log); lost events not drawn")
    ax.set_title("HTTP path" if path == "http" else "Kafka path", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _plain(axis: Any) -> None:
    """Plain numbers on a log axis (200, not 2 x 10^2); minor ticks labelled at 2 and 5."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _finite(x: float | None) -> float:
    return float("nan") if x is None or not math.isfinite(x) else max(float(x), 0.01)
