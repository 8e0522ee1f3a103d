"""Signed records (issue 17, finding 1): a Kafka writer without the signing key cannot
forge an alert into the desk's inbox (and from there to the webhooks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from engine.domain.recordsig import sign
from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from tests.helpers import consume_until, isolated, running_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    s = isolated(infra).replace(record_signing_key="worker-secret", record_key_id="w1")
    with running_worker(s, tmp_path_factory.mktemp("signed")) as w:
        yield w


def _alert(customer: str, alert_id: str) -> bytes:
    return orjson.dumps(
        {
            "alert_id": alert_id,
            "customer_id": customer,
            "rule_id": "pin_bruteforce",
            "severity": "critical",
            "reason": "forged",
            "action": "block",
            "typologies": ["card_compromise"],
            "event_id": f"{alert_id}-e",
            "decision_id": f"d-{alert_id}",
            "channel": "atm",
            "ts": time.time(),
        }
    )


def _inbox(http: httpx.Client, customer: str, timeout: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = http.get("/v1/alerts", params={"customer": customer}).json()["alerts"]
        if found:
            return list(found)
        time.sleep(0.3)
    return []


def test_a_forged_alert_goes_to_the_dlq_and_never_reaches_the_inbox(worker: WorkerProcess) -> None:
    s = worker.settings
    topic = s.topic("risk.alerts")
    unsigned, wrong_key = _alert("F1", "F1-a"), _alert("F1", "F1-b")
    tampered_value = _alert("F1", "F1-c")
    forged_sig = sign(topic, b"F1", tampered_value, "w1", b"not-the-secret")

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, unsigned, key=b"F1")
            await producer.send_and_wait(
                topic, wrong_key, key=b"F1", headers=[sign(topic, b"F1", wrong_key, "x9", b"k")]
            )
            await producer.send_and_wait(topic, tampered_value, key=b"F1", headers=[forged_sig])
        finally:
            await producer.stop()

    asyncio.run(publish())
    dead = asyncio.run(consume_until(s.kafka_bootstrap, [s.topic("risk.alerts.dlq")], 3, timeout=30))
    codes = sorted(dict(h)["beacon-error-code"] for _, _, _, h in dead)
    assert codes == [b"record_forged", b"record_unknown_key", b"record_unsigned"]
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        # The worker's own alerts are signed and still raised.
        for i in range(3):
            ev = {"event_id": f"F2-p{i}", "customer_id": "F2", "channel": "atm", "type": "pin_failure",
                  "ts": time.time(), "terminal_id": "ATM-1"}  # fmt: skip
            assert http.post("/v1/decisions", json=ev).status_code == 200
        assert len(_inbox(http, "F2", timeout=30)) == 1
        assert _inbox(http, "F1", timeout=1) == []
        metrics = http.get("/metrics").text
    assert 'beacon_records_refused_total{reason="record_unsigned",topic="' + topic + '"} 1.0' in metrics
