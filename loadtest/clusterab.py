"""Single Redis vs Redis Cluster at the same rate: ``python -m loadtest.clusterab``.

Runs ``python -m loadtest.run`` (fresh embedded servers and a fresh worker each time)
alternately on one embedded Redis and on the embedded 3-master / 3-replica cluster
(``BEACON_REDIS_CLUSTER=1``), ``--rounds`` times each, interleaved so a busy spell of a
shared machine falls on both, and prints one Markdown table: per round and mode, the
latency the channel saw, worker CPU per decision and Redis CPU (summed over the nodes).
Medians over the rounds are the figures to quote.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

MODES = {"single": {}, "cluster": {"BEACON_REDIS_CLUSTER": "1"}}


def run_once(mode: str, rate: float, duration: float, path: str) -> dict[str, Any]:
    env = {**os.environ, **MODES[mode]}
    cmd = [sys.executable, "-m", "loadtest.run", "--rate", str(rate), "--duration", str(duration)]
    cmd += ["--path", path, "--no-floor"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    results = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("results: "))
    data: dict[str, Any] = orjson.loads(Path(results).read_bytes())
    return data


def rows_of(mode: str, n: int, data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for phase in data["phases"]:
        s, extra = phase["summary"], phase["extra"]
        rows.append({
            "mode": mode, "round": n, "phase": phase["name"], "answered": f"{s['answered']}/{s['sent']}",
            "p50": s["p50_ms"], "p99": s["p99_ms"], "worker_ms": extra.get("worker_cpu_ms_per_event", 0.0),
            "redis_cpu": phase["cpu"].get("redis", 0.0), "batch": extra.get("batch_mean", 0.0),
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = "| mode | round | phase | answered | p50 ms | p99 ms | worker CPU ms/decision | Redis CPU % | per batch |"  # noqa: E501
    lines = [head, "| --- " * 9 + "|"]
    for r in rows:
        cells = [r["mode"], r["round"], r["phase"], r["answered"], f"{r['p50']:.2f}", f"{r['p99']:.2f}"]
        cells += [f"{r['worker_ms']:.2f}", f"{r['redis_cpu']:.0f}", f"{r['batch']:.1f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    for mode in MODES:
        for phase in sorted({r["phase"] for r in rows}):
            mine = [r for r in rows if r["mode"] == mode and r["phase"] == phase]
            if mine:
                med = {
                    k: statistics.median(r[k] for r in mine) for k in ("p50", "p99", "worker_ms", "redis_cpu")
                }
                cells = [f"**{mode}, median**", len(mine), phase, "", f"**{med['p50']:.2f}**"]
                cells += [
                    f"**{med['p99']:.2f}**",
                    f"**{med['worker_ms']:.2f}**",
                    f"**{med['redis_cpu']:.0f}**",
                    "",
                ]
                lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--path", choices=("both", "http", "kafka"), default="both")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for n in range(1, args.rounds + 1):
        for mode in MODES:
            rows += rows_of(mode, n, run_once(mode, args.rate, args.duration, args.path))
            print(f"round {n} {mode} done", file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
