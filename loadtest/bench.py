"""The benchmark behind BENCHMARKS.md: ``python -m loadtest.bench --out BENCHMARKS.md``.

In one run, on servers it starts itself: the floors (bare broker produce-then-consume
round trip one at a time and at the path's rates, Redis PING and EVALSHA, an aiohttp
echo server one at a time and at the path's rates); then, for each path and for one
worker and two in one consumer group, the fixed-rate ladder (open loop, p50/p99/p99.9)
followed by a bisection for the highest rate sustained with p99 under 25 ms. Each Kafka
phase runs on fresh workers and fresh topics. ``--quick`` is a short smoke version.
The tables between the markers of ``--out`` are regenerated; the intro above is kept.
The run's directory gets results.json, summary.md and the plots.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from loadtest import report
from loadtest.openloop import Phase
from loadtest.phases import Lab, Options
from loadtest.run import open_lab, results_of, run_with_uvloop, write_outputs
from loadtest.search import Search
from loadtest.shape import SHAPES

log = logging.getLogger("loadtest")
INTRO = """# Benchmarks

How fast one Beacon worker turns an interaction into a decision, on the two paths a
channel can use, measured by `make bench` (`python -m loadtest.bench`).
"""


@dataclass(frozen=True)
class Plan:
    broker_serial: int  # one-at-a-time broker round trips
    redis_serial: int
    echo_serial: int
    engine_events: int  # decided in-process, without Kafka or HTTP
    floor_s: float  # each floor at each rate of its path
    http_rates: tuple[float, ...]  # the ladder (the echo floor runs at the same rates)
    http_s: float
    kafka_rates: tuple[float, ...]  # the ladder (the broker floor runs at the same rates)
    kafka_s: float
    search_s: float  # each bisection step
    search_steps: int  # at most, per path and number of workers
    workers: tuple[int, ...] = (1, 2)


FULL = Plan(
    broker_serial=500,
    redis_serial=2000,
    echo_serial=1000,
    engine_events=3000,
    floor_s=8,
    http_rates=(100, 200, 500, 1000),
    http_s=12,
    kafka_rates=(50, 100, 200, 500, 1000),
    kafka_s=15,
    search_s=8,
    search_steps=4,
)
QUICK = Plan(
    broker_serial=100,
    redis_serial=500,
    echo_serial=300,
    engine_events=1000,
    floor_s=3,
    http_rates=(200, 500),
    http_s=4,
    kafka_rates=(100, 500),
    kafka_s=4,
    search_s=3,
    search_steps=1,
)

# The targets are stated at 500/s: that rate runs even after a lower one failed
# (a phase far over its capacity stops early, once 3 s of events are unanswered).
KEEP = (500.0,)


async def ladder(
    rates: Sequence[float],
    run_one: Callable[[float], Awaitable[Phase]],
    keep: Sequence[float] = KEEP,
) -> list[Phase]:
    """Rising fixed rates; after the first one not sustained, only the rates in ``keep``
    still run (the reported targets)."""
    out: list[Phase] = []
    failed = False
    for rate in rates:
        if failed and rate not in keep:
            continue
        phase = await run_one(rate)
        out.append(phase)
        failed |= not phase.sustained
    return out


async def search(
    measured: Sequence[Phase], run_one: Callable[[float], Awaitable[Phase]], steps: int
) -> list[Phase]:
    """Bisection steps after a ladder (see :mod:`loadtest.search`)."""
    s = Search()
    for phase in measured:
        s.record(phase.rate, phase.sustained)
    out: list[Phase] = []
    for _ in range(steps):
        rate = s.next()
        if rate is None:
            break
        phase = await run_one(rate)
        out.append(phase)
        s.record(rate, phase.sustained)
    return out


async def http_path(lab: Lab, plan: Plan, workers: int) -> None:
    async with lab.worker_group(workers) as group:
        urls = [w.url for w in group]
        async with lab.driver(lab.http_spec(urls)) as drv:

            def at(role: str, seconds: float) -> Callable[[float], Awaitable[Phase]]:
                return lambda rate: lab.http_phase(drv, urls, rate, seconds, role, group[0].settings)

            measured = await ladder(plan.http_rates, at("ladder", plan.http_s))
            await search(measured, at("search", plan.search_s), plan.search_steps)


async def kafka_path(lab: Lab, plan: Plan, workers: int) -> None:
    def at(role: str, seconds: float) -> Callable[[float], Awaitable[Phase]]:
        return lambda rate: lab.kafka_phase(rate, seconds, workers, role)

    measured = await ladder(plan.kafka_rates, at("ladder", plan.kafka_s))
    await search(measured, at("search", plan.search_s), plan.search_steps)


async def floors(lab: Lab, plan: Plan) -> None:
    await lab.kafka_floor_serial(plan.broker_serial)
    await lab.redis_floor(plan.redis_serial)
    for batch in (1, 32):
        await lab.engine_floor(plan.engine_events, batch)
    for rate in plan.kafka_rates:
        await lab.kafka_floor_rate(rate, plan.floor_s)
    await lab.echo_floor(plan.echo_serial, plan.http_rates, plan.floor_s)


async def bench(args: argparse.Namespace) -> int:
    started = time.time()
    plan = QUICK if args.quick else FULL
    opts = Options(linger_ms=args.linger_ms, procs=args.procs, shape=args.shape, responses=args.responses)
    async with open_lab(opts, "bench") as lab:
        await floors(lab, plan)
        for workers in plan.workers:
            await http_path(lab, plan, workers)
        for workers in plan.workers:
            await kafka_path(lab, plan, workers)
        command = "python -m loadtest.bench " + " ".join(sys.argv[1:])
        results = results_of(lab, command.strip(), started, quick=args.quick, plan=plan.__dict__)
    markdown = report.render(results)
    paths = write_outputs(lab.run_dir, results, markdown, bench=True)
    if args.out:
        out = Path(args.out)
        existing = out.read_text() if out.exists() else INTRO
        out.write_text(report.splice(existing, markdown))
        print(f"wrote {out}")
    print(markdown)
    print("\n" + "\n".join(f"{name}: {path}" for name, path in paths.items()))
    return 0


async def rerender(args: argparse.Namespace) -> int:
    results = report.restore_inf(orjson.loads(Path(args.render).read_bytes()))
    out = Path(args.out)
    existing = out.read_text() if out.exists() else INTRO
    out.write_text(report.splice(existing, report.render(results)))
    print(f"wrote {out} from {args.render}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="", help="Markdown file whose generated section is rewritten")
    parser.add_argument("--quick", action="store_true", help="short smoke version (a few minutes)")
    parser.add_argument("--linger-ms", type=float, default=1.0, help="client producer linger (default 1)")
    parser.add_argument("--procs", type=int, default=1, help="generator processes (default 1)")
    parser.add_argument("--shape", choices=SHAPES, default="flat", help="arrival rate over each phase")
    parser.add_argument(
        "--responses",
        type=float,
        default=0.3,
        help="share of offers shown that customers answer (default 0.3)",
    )
    parser.add_argument("--render", help="only re-render --out from a results.json of an earlier run")
    args = parser.parse_args(argv)
    if args.render:
        if not args.out:
            parser.error("--render needs --out")
        return run_with_uvloop(lambda: rerender(args))
    if args.procs < 1:
        parser.error("--procs must be at least 1")
    return run_with_uvloop(lambda: bench(args))


if __name__ == "__main__":
    sys.exit(main())
