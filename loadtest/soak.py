"""Soak the demo: run ``beacon demo`` for a long time and watch it stay healthy (or not).

Every interval it reads the worker's /metrics and reports, for that interval only, the
Kafka path's decision latency quantiles (from histogram bucket deltas), the decisions
per second, and the embedded broker's memory. Output: JSON lines and a Markdown table.

    python -m loadtest.soak --duration 3600 --interval 60 --out loadtest/results/soak.md

>>> s = promtext.parse('h_bucket{le="0.01",path="kafka"} 5\\nh_bucket{le="0.05",path="kafka"} 9\\n'
...                    'h_bucket{le="+Inf",path="kafka"} 10\\n')
>>> quantile_ms(s, "h", 0.5, 'path="kafka"'), quantile_ms(s, "h", 0.99, 'path="kafka"')
(10.0, inf)
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import psutil

from loadtest import promtext

LATENCY = "beacon_decision_latency_seconds"


def quantile_ms(samples: promtext.Samples, histogram: str, q: float, label_part: str) -> float:
    """Upper bound (ms) of the bucket holding quantile ``q`` (see :func:`promtext.quantile_ms`)."""
    return promtext.quantile_ms(samples, histogram, q, label_part)


def _scrape(url: str, token: str = "") -> promtext.Samples:
    request = urllib.request.Request(
        url + "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return promtext.parse(resp.read().decode())


def _read_token(log: Path) -> str:
    found = re.search(r"read token\s+(bk_\S+)", log.read_text(errors="replace"))
    return found.group(1) if found else ""


def _demo_url(log: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        found = re.search(r"POST (http://[\d.:]+)/v1/decisions", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.5)
    raise SystemExit(f"demo did not start; see {log}")


def _broker_rss_mb(demo: psutil.Process) -> float:
    for child in demo.children(recursive=True):
        if "tansu" in child.name():
            return float(child.memory_info().rss) / 2**20
    return math.nan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=3600.0)
    p.add_argument("--interval", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=8.0, help="demo events/s")
    p.add_argument("--out", default="loadtest/results/soak.md")
    args = p.parse_args(argv)
    # A plain kill must still stop the demo it started (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".demo.log")
    with log.open("wb") as fh:
        cmd = ["demo", "--duration", str(args.duration), "--rate", str(args.rate)]
        demo = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *cmd], stdout=fh, stderr=subprocess.STDOUT
        )
    rows = []
    try:
        url = _demo_url(log, time.monotonic() + 120)
        proc = psutil.Process(demo.pid)
        token = _read_token(log)
        before, t_before, started = _scrape(url, token), time.monotonic(), time.monotonic()
        while demo.poll() is None:
            time.sleep(args.interval)
            try:
                after = _scrape(url, token)
            except OSError:
                break
            now = time.monotonic()
            d = promtext.delta(after, before)
            label = 'path="kafka"'
            row = {
                "minute": round((now - started) / 60, 1),
                "decisions_per_s": round(promtext.total(d, LATENCY + "_count", label) / (now - t_before), 2),
                "p50_ms": quantile_ms(d, LATENCY, 0.5, label),
                "p99_ms": quantile_ms(d, LATENCY, 0.99, label),
                "mean_ms": round(promtext.mean_ms(d, LATENCY, label), 2),
                "broker_rss_mb": round(_broker_rss_mb(proc), 1),
            }
            rows.append(row)
            print(orjson.dumps(row).decode(), flush=True)
            before, t_before = after, now
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=60)
    _write(out, rows, args)
    return 0


def _write(out: Path, rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    lines = [
        f"Soak of `beacon demo --rate {args.rate:g}` for {args.duration:g} s,",
        f"sampled every {args.interval:g} s",
        "(latency quantiles are bucket upper bounds over each interval).",
        "",
        "| minute | decisions/s | p50 ms | p99 ms | mean ms | broker RSS MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['minute']} | {r['decisions_per_s']} | {r['p50_ms']:g} | {r['p99_ms']:g} | {r['mean_ms']} "
            f"| {r['broker_rss_mb']} |"
        )
    out.write_text("\n".join(lines) + "\n")
    (out.with_suffix(".jsonl")).write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")


if __name__ == "__main__":
    sys.exit(main())
