"""The alert desk through a real worker's HTTP API: an alert raised by decisions shows up
in the inbox, is worked to a disposition, and the disposition reaches `feedback`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from tests.helpers import consume_until, isolated, running_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(isolated(infra), tmp_path_factory.mktemp("desk")) as w:
        yield w


def _pins(http: httpx.Client, customer: str, n: int = 3) -> None:
    for i in range(n):
        ev = {"event_id": f"{customer}-p{i}", "customer_id": customer, "channel": "atm", "type": "pin_failure",
              "ts": time.time(), "terminal_id": "ATM-1"}  # fmt: skip
        assert http.post("/v1/decisions", content=orjson.dumps(ev)).status_code == 200


def _inbox(http: httpx.Client, customer: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = http.get("/v1/alerts", params={"customer": customer}).json()["alerts"]
        if found:
            return list(found)
        time.sleep(0.3)
    return []


def test_an_alert_is_worked_to_a_disposition_that_becomes_a_label(worker: WorkerProcess) -> None:
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        _pins(http, "D1")
        [summary] = _inbox(http, "D1")
        assert summary["status"] == "open" and summary["rule_ids"] == ["pin_bruteforce"]
        detail = http.get(f"/v1/alerts/{summary['alert_id']}").json()
        assert detail["alert"]["context"]["conditions"]["values"]["state.pin_failures_1h"] == 3
        assert detail["customer"]["customer_id"] == "D1" and detail["audit"][0]["action"] == "raised"
        aid = summary["alert_id"]
        assert http.post(f"/v1/alerts/{aid}/ack", json={}).json()["error"]["field"] == "by"
        assert http.post(f"/v1/alerts/{aid}/ack", json={"by": "ann"}).status_code == 200
        bad = http.post(f"/v1/alerts/{aid}/resolve", json={"by": "ann", "disposition": "maybe"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "disposition"
        done = http.post(
            f"/v1/alerts/{aid}/resolve", json={"by": "ann", "disposition": "fraud", "note": "cloned"}
        )
        assert done.status_code == 200 and done.json()["alert"]["status"] == "resolved"
        again = http.post(f"/v1/alerts/{aid}/ack", json={"by": "ann"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_resolved"
        trail = http.get(f"/v1/alerts/{aid}").json()["audit"]
        assert [(t["action"], t["who"]) for t in trail] == [
            ("raised", "beacon"),
            ("ack", "ann"),
            ("resolve", "ann"),
        ]
        snooze = http.post(
            f"/v1/alerts/{aid}/snooze", json={"by": "ann", "minutes": 60, "note": "card replaced"}
        )
        assert snooze.status_code == 200
    s = worker.settings

    def labelled(records: list[Any]) -> bool:
        return any(b'"disposition"' in v for _, _, v, _ in records)

    out = asyncio.run(consume_until(s.kafka_bootstrap, [s.topic("feedback")], 0, timeout=30, done=labelled))
    labels = [orjson.loads(v) for _, _, v, _ in out if b'"disposition"' in v]
    assert {(x["event_id"], x["label"]) for x in labels} >= {("D1-p2", True)}


def test_snoozed_rule_raises_no_new_alert_for_the_customer(worker: WorkerProcess) -> None:
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        _pins(http, "D2")
        [summary] = _inbox(http, "D2")
        aid = summary["alert_id"]
        assert (
            http.post(
                f"/v1/alerts/{aid}/snooze", json={"by": "ann", "minutes": 60, "note": "travelling"}
            ).status_code
            == 200
        )
        http.post(f"/v1/alerts/{aid}/resolve", json={"by": "ann", "disposition": "legitimate"})
        ev = {
            "event_id": "D2-p9",
            "customer_id": "D2",
            "channel": "atm",
            "type": "pin_failure",
            "ts": time.time(),
        }
        d = http.post("/v1/decisions", content=orjson.dumps(ev)).json()
        assert d["risk"]["verdict"] == "block" and d["alerts"] == []  # verdict stands, alert held back


def test_alert_changes_stream_live_as_server_sent_events(worker: WorkerProcess) -> None:
    import threading

    seen: list[dict[str, Any]] = []
    opened = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(base_url=worker.url, timeout=30) as client,
            client.stream("GET", "/v1/alerts/stream") as r,
        ):
            assert r.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    seen.append(orjson.loads(line[6:]))
                    if any(c["change"] == "ack" for c in seen):
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(10)
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        _pins(http, "D3")
        [summary] = _inbox(http, "D3")
        http.post(f"/v1/alerts/{summary['alert_id']}/ack", json={"by": "ann"})
    listener.join(30)
    changes = [(c["alert_id"], c["change"]) for c in seen if c["customer_id"] == "D3"]
    assert changes == [(summary["alert_id"], "raised"), (summary["alert_id"], "ack")]


def test_bad_alert_records_go_to_the_dead_letter_topic_and_the_desk_keeps_going(
    worker: WorkerProcess,
) -> None:
    """Issue 14, finding 6: a record without ``reason`` failed the raise script every time
    and the desk retried it forever, holding back every alert behind it."""
    from aiokafka import AIOKafkaProducer

    s = worker.settings
    good = {"alert_id": "D4-a1", "customer_id": "D4", "rule_id": "pin_bruteforce", "severity": "high",
            "reason": "3 PIN failures", "action": "block", "typologies": ["card_compromise"],
            "event_id": "D4-p1", "decision_id": "d-D4", "channel": "atm", "ts": time.time()}  # fmt: skip
    no_reason = {k: v for k, v in good.items() if k != "reason"} | {"alert_id": "D4-bad"}
    bad_severity = good | {"alert_id": "D4-bad2", "severity": "apocalyptic"}
    records = [b"not json", orjson.dumps(no_reason), orjson.dumps([good]), orjson.dumps(bad_severity),
               orjson.dumps(good)]  # fmt: skip

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            for value in records:
                await producer.send_and_wait(s.topic("risk.alerts"), value, key=b"D4")
        finally:
            await producer.stop()

    asyncio.run(publish())
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        [summary] = _inbox(http, "D4", timeout=20)
        assert summary["rule_ids"] == ["pin_bruteforce"]
    dead = asyncio.run(consume_until(s.kafka_bootstrap, [s.topic("risk.alerts.dlq")], 4, timeout=20))
    assert sorted(v for _, _, v, _ in dead) == sorted(records[:4])
    codes = {dict(h)["beacon-error-code"] for _, _, _, h in dead}
    assert codes == {b"invalid_alert"}
    fields = sorted(dict(h)["beacon-error-field"] for _, _, _, h in dead)
    assert fields == sorted([b"", b"reason", b"", b"severity"])
