"""Privacy on a real worker, Redis and broker (issue 17, finding 10).

Before: ``decisions.audit`` copied every field an event carried, unknown ones included
(a ``national_id`` a channel sent by mistake was kept for the topic's retention), and each
event refreshed the profile's TTL, so an active customer's profile never expired however
long ago the CRM last wrote it. Now the audit record keeps the contract's fields and only
the attributes rules or models read, and the profile's TTL runs from its last write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess, isolated, running_worker
from engine.settings import Settings
from engine.store import keys
from engine.store.redisio import connect
from tests.helpers import consume_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(isolated(infra), tmp_path_factory.mktemp("privacy")) as w:
        yield w


def test_the_audit_record_keeps_only_what_rules_and_models_read(worker: WorkerProcess) -> None:
    s = worker.settings
    event = {
        "event_id": "pv-1", "customer_id": "PV1", "channel": "internet", "type": "transfer",
        "ts": time.time(), "amount": 50.0, "national_id": "AB123456C",
        "attributes": {"new_payee": True, "payee_name": "J. Smith", "memo": "rent"},
    }  # fmt: skip
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        assert http.post("/v1/decisions", json=event).status_code == 200
    records = asyncio.run(consume_until(s.kafka_bootstrap, [s.topic("decisions.audit")], 1, timeout=30))
    audited = [orjson.loads(r[2]) for r in records if r[2] and b'"pv-1"' in r[2]]
    assert len(audited) == 1
    kept = audited[0]["event"]
    assert "national_id" not in kept  # before: copied verbatim
    assert kept["attributes"] == {"new_payee": True}  # a risk rule reads it; the rest is not kept
    assert kept["amount"] == 50.0 and kept["type"] == "transfer"


def test_events_do_not_keep_a_profile_alive(worker: WorkerProcess) -> None:
    s = worker.settings
    key = keys.customer(s.key_prefix, "PV2") + keys.PROFILE

    async def ttl(set_first: bool) -> int:
        client = connect(s)
        try:
            if set_first:
                await client.set(key, orjson.dumps({"segment": "mass"}), ex=1000)
            return int(await client.ttl(key))
        finally:
            await client.aclose()

    asyncio.run(ttl(True))
    event = {
        "event_id": "pv-2",
        "customer_id": "PV2",
        "channel": "atm",
        "type": "balance_inquiry",
        "ts": time.time(),
    }
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        assert http.post("/v1/decisions", json=event).status_code == 200
    assert 0 < asyncio.run(ttl(False)) <= 1000  # before: reset to profile_ttl_s (400 days)
