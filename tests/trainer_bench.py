"""How fast the trainer learns, in-process against a real Redis (no broker): records are
handed in as the Kafka loop hands them, in batches of ``--batch``.

    .venv/bin/python -m tests.trainer_bench --workload payments --n 20000
    .venv/bin/python -m tests.trainer_bench --workload contacts --n 20000 --mode per-record

``payments``: card payments (1% reported as fraud 1,000 events later, the rest learned
as legitimate after an hour of stream time). ``contacts``: interactions that showed one
or two offers, each answered (11% accepted) 1,000 events later. Events are 0.5 s apart
in stream time over 2,000 customers. ``--mode per-record`` is the loop before batching
(``on_audit`` / ``on_label`` per record, sweep and snapshot check per batch);
``batch`` is ``Trainer.on_batch``. ``--via kafka`` produces the records onto the
topics of an embedded broker first (each audit record padded to ~2 KB, the size of a
real one with its explanation), then times the trainer's own Kafka loop
(``agents.trainer.consume``) from the first record it learns to the last. Prints
records/s and labels learned/s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

from engine.domain.decision import decision_id_of
from engine.ops.infra import start_embedded
from engine.service.trainer import Trainer
from engine.settings import Settings
from engine.store.feedback import FeedbackStore
from engine.store.redisio import connect
from models.learner import Learner
from models.registry import REGISTRY, build

T0 = 1_790_000_000.0
OFFERS = ("gold", "savings", "mortgage", "travel")


def _features(rng: random.Random, etype: str) -> dict[str, Any]:
    return {
        "log_amount": rng.uniform(0, 8), "amount_ratio_30d": rng.expovariate(1.0),
        "new_device": int(rng.random() < 0.05), "known_devices": rng.randint(1, 4),
        "night": int(rng.random() < 0.2), "pin_failures_1h": 0, "channel_switch": 0,
        "terminal_changed": int(rng.random() < 0.3), "speed_kmh": rng.uniform(0, 50),
        "home_distance_km": rng.uniform(0, 30), "n_10m": rng.randint(0, 3), "n_1h": rng.randint(0, 8),
        "n_10m_type": rng.randint(0, 2), "seconds_since_last": rng.uniform(0, 86400),
        "device_customers_24h": 1, "secs_since_password_reset": 1e7, "secs_since_new_device": 1e7,
        "n_7d": rng.randint(0, 20), "n_30d": rng.randint(0, 80), "n_30d_channel": rng.randint(0, 40),
        "amt_30d": rng.uniform(0, 5000), "complaints_7d": 0, "contacts_7d": rng.randint(0, 3),
        "secs_since_login": rng.uniform(0, 86400), "hour": rng.randint(0, 23), "weekday": rng.randint(0, 6),
        "segment": rng.choice(["mass", "young", "affluent"]), "age_band": "30-39", "income_band": "mid",
        "channel": "mobile", "type": etype, "kyc_risk": "low",
    }  # fmt: skip


def workload(kind: str, n: int, seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    """``n`` decisions and their labels, as ("audit" | "label", body) in arrival order."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    later: dict[int, list[dict[str, Any]]] = {}
    for i in range(n):
        ts = T0 + 0.5 * i
        customer = f"c{rng.randrange(2000)}"
        etype = "card_payment" if kind == "payments" else "login"
        shown = rng.sample(OFFERS, rng.randint(1, 2)) if kind == "contacts" else []
        did = decision_id_of(customer, "mobile", f"e{i}")
        out.append(("audit", {
            "decision_id": did, "customer_id": customer,
            "actions": [{"id": a, "kind": "offer"} for a in shown],
            "features": _features(rng, etype),
            "event": {"event_id": f"e{i}", "ts": ts, "type": etype, "channel": "mobile", "attributes": {}},
            "scores": {"fraud": rng.random(), "churn": rng.random(), "offer": {a: rng.random() for a in shown}},
        }))  # fmt: skip
        due = later.setdefault(i + 1000, [])
        if kind == "payments" and rng.random() < 0.01:
            due.append({"kind": "fraud", "event_id": f"e{i}", "channel": "mobile", "label": True,
                        "customer_id": customer, "ts": ts + 500})  # fmt: skip
        for a in shown:
            yes = rng.random() < 0.11
            due.append({"kind": "offer", "decision_id": did, "action_id": a, "label": yes,
                        "response": "accepted" if yes else "declined", "customer_id": customer,
                        "ts": ts + 500})  # fmt: skip
        out.extend(("label", body) for body in later.pop(i, []))
    return out


async def run(settings: Settings, kind: str, n: int, batch: int, mode: str) -> dict[str, float]:
    client = connect(settings)
    learner = Learner({m: build(m) for m in REGISTRY}, {m: REGISTRY[m].features for m in REGISTRY})
    from engine.store.snapshots import SnapshotStore

    store = FeedbackStore(client, settings.key_prefix, settings.feedback_ttl_s)
    trainer = Trainer(settings, learner, store, SnapshotStore(client, settings))
    records = workload(kind, n)
    start, cpu = time.perf_counter(), time.process_time()
    for at in range(0, len(records), batch):
        chunk = records[at : at + batch]
        if mode == "batch":
            await trainer.on_batch(chunk)
        else:
            for what, body in chunk:
                await (trainer.on_audit(body) if what == "audit" else trainer.on_label(body))
            await trainer.sweep()
            await trainer.maybe_snapshot()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    published = len(trainer.versions)
    await client.aclose()
    learned = sum(learner.learned[m] for m in ("fraud", "offers", "churn"))
    return {"records": len(records), "seconds": elapsed, "records_per_s": len(records) / elapsed,
            "labels_learned": learned, "labels_per_s": learned / elapsed,
            "decisions_per_s": n / elapsed, "models_published": published,
            "cpu_us_per_record": 1e6 * cpu / len(records)}  # fmt: skip


async def run_kafka(settings: Settings, kind: str, n: int) -> dict[str, float]:
    """The stream loop end to end: records on the topics first, then learned."""
    import orjson
    from aiokafka import AIOKafkaProducer

    from agents.trainer import consume
    from engine.ops.infra import ensure_topics
    from engine.store.snapshots import SnapshotStore

    await ensure_topics(settings)
    records = workload(kind, n)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    pad = {"explain": {"kept": [], "dropped": [{"id": f"o{i}", "why": "x" * 60} for i in range(20)]}}
    for what, body in records:
        topic = settings.topic("decisions.audit" if what == "audit" else "feedback")
        value = orjson.dumps({**body, **pad} if what == "audit" else body)
        await producer.send(topic, value, key=str(body["customer_id"]).encode())
    await producer.flush()
    await producer.stop()
    client = connect(settings)
    learner = Learner({m: build(m) for m in REGISTRY}, {m: REGISTRY[m].features for m in REGISTRY})
    store = FeedbackStore(client, settings.key_prefix, settings.feedback_ttl_s)
    trainer = Trainer(settings, learner, store, SnapshotStore(client, settings))
    seen = {"n": 0, "first": 0.0, "cpu": 0.0}
    if hasattr(trainer, "on_batch"):
        batch = trainer.on_batch

        async def counted(chunk: Any) -> None:
            seen["first"], seen["cpu"] = (
                seen["first"] or time.perf_counter(),
                seen["cpu"] or time.process_time(),
            )
            await batch(chunk)
            seen["n"] += len(chunk)

        setattr(trainer, "on_batch", counted)  # noqa: B010 (an instance attribute over the method)
    else:  # the loop before on_batch: one call per record
        for name in ("on_audit", "on_label"):
            one = getattr(trainer, name)

            async def counted_one(body: Any, retry: bool = False, _one: Any = one) -> None:
                seen["first"], seen["cpu"] = (
                    seen["first"] or time.perf_counter(),
                    seen["cpu"] or time.process_time(),
                )
                await (_one(body, retry) if retry else _one(body))
                seen["n"] += not retry

            setattr(trainer, name, counted_one)
    stop = asyncio.Event()
    task = asyncio.create_task(consume(trainer, settings, stop))
    while seen["n"] < len(records) and not task.done():
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - seen["first"]
    cpu = time.process_time() - seen["cpu"]
    stop.set()
    await task
    await client.aclose()
    learned = sum(learner.learned[m] for m in ("fraud", "offers", "churn"))
    return {"records": len(records), "seconds": elapsed, "records_per_s": len(records) / elapsed,
            "labels_learned": learned, "labels_per_s": learned / elapsed,
            "decisions_per_s": n / elapsed, "cpu_us_per_record": 1e6 * cpu / len(records)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=("payments", "contacts"), default="payments")
    p.add_argument("--n", type=int, default=20_000, help="decisions (labels come on top)")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--mode", choices=("batch", "per-record"), default="batch")
    p.add_argument("--via", choices=("calls", "kafka"), default="calls")
    args = p.parse_args()
    base = Settings.build()
    emb = start_embedded(base, broker=args.via == "kafka")
    try:
        settings = emb.settings_for(base).replace(
            key_prefix=f"bench{random.randrange(10**6)}",
            fraud_maturity_s=3600.0,
            offer_response_window_s=3600.0,
        )
        if args.via == "kafka":
            from engine.ops.infra import wait_kafka

            wait_kafka(settings)
            result = asyncio.run(run_kafka(settings, args.workload, args.n))
        else:
            result = asyncio.run(run(settings, args.workload, args.n, args.batch, args.mode))
    finally:
        emb.stop()
    print(
        f"{args.workload} {'kafka' if args.via == 'kafka' else f'{args.mode} batch={args.batch}'}: "
        + ", ".join(f"{k}={v:,.1f}" for k, v in result.items())
    )


if __name__ == "__main__":
    main()
