"""Rebalance with many workers: real ``beacon worker`` processes in one consumer group on a
12-partition ``interactions`` topic, steady open-loop traffic, a worker added mid-stream
and later one of the first ones stopped (SIGTERM, graceful; or SIGKILL with ``--stop
kill``), traffic flowing throughout. Afterwards: every event decided, each customer's
state in Redis counting every event exactly once and in order, and the latency of each
phase (before the join, the join's rebalance, four workers, the stop's rebalance,
after) from the workers' logs.

    python -m loadtest.rebalance                     # 150 events/s, SIGTERM
    python -m loadtest.rebalance --stop kill --rate 200

Latency is the decision record's timestamp (set by the worker's producer) minus the
event's intended send time (the event's ``ts``): the consumer reading the answers adds
nothing. tests/integration/test_many_workers.py runs the same scenario and asserts the
correctness part; this prints the Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter as clock
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from engine.ops.infra import ensure_topics, free_port, start_embedded, wait_kafka
from engine.ops.launcher import WorkerProcess, isolated, start_worker
from engine.ops.traffic import Population, Tally, TrafficGenerator
from engine.settings import Settings
from engine.store import keys
from engine.store.redisio import connect
from engine.store.state import StateStore
from loadtest.openloop import run_schedule
from loadtest.rebalance_phases import (
    Answer,
    Phase,
    first_heartbeat_failure,
    merged_logs,
    phase_rows,
    rebalance_end,
    settled,
)

CHANNELS = ("atm", "internet", "mobile")
HEARTBEAT_S = 1.0  # the workers' broker_heartbeat_interval (agents/app.py)


@dataclass(frozen=True)
class Plan:
    rate: float = 150.0  # events/s, open loop
    customers: int = 300  # Zipf: a few customers have many events, most a handful
    workers: int = 3
    join_at_s: float = 8.0  # after traffic starts: start one more worker
    stop_at_s: float = 8.0  # after the fourth worker is ready: stop the first one
    tail_s: float = 14.0  # traffic after the stop's rebalance settled
    stop: str = "term"  # "term": SIGTERM, graceful; "kill": SIGKILL
    seed: int = 21
    drain_s: float = 120.0  # after traffic: wait this long at most for every decision


@dataclass
class Outcome:
    plan: Plan
    settings: Settings
    events: list[dict[str, Any]]
    tally: Tally
    answers: list[Answer]
    t0: float  # wall clock of the first intended send
    marks: dict[str, float]  # wall clock of each step (join, joined, stop, stopped, sent, drained)
    logs: list[Path]
    stop_code: int | None = None
    phases: list[Phase] = field(default_factory=list)
    generations: list[int] = field(default_factory=list)

    @property
    def sent(self) -> dict[str, float]:
        return {e["event_id"]: e["ts"] for e in self.events}

    def missing(self) -> set[str]:
        return set(self.sent) - {a.event_id for a in self.answers}

    def decision_ids(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for a in self.answers:
            out[a.event_id].add(a.decision_id)
        return out

    def repeats(self) -> int:
        return len(self.answers) - len({a.event_id for a in self.answers})

    def dump(self, path: Path) -> None:
        """Events sent, answers read and the phases, for a look after the run."""
        body = {
            "t0": self.t0,
            "marks": self.marks,
            "phases": [(p.name, p.start, p.end) for p in self.phases],
            "events": [(e["event_id"], e["customer_id"], e["ts"]) for e in self.events],
            "answers": [list(a) for a in self.answers],
        }
        path.write_bytes(orjson.dumps(body))

    def table(self) -> str:
        return phase_rows(self.phases, self.sent, self.answers, self.t0)


class Collector:
    """Reads every decision record from the start of ``decisions.<channel>``."""

    def __init__(self, settings: Settings) -> None:
        self.topics = [settings.topic(f"decisions.{c}") for c in CHANNELS]
        self.answers: list[Answer] = []
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    d = orjson.loads(r.value)
                    self.answers.append(
                        Answer(d["event_id"], d["decision_id"], r.partition, r.timestamp / 1000)
                    )

    async def wait_for(self, wanted: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not wanted <= {a.event_id for a in self.answers}:
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


async def run(settings: Settings, logdir: Path, plan: Plan) -> Outcome:
    """The whole scenario on ``settings`` (isolated: its own topics, keys and group; with
    ``partitions`` set). Every worker started is stopped before it returns."""
    await ensure_topics(settings)
    gen = TrafficGenerator(Population(plan.customers, seed=plan.seed), seed=plan.seed + 1, id_prefix="rb")
    workers: list[WorkerProcess] = []
    collector = Collector(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    try:
        workers += await asyncio.gather(*(_start(settings, logdir) for _ in range(plan.workers)))
        await _wait_settled(workers, plan.workers)
        await collector.start()
        await producer.start()
        out = await _traffic(settings, plan, gen, workers, collector, producer, logdir)
    finally:
        await producer.stop()
        await collector.stop()
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))
    out.answers = list(collector.answers)
    out.phases, out.generations = phases_of(out)
    out.dump(logdir / "rebalance-outcome.json")
    return out


async def _traffic(
    settings: Settings,
    plan: Plan,
    gen: TrafficGenerator,
    workers: list[WorkerProcess],
    collector: Collector,
    producer: AIOKafkaProducer,
    logdir: Path,
) -> Outcome:
    """Send open loop for the whole plan while one worker joins and another goes."""
    # A worker starts in ~10 s; the stop's rebalance takes ~5 s (SIGTERM), ~15 s (SIGKILL).
    duration = plan.join_at_s + 60.0 + plan.stop_at_s + 20.0 + plan.tail_s
    t0, p0 = time.time() + 0.5, clock() + 0.5
    offsets = [i / plan.rate for i in range(int(duration * plan.rate))]
    events = [gen.next_event(t0 + x) for x in offsets]
    out = Outcome(plan, settings, events, gen.tally, [], t0, {}, [w.log_path for w in workers])
    topic = settings.topic("interactions")
    deliveries: list[asyncio.Future[Any]] = []
    stop_sending = False

    async def fire(i: int) -> None:
        ev = events[i]
        deliveries.append(await producer.send(topic, orjson.dumps(ev), key=ev["customer_id"].encode()))

    sending = asyncio.create_task(run_schedule([p0 + x for x in offsets], fire, stop=lambda: stop_sending))
    await _sleep_until(t0 + plan.join_at_s)
    out.marks["join"] = time.time()
    joiner = await _start(settings, logdir)
    workers.append(joiner)
    out.logs.append(joiner.log_path)
    out.marks["joined"] = time.time()
    await _sleep_until(out.marks["joined"] + plan.stop_at_s)
    victim = workers[0]
    out.marks["stop"] = time.time()
    if plan.stop == "kill":
        victim.proc.kill()
    else:
        victim.proc.terminate()
    out.stop_code = await asyncio.to_thread(victim.proc.wait, 60)
    out.marks["stopped"] = time.time()
    # Keep sending for tail_s after the survivors took up the stopped worker's partitions.
    while time.time() < t0 + offsets[-1]:
        end = rebalance_end(merged_logs(out.logs), after=out.marks["stop"])
        if end is not None and time.time() > end[0] + plan.tail_s:
            break
        await asyncio.sleep(0.5)
    stop_sending = True
    await sending
    await asyncio.gather(*deliveries)
    out.events = events[: len(deliveries)]
    out.tally = Tally()  # what was sent, not what was generated
    for ev in out.events:
        out.tally.add(ev)
    out.marks["sent"] = time.time()
    await collector.wait_for(set(out.sent), plan.drain_s)
    await asyncio.sleep(2.0)  # a repeat arriving late would show now
    out.marks["drained"] = time.time()
    return out


def phases_of(out: Outcome) -> tuple[list[Phase], list[int]]:
    """The five phases, from the marks and the workers' logs (loadtest.rebalance_phases)."""
    lines = merged_logs(out.logs)
    end_sent = max(out.sent.values())
    # The coordinator began the join's rebalance when the new worker joined; the members
    # learn of it at their next heartbeat (every HEARTBEAT_S), the first of them logs it.
    noticed = first_heartbeat_failure(lines, after=out.marks["join"])
    join_start = noticed - HEARTBEAT_S if noticed is not None else out.marks["joined"]
    join_end, join_gen = rebalance_end(lines, after=join_start) or (out.marks["joined"], -1)
    stop_start = out.marks["stop"]
    stop_end, stop_gen = rebalance_end(lines, after=stop_start) or (end_sent, -1)
    how = "SIGKILL" if out.plan.stop == "kill" else "SIGTERM"
    n = out.plan.workers
    phases = [
        Phase(f"{n} workers", out.t0, join_start),
        Phase(f"rebalance: worker {n + 1} joins", join_start, join_end),
        Phase(f"{n + 1} workers", join_end, stop_start),
        Phase(f"rebalance: worker 1 stopped ({how})", stop_start, stop_end),
        Phase(f"{n} workers after", stop_end, end_sent + 1e-6),
    ]
    return phases, [join_gen, stop_gen]


async def state_mismatches(settings: Settings, out: Outcome) -> list[tuple[Any, ...]]:
    """Everything in Redis that disagrees with what was sent, per customer: the rolling
    counts and amounts (24 h window, every dimension), the recent interactions and recent
    decisions (each event once, in the order sent, newest first, with the decision id the
    topic carried) and the dedupe keys (one per event, no other). Empty when exact."""
    store = StateStore(connect(settings), settings)
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in out.events:
        by_customer[ev["customer_id"]].append(ev)
    ids = out.decision_ids()
    dedupe = await _dedupe_keys(settings)
    bad: list[tuple[Any, ...]] = []
    for cid, sent in sorted(by_customer.items()):
        view = await store.customer_view(cid)
        got = view["windows"]["24h"]
        for (c, dim), count in out.tally.counts.items():
            if c == cid:
                cell = got.get(dim, {"count": 0, "amount": 0.0})
                if cell["count"] != count or round(cell["amount"] * 100) != out.tally.cents[(c, dim)]:
                    bad.append((cid, "window", dim, cell, count, out.tally.cents[(c, dim)]))
        newest = [e["event_id"] for e in reversed(sent)]
        recent = [x["event_id"] for x in view["recent_interactions"]]
        if recent != newest[: settings.recent_events]:
            bad.append(
                (cid, "recent_interactions (newest first): got, sent", recent, newest[: len(recent) + 5])
            )
        decided = [(x["event_id"], x["decision_id"]) for x in view["recent_decisions"]]
        if [e for e, _ in decided] != newest[: settings.recent_decisions]:
            got = [e for e, _ in decided]
            bad.append((cid, "recent_decisions (newest first): got, sent", got, newest[: len(got) + 5]))
        bad += [(cid, "decision_id", e, d, ids.get(e)) for e, d in decided if {d} != ids.get(e, {d})]
        if Counter(dedupe.get(cid, [])) != Counter(e["event_id"] for e in sent):
            bad.append((cid, "dedupe keys", len(dedupe.get(cid, [])), len(sent)))
    return bad


async def _dedupe_keys(settings: Settings) -> dict[str, list[str]]:
    """customer -> the event ids of its dedupe keys (``P:{<customer>}:dd:<channel>:<event>``)."""
    client = connect(settings)
    out: dict[str, list[str]] = defaultdict(list)
    head = settings.key_prefix + ":{"
    async for raw in client.scan_iter(match=head + "*}" + keys.DEDUPE + "*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        cid, rest = key[len(head) :].split("}" + keys.DEDUPE, 1)
        out[cid].append(rest.split(":", 1)[1])
    return out


async def _start(settings: Settings, logdir: Path) -> WorkerProcess:
    return await asyncio.to_thread(start_worker, settings.replace(http_port=free_port()), logdir, 120.0)


async def _wait_settled(workers: Sequence[WorkerProcess], n: int, timeout: float = 60.0) -> None:
    """Until the group's first rebalances are over (traffic starts on a stable group)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if settled(merged_logs(w.log_path for w in workers), n, quiet_s=2.0, now=time.time()):
            return
        await asyncio.sleep(0.5)


async def _sleep_until(at: float) -> None:
    await asyncio.sleep(max(at - time.time(), 0.0))


def report(out: Outcome, mismatches: Sequence[tuple[Any, ...]]) -> str:
    """The Markdown table and what was checked."""
    missing, ids = out.missing(), out.decision_ids()
    flipped = sum(1 for v in ids.values() if len(v) > 1)
    lines = [
        out.table(),
        "",
        f"{len(out.events)} events at {out.plan.rate:.0f}/s for {out.plan.customers} customers, "
        f"{out.settings.partitions} partitions; stopped worker exit code {out.stop_code}; "
        f"generations {out.generations}",
        f"decisions missing: {len(missing)}; repeated records on the topic: {out.repeats()}; "
        f"events whose repeats carry another decision id: {flipped}; state mismatches: {len(mismatches)}",
    ]
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    plan = Plan(rate=args.rate, customers=args.customers, stop=args.stop, join_at_s=args.join_at,
                stop_at_s=args.stop_at, tail_s=args.tail)  # fmt: skip
    logdir = Path(args.logdir or f"/tmp/beacon-rebalance-{os.getpid()}")
    base = Settings.build()
    emb = await asyncio.to_thread(start_embedded, base, str(logdir))
    try:
        infra = emb.settings_for(base)
        await asyncio.to_thread(wait_kafka, infra)
        settings = isolated(infra, prefix="rb", partitions=args.partitions)
        out = await run(settings, logdir, plan)
        bad = await state_mismatches(settings, out)
    finally:
        await asyncio.to_thread(emb.stop)
    print(report(out, bad))
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; logs in {logdir}")
    for m in bad[:10]:
        print("mismatch:", m)
    return 1 if bad or out.missing() else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=Plan.rate, help="events/s (open loop)")
    ap.add_argument("--customers", type=int, default=Plan.customers)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--stop", choices=("term", "kill"), default="term")
    ap.add_argument("--join-at", type=float, default=Plan.join_at_s, help="s after traffic starts")
    ap.add_argument("--stop-at", type=float, default=Plan.stop_at_s, help="s after the 4th worker is ready")
    ap.add_argument("--tail", type=float, default=Plan.tail_s, help="s of traffic after the last rebalance")
    ap.add_argument("--logdir", default="", help="logs (default: /tmp/beacon-rebalance-PID)")
    return asyncio.run(_main(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
