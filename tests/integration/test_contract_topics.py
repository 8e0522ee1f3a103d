"""Every topic's records, consumed after real traffic through a real worker and broker,
validate against that topic's JSON Schema in engine/contract/topics/ (issue 17, the contract).

A record is checked as ``{"key": str|null, "headers": {name: str}, "value": <JSON, or the raw
text on a dead-letter topic>}``. Data-driven: a merger adding a topic adds its schema file and
a row to ``TOPICS``; a new header or field fails ``test_topic_records_match_their_schema``
(the schemas forbid unknown headers and fields), naming the topic.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from jsonschema import Draft202012Validator

from engine.contract import topic_schema
from engine.ops.infra import ensure_topics
from engine.ops.traffic import Population, TrafficGenerator
from engine.settings import Settings
from tests.helpers import Record, consume_until, isolated, running_worker

pytestmark = pytest.mark.integration
CHANNELS = ("atm", "internet", "mobile")
# topic as named in settings.topic() -> schema file stem; "raw": the value is not JSON
TOPICS: dict[str, tuple[str, bool]] = {
    "interactions": ("interactions", False),
    "interactions.dlq": ("dlq", True),
    **{f"decisions.{c}": ("decisions", False) for c in CHANNELS},
    "decisions.audit": ("decisions.audit", False),
    "risk.alerts": ("risk.alerts", False),
}


def as_document(record: Record, raw: bool) -> dict[str, Any]:
    _, key, value, headers = record
    return {
        "key": None if key is None else key.decode(),
        "headers": {name: bytes(v).decode() for name, v in headers},
        "value": value.decode("utf-8", "replace") if raw else orjson.loads(value),
    }


def _event_id(value: bytes) -> Any:
    try:
        return orjson.loads(value).get("event_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None


async def test_topic_records_match_their_schema(infra: Settings, logdir: Path) -> None:
    settings = isolated(infra)
    await ensure_topics(settings)
    gen = TrafficGenerator(Population(20, seed=5), seed=6, invalid_rate=0.1, fraud_rate=0.2)
    now = time.time()
    records = [gen.next_record(now - 600 + i) for i in range(300)]
    with running_worker(settings, logdir):
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            for key, value, _ in records:
                await producer.send(settings.topic("interactions"), value, key=key)
            await producer.flush()
        finally:
            await producer.stop()
        names = {settings.topic(t): t for t in TOPICS}
        got = await consume_until(
            settings.kafka_bootstrap,
            list(names),
            want=10**6,
            timeout=120,
            done=lambda rs: (
                {r[0] for r in rs} >= set(names) - {settings.topic("risk.alerts")}
                and sum(r[0] == settings.topic("decisions.audit") for r in rs) >= 250
            ),
        )
    decided = {orjson.loads(r[2])["event_id"] for r in got if names[r[0]].startswith("decisions.")} - {None}
    seen: dict[str, int] = {}
    for record in got:
        topic = names[record[0]]
        stem, raw = TOPICS[topic]
        if topic == "interactions" and _event_id(record[2]) not in decided:
            continue  # refused by the parser: checked on interactions.dlq
        doc = as_document(record, raw)
        errors = sorted(Draft202012Validator(topic_schema(stem)).iter_errors(doc), key=str)
        assert not errors, f"{topic}: {errors[0].message} at {list(errors[0].absolute_path)} in {doc}"
        seen[topic] = seen.get(topic, 0) + 1
    missing = {t for t in TOPICS if t != "risk.alerts"} - set(seen)
    assert not missing, f"no records seen on {missing}: {seen}"
