"""The benchmark behind BENCHMARKS.md: ``python -m loadtest.bench --out BENCHMARKS.md``.

In one run, on servers it starts itself: the floors (bare broker produce-then-consume
round trip one at a time and at fixed rates, Redis PING and EVALSHA, an aiohttp echo
server), then the HTTP path and the Kafka path at rising fixed rates, open loop, each
Kafka rate on a fresh worker and fresh topics. ``--quick`` is a ~2-minute smoke version.
The tables between the markers of ``--out`` are regenerated; the intro above is kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from loadtest import report
from loadtest.openloop import Phase
from loadtest.phases import Options
from loadtest.run import open_lab, results_of, run_with_uvloop, write_json

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
    floor_rates: tuple[float, ...]
    floor_s: float
    echo_rates: tuple[float, ...]
    echo_s: float
    http_rates: tuple[float, ...]
    http_s: float
    kafka_rates: tuple[float, ...]
    kafka_s: float
    refine: bool  # one extra Kafka rate between the last sustained and the first not


FULL = Plan(
    broker_serial=500,
    redis_serial=2000,
    echo_serial=1000,
    engine_events=3000,
    floor_rates=(100, 200, 500, 1000, 2000, 3000),
    floor_s=10,
    echo_rates=(500, 1000, 2000),
    echo_s=10,
    http_rates=(200, 500, 1000, 1500, 2000),
    http_s=15,
    kafka_rates=(100, 200, 300, 500, 1000, 2000, 3000),
    kafka_s=20,
    refine=True,
)
QUICK = Plan(
    broker_serial=100,
    redis_serial=500,
    echo_serial=300,
    engine_events=1000,
    floor_rates=(500, 2000),
    floor_s=4,
    echo_rates=(500,),
    echo_s=4,
    http_rates=(500, 1000),
    http_s=5,
    kafka_rates=(500, 2000),
    kafka_s=6,
    refine=False,
)


KAFKA_TARGETS = (500.0, 2000.0)  # the targets are stated at these rates
HTTP_TARGETS = (500.0,)


async def ramp(
    rates: Sequence[float],
    run_one: Callable[[float], Awaitable[Phase]],
    refine: bool,
    keep: Sequence[float] = (),
) -> list[Phase]:
    """Rising rates; after the first one not sustained, only the rates in ``keep`` still
    run. With ``refine``, one more rate halfway between the last sustained and the first not."""
    out: list[Phase] = []
    last_ok, first_bad = 0.0, 0.0
    for rate in rates:
        if first_bad and rate not in keep:
            continue
        phase = await run_one(rate)
        out.append(phase)
        if phase.sustained and not first_bad:
            last_ok = rate
        elif not phase.sustained and not first_bad:
            first_bad = rate
    mid = round((last_ok + first_bad) / 2 / 50) * 50
    if refine and last_ok and first_bad and last_ok < mid < first_bad:
        out.append(await run_one(mid))
    return out


async def bench(args: argparse.Namespace) -> int:
    started = time.time()
    plan = QUICK if args.quick else FULL
    opts = Options(linger_ms=args.linger_ms)
    async with open_lab(opts, "bench") as lab:
        await lab.kafka_floor_serial(plan.broker_serial)
        await lab.redis_floor(plan.redis_serial)
        for batch in (1, 32):
            await lab.engine_floor(plan.engine_events, batch)
        for rate in plan.floor_rates:
            await lab.kafka_floor_rate(rate, plan.floor_s)
        await lab.echo_floor(plan.echo_serial, plan.echo_rates, plan.echo_s)
        async with lab.http_worker() as (http, url):
            await ramp(
                plan.http_rates,
                lambda rate: lab.http_phase(http, url, rate, plan.http_s),
                plan.refine,
                HTTP_TARGETS,
            )
        await ramp(
            plan.kafka_rates, lambda rate: lab.kafka_phase(rate, plan.kafka_s), plan.refine, KAFKA_TARGETS
        )
        command = "python -m loadtest.bench " + " ".join(sys.argv[1:])
        results = results_of(lab, command.strip(), started, quick=args.quick, plan=plan.__dict__)
    path = write_json(lab, results)
    markdown = report.render(results)
    if args.out:
        out = Path(args.out)
        existing = out.read_text() if out.exists() else INTRO
        out.write_text(report.splice(existing, markdown))
        print(f"wrote {out}")
    print(markdown)
    print(f"\nresults: {path}")
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
    parser.add_argument("--quick", action="store_true", help="~2-minute smoke version")
    parser.add_argument("--linger-ms", type=float, default=1.0, help="client producer linger (default 1)")
    parser.add_argument("--render", help="only re-render --out from a results.json of an earlier run")
    args = parser.parse_args(argv)
    if args.render:
        if not args.out:
            parser.error("--render needs --out")
        return run_with_uvloop(lambda: rerender(args))
    return run_with_uvloop(lambda: bench(args))


if __name__ == "__main__":
    sys.exit(main())
