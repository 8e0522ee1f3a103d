"""What the trainer keeps in Redis per decision, measured (issue 16's memory budget).

    python -m loadtest.trainer_inputs                     # 1,000 customers x 20 events, seed 5
    python -m loadtest.trainer_inputs --customers 2000 --events 40 --seed 7

Starts an embedded Redis (no broker), imports a profile per customer, decides a generated
population through the real decision service (the demo's per-channel type mix,
engine/ops/traffic.py, UUID event ids, spread over ``--span-days`` ending now), then feeds
the audit records (the outbox) to a real trainer (``on_batch``, as its stream loop does;
its sweeps find nothing due yet but the matured transactions) and measures every
``fb:`` key with ``MEMORY USAGE <key> SAMPLES 0``: the decisions' inputs (``fb:x:*``),
the customers' latest decisions (``fb:last:*``) and the pending sets, per decision.
Also times packing and unpacking an inputs record against orjson alone (the CPU the
trainer spends per record on its encoding).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import timeit
import uuid
from collections import Counter, defaultdict
from typing import Any

import orjson

from engine.decide.rulebook import load
from engine.domain.events import Event, parse_event
from engine.domain.scoring import BuiltinScorer
from engine.ops.infra import start_embedded
from engine.ops.traffic import Population, TrafficGenerator
from engine.rules.pack import read_bundle
from engine.service.decisions import DecisionService
from engine.service.trainer import build_trainer
from engine.settings import Settings
from engine.store import keys
from engine.store.redisio import connect, text
from engine.store.state import StateStore

try:
    from engine.store.feedback import pack, unpack
except ImportError:  # before records were packed: plain JSON (to measure the difference)
    pack, unpack = orjson.dumps, orjson.loads  # type: ignore[assignment]


def population_events(settings: Settings, pop: Population, per_customer: int, span_s: float,
                      end: float, seed: int) -> list[Event]:  # fmt: skip
    gen = TrafficGenerator(pop, seed=seed + 1)
    rng = random.Random(seed + 2)
    timed: list[tuple[float, dict[str, Any]]] = []
    for c in pop.customers:
        for _ in range(per_customer):
            ts = end - rng.random() * span_s
            raw = gen._normal(c, ts)
            raw["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            timed.append((ts, raw))
    timed.sort(key=lambda t: t[0])
    return [parse_event(orjson.dumps(raw), settings, end + 1) for _, raw in timed]


def family(key: str, base: str) -> str:
    rest = key.removeprefix(base + ":")
    return rest if rest.startswith("pending") or ":" not in rest else rest.split(":")[0] + ":*"


async def measure(args: argparse.Namespace) -> str:
    base = Settings.build(env={}, max_event_age_s=(args.span_days + 1) * 86400.0, key_prefix="tm")
    rules = load(read_bundle(base.rules_path()), frozenset(base.channels), "bench").rules
    pop = Population(args.customers, seed=args.seed)
    end = time.time()
    events = population_events(base, pop, args.events, args.span_days * 86400.0, end, args.seed)
    emb = start_embedded(base, broker=False, redis_binary=args.redis_server)
    try:
        settings = emb.settings_for(base)
        client = connect(settings)
        store = StateStore(client, settings)
        service = DecisionService(settings, store, rules, BuiltinScorer())
        await store.put_profiles([(c.customer_id, c.profile) for c in pop.customers], settings.profile_ttl_s)
        for i in range(0, len(events), args.batch):
            await service.decide_batch(events[i : i + args.batch])
        trainer = await build_trainer(settings, client)
        audits: list[dict[str, Any]] = []
        start = "-"
        while True:
            page: list[Any] = (
                await client.xrange(keys.outbox(settings.key_prefix), min=start, count=1000) or []
            )
            audits += [orjson.loads(fields[b"a"]) for _, fields in page]
            if len(page) < 1000:
                break
            start = "(" + text(page[-1][0])
        cpu0 = time.process_time()
        for i in range(0, len(audits), args.train_batch):  # as the trainer's stream loop hands them
            await trainer.on_batch([("audit", r) for r in audits[i : i + args.train_batch]])
        trainer_cpu = time.process_time() - cpu0
        fb = trainer.fb.keys.base  # type: ignore[attr-defined]
        sizes: dict[str, list[int]] = defaultdict(list)
        async for raw in client.scan_iter(match=f"{fb}:*", count=1000):
            key = text(raw)
            sizes[family(key, fb)].append(int(await client.memory_usage(key, samples=0) or 0))
        # CPU: packing and unpacking the inputs records the trainer wrote, against orjson alone.
        xkeys = [k async for k in client.scan_iter(match=f"{fb}:x:*")]
        values = [v for v in await client.mget(xkeys) if isinstance(v, bytes)]
        records = [unpack(v) for v in values]
        jsons = [orjson.dumps(x) for x in records]
        cpu = {
            "pack": timeit.timeit(lambda: [pack(x) for x in records], number=5),
            "unpack": timeit.timeit(lambda: [unpack(v) for v in values], number=5),
            "orjson.dumps": timeit.timeit(lambda: [orjson.dumps(x) for x in records], number=5),
            "orjson.loads": timeit.timeit(lambda: [orjson.loads(v) for v in jsons], number=5),
        }
        await client.aclose()
    finally:
        emb.stop()
    decisions = sum(1 for r in audits if not r.get("degraded") and not r.get("feedback"))
    types = Counter((r.get("event") or {}).get("type") for r in audits)
    lines = [
        f"`python -m loadtest.trainer_inputs --customers {args.customers} --events {args.events} "
        f"--seed {args.seed} --span-days {args.span_days:g} --train-batch {args.train_batch}`: "
        f"{len(audits):,} audit records, {decisions:,} decisions; types {dict(types.most_common())}",
        "",
        "| family | keys | MEMORY USAGE bytes | per decision | per key |",
        "| --- | --- | --- | --- | --- |",
    ]
    total = 0
    for name, got in sorted(sizes.items(), key=lambda kv: -sum(kv[1])):
        total += sum(got)
        lines.append(f"| `fb:{name}` | {len(got):,} | {sum(got):,} | {sum(got) / decisions:,.0f} | "
                     f"{sum(got) / len(got):,.0f} |")  # fmt: skip
    lines.append(f"| all | | {total:,} | **{total / decisions:,.0f}** | |")
    if values:
        n = len(values) * 5
        per = ", ".join(f"{name} {t / n * 1e6:.1f} us" for name, t in cpu.items())
        lines += [
            "",
            f"Inputs record value: {sum(map(len, values)) / len(values):,.0f} bytes stored, "
            f"{sum(map(len, jsons)) / len(jsons):,.0f} as JSON, on average. CPU per record: {per}.",
            f"Trainer (this process) CPU per audit record through on_batch (batches of "
            f"{args.train_batch}): {trainer_cpu / len(audits) * 1e6:.0f} us.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--events", type=int, default=20, help="events per customer")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--span-days", type=float, default=7.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train-batch", type=int, default=500, help="audit records per Trainer.on_batch")
    p.add_argument("--redis-server", default=None)
    args = p.parse_args(argv)
    print(asyncio.run(measure(args)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
