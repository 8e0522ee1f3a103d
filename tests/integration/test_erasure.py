"""``beacon customers erase`` on a real worker, Redis and broker (issue 17, finding 10).

Before there was no erasure at all. A customer with state, a profile, a device and a
risk alert is erased: their keys go, the device no longer names them, the alert stays on
the desk without who it was about, the erasure log has an entry, and another customer is
untouched.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess, isolated, running_worker, settings_env
from engine.settings import Settings
from engine.store.erasure import reference
from engine.store.hookbox import HookBox
from engine.store.layout import KeyLayout
from engine.store.redisio import connect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(isolated(infra), tmp_path_factory.mktemp("erase")) as w:
        yield w


def _pins(http: httpx.Client, customer: str) -> None:
    for i in range(3):  # three PIN failures at one ATM: the pin_bruteforce rule alerts
        event = {"event_id": f"pin-{customer[-1]}-{i}", "customer_id": customer, "channel": "atm",
                 "type": "pin_failure", "ts": time.time(), "terminal_id": "T1", "device_id": f"card-{customer}"}  # fmt: skip
        assert http.post("/v1/decisions", json=event).status_code == 200


def _beacon(w: WorkerProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "customers", *argv],
        env=settings_env(w.settings), capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )  # fmt: skip


def _keys(s: Settings, customer: str) -> list[bytes]:
    async def go() -> list[bytes]:
        client = connect(s)
        try:
            base = KeyLayout.of(s.key_prefix, s.redis_cluster, s.redis_slot_groups).customer(customer)
            return [k async for k in client.scan_iter(match=base + ":*")]
        finally:
            await client.aclose()

    return asyncio.run(go())


def _queue_webhooks(s: Settings) -> None:
    """A delivery about ER1 still queued (its receiver down), one about ER2 dead-lettered."""

    async def go() -> None:
        client = connect(s)
        try:
            box = HookBox(client, s.key_prefix)
            body = {"alert_id": "a-er1", "customer_id": "ER1", "amount": 900, "context": {"geo": [1, 2]}}
            await box.enqueue("d-1", "siem", orjson.dumps(body), 1)
            await box.enqueue("d-2", "siem", orjson.dumps({"alert_id": "a-er2", "customer_id": "ER2"}), 1)
            (other,) = [d for d in await box.claim(10**13, 1000, 10) if d.id == "d-2"]
            await box.dead_letter(other, "test", 2)
        finally:
            await client.aclose()

    asyncio.run(go())


def _webhook_bodies(s: Settings) -> tuple[dict[str, object], dict[str, object]]:
    async def go() -> tuple[dict[str, object], dict[str, object]]:
        client = connect(s)
        try:
            box = HookBox(client, s.key_prefix)
            queued = orjson.loads(await client.hget(box.item("d-1"), "b"))
            return queued, (await box.dead())[0]["body"]
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_customer_is_erased_and_their_alerts_made_anonymous(worker: WorkerProcess) -> None:
    s = worker.settings
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        assert (
            http.put("/v1/customers/ER1/profile", json={"segment": "mass", "name": "Erin"}).status_code == 200
        )
        _pins(http, "ER1")
        _pins(http, "ER2")
        deadline, alerts = time.monotonic() + 30, []
        while len(alerts) < 2 and time.monotonic() < deadline:
            alerts = [
                a for a in http.get("/v1/alerts").json()["alerts"] if a["customer_id"] in ("ER1", "ER2")
            ]
            time.sleep(0.3)
        assert len(alerts) == 2
        mine = next(a["alert_id"] for a in alerts if a["customer_id"] == "ER1")
        assert _keys(s, "ER1") and _keys(s, "ER2")
        _queue_webhooks(s)
        dry = _beacon(worker, "erase", "ER1", "--dry-run")
        assert dry.returncode == 0 and "would erase" in dry.stdout and ":profile" in dry.stdout, dry.stdout
        assert _keys(s, "ER1")  # a dry run changes nothing
        done = _beacon(worker, "erase", "ER1", "--by", "dpo@bank")
        assert done.returncode == 0, done.stderr
        assert "1 alerts made anonymous" in done.stdout, done.stdout
        assert _keys(s, "ER1") == [] and _keys(s, "ER2")
        assert http.get("/v1/customers/ER1").status_code == 404
        detail = http.get(f"/v1/alerts/{mine}").json()
        # The inbox's customer index follows: the reference finds the alert, the id nothing.
        by_ref = http.get("/v1/alerts", params={"customer": reference("ER1")}).json()["alerts"]
        assert [a["alert_id"] for a in by_ref] == [mine]
        assert http.get("/v1/alerts", params={"customer": "ER1"}).json()["alerts"] == []
    text = orjson.dumps(detail).decode()
    assert detail["alert"]["customer_id"] == reference("ER1") and "ER1" not in text.replace(mine, "")
    queued, dead = _webhook_bodies(s)
    assert queued == {"customer_id": reference("ER1"), "alert_id": "a-er1"} and dead["customer_id"] == "ER2"
    log = _beacon(worker, "erasures")
    entry = orjson.loads(log.stdout.splitlines()[0])
    assert (entry["customer"], entry["by"], entry["alerts"]) == (reference("ER1"), "dpo@bank", 1)
