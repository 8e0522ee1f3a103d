"""Signed records (issue 17, finding 1): the trainer learns only labels and decisions
signed by a trusted producer; a forged label goes to ``feedback.dlq``, never learned."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.trainer import consume
from engine.domain.recordsig import sign
from engine.ops.infra import ensure_topics
from engine.service.trainer import Trainer
from engine.settings import Settings
from engine.store.feedback import FeedbackStore
from engine.store.redisio import connect
from models.learner import Learner
from models.registry import REGISTRY, build
from models.trainer_metrics import TrainerMetrics
from tests.helpers import consume_until, isolated
from tests.integration.test_trainer import T0, audit, fraud_label

pytestmark = pytest.mark.integration
SECRET = b"producer-secret"


async def test_a_forged_label_is_refused_to_the_dlq_and_not_learned(infra: Settings) -> None:
    s = isolated(infra, fraud_maturity_s=30 * 86400.0, record_verify_keys="p1=" + SECRET.decode())
    await ensure_topics(s)
    audit_t, feedback_t = s.topic("decisions.audit"), s.topic("feedback")
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    await producer.start()

    async def send(topic: str, body: dict[str, object], signed: bool) -> None:
        value, key = orjson.dumps(body), str(body["customer_id"]).encode()
        headers = [sign(topic, key, value, "p1", SECRET)] if signed else None
        await producer.send_and_wait(topic, value, key=key, headers=headers)

    for name in ("p0", "p1"):
        await send(audit_t, audit(name, T0, etype="card_payment"), signed=True)
    await send(audit_t, audit("p2", T0, etype="card_payment"), signed=False)  # forged decision
    await send(feedback_t, fraud_label("p1", T0 + 5), signed=False)  # forged label
    await send(feedback_t, fraud_label("p0", T0 + 5), signed=True)
    await producer.stop()

    client = connect(s)
    trainer = Trainer(s, _learner(), FeedbackStore(client, s.key_prefix, s.feedback_ttl_s))
    trainer.metrics = TrainerMetrics(process=False)
    stop = asyncio.Event()
    task = asyncio.create_task(consume(trainer, s, stop))
    dead = await consume_until(
        s.kafka_bootstrap, [s.topic("feedback.dlq"), s.topic("decisions.audit.dlq")], 2, 60
    )
    for _ in range(300):
        if trainer.learner.learned["fraud"] >= 1:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 30)
    await client.aclose()

    assert sorted(dict(h)["beacon-error-code"] for _, _, _, h in dead) == [b"record_unsigned"] * 2
    assert trainer.learner.learned["fraud"] == 1  # p0's genuine report; p1's forged one is not learned
    sample = trainer.metrics.registry.get_sample_value
    assert sample("beacon_records_refused_total", {"topic": feedback_t, "reason": "record_unsigned"}) == 1


def _learner() -> Learner:
    return Learner({n: build(n) for n in REGISTRY}, {n: REGISTRY[n].features for n in REGISTRY})
