"""A real worker with authentication on, driven through both paths and the alert desk,
then scraped as Prometheus would: with the scrape token. Every series of the catalogue
is there, the ones this traffic touches have samples, and no label value is one of the
customer, event, decision or alert ids that went through."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from engine.ops.infra import ensure_topics
from engine.ops.launcher import WorkerProcess
from engine.service import catalogue
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration
SCRAPE = "scrape-" + "s" * 32
PASSWORD = "correct horse battery"
N_KAFKA = 40


async def _setup(s: Settings) -> dict[str, str]:
    client = connect(s)
    store = AuthStore(client, s.key_prefix)
    await store.add_user("otto", "risk_officer", PASSWORD)
    tokens = {c: await store.add_token("channel", f"{c}-system", c) for c in ("atm", "mobile", "internet")}
    tokens["otto"] = await store.add_token("risk_officer", "otto-token")
    await client.aclose()
    return tokens


@pytest.fixture(scope="module")
def scraped(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    s = isolated(infra, auth_required=True, metrics_token=SCRAPE)
    tokens = asyncio.run(_setup(s))
    asyncio.run(ensure_topics(s))
    with running_worker(s, tmp_path_factory.mktemp("catalogue")) as worker:
        sent = _drive(worker, s, tokens)
        yield {"worker": worker, "tokens": tokens, "sent": sent, "text": _scrape_until_lag(worker)}


def _event(event_id: str, customer: str, channel: str, etype: str, **kw: Any) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": customer, "channel": channel, "type": etype,
            "ts": time.time(), **kw}  # fmt: skip


def _drive(worker: WorkerProcess, s: Settings, tokens: dict[str, str]) -> set[str]:
    """HTTP decisions (offers, a rule that fires, a repeat, a bad event, a conflicting
    repeat), an offer answer, Kafka decisions, and an alert worked to a disposition.
    Returns every id that went in."""
    ids: set[str] = set()

    def post(channel: str, body: bytes) -> httpx.Response:
        auth = {"Authorization": f"Bearer {tokens[channel]}"}
        return httpx.post(f"{worker.url}/v1/decisions", content=body, headers=auth, timeout=10)

    shown = ""
    sent: list[bytes] = []
    for i in range(6):
        ev = _event(f"mc-m{i}", f"MC{i}", "mobile", "login", device_id="dev-1")
        sent.append(orjson.dumps(ev))
        reply = post("mobile", sent[-1])
        assert reply.status_code == 200, reply.text
        d = reply.json()
        ids |= {ev["event_id"], ev["customer_id"], d["decision_id"]}
        shown = shown or next((a["id"] for a in d["actions"] if a["kind"] == "offer"), "")
    assert post("mobile", sent[0]).status_code == 200  # repeat (the same payload)
    conflict = post("mobile", orjson.dumps(_event("mc-m0", "MC0", "mobile", "login")))  # another payload
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflicting_replay"
    answer = _event("mc-r1", "MC0", "mobile", "offer_response",
                    attributes={"decision_id": "d-x", "action_id": shown or "x", "response": "accepted"})  # fmt: skip
    assert post("mobile", orjson.dumps(answer)).status_code == 200
    assert post("mobile", b'{"event_id": 1}').status_code == 400
    for i in range(3):
        ev = _event(f"mc-p{i}", "MCP", "atm", "pin_failure", terminal_id="ATM-9")
        ids |= {ev["event_id"]}
        assert post("atm", orjson.dumps(ev)).status_code == 200
    ids |= {"MCP", "mc-r1", "d-x"} | _kafka(s)
    ids |= _work_alert(worker, tokens["otto"], "MCP")
    return ids


def _kafka(s: Settings) -> set[str]:
    async def send() -> set[str]:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=2)
        await producer.start()
        try:
            events = [_event(f"mc-k{i}", f"MCK{i % 7}", "internet", "page_view") for i in range(N_KAFKA)]
            for ev in events:
                await producer.send_and_wait(
                    s.topic("interactions"), orjson.dumps(ev), key=ev["customer_id"].encode()
                )
        finally:
            await producer.stop()
        return {e["event_id"] for e in events} | {e["customer_id"] for e in events}

    return asyncio.run(send())


def _work_alert(worker: WorkerProcess, token: str, customer: str) -> set[str]:
    with httpx.Client(base_url=worker.url, timeout=5, headers={"Authorization": f"Bearer {token}"}) as http:
        deadline, found = time.monotonic() + 30, []
        while not found and time.monotonic() < deadline:
            found = http.get("/v1/alerts", params={"customer": customer}).json()["alerts"]
            time.sleep(0.3)
        assert found, "the pin failures raised no alert"
        aid = found[0]["alert_id"]
        assert http.post(f"/v1/alerts/{aid}/ack", json={}).status_code == 200
        resolved = http.post(f"/v1/alerts/{aid}/resolve", json={"disposition": "fraud"})
        assert resolved.status_code == 200, resolved.text
    return {aid}


def _scrape(worker: WorkerProcess) -> str:
    reply = httpx.get(f"{worker.url}/metrics", headers={"Authorization": f"Bearer {SCRAPE}"}, timeout=5)
    assert reply.status_code == 200, reply.text
    return reply.text


def _scrape_until_lag(worker: WorkerProcess) -> str:
    """Kafka decisions and the lag gauge arrive on their own clocks: wait for both."""
    deadline = time.monotonic() + 60
    text = _scrape(worker)
    while time.monotonic() < deadline and not (
        _value(text, "beacon_events_total", path="kafka", outcome="decided") >= N_KAFKA
        and "beacon_consumer_lag_records{" in text
        and "beacon_alerts_open{" in text
    ):
        time.sleep(0.5)
        text = _scrape(worker)
    return text


def _samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(text: str, name: str, **labels: str) -> float:
    return sum(s.value for s in _samples(text) if s.name == name and labels.items() <= s.labels.items())


def test_scrape_needs_the_scrape_token_or_a_reader(scraped: dict[str, Any]) -> None:
    url, tokens = scraped["worker"].url, scraped["tokens"]
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert (
        httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {tokens['atm']}"}).status_code == 403
    )
    assert (
        httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {tokens['otto']}"}).status_code == 200
    )
    # The scrape token opens /metrics and nothing else.
    assert httpx.get(f"{url}/v1/alerts", headers={"Authorization": f"Bearer {SCRAPE}"}).status_code == 401


def test_every_worker_series_of_the_catalogue_is_served(scraped: dict[str, Any]) -> None:
    served = {family.name for family in text_string_to_metric_families(scraped["text"])}
    # The text format has no info type: an info family is served as a gauge named *_info.
    expected = {
        name + "_info" if kind == "info" else name for name, kind in catalogue.families()["worker"].items()
    }
    assert expected - served == set()


def test_the_traffic_shows_up_where_the_catalogue_says(scraped: dict[str, Any]) -> None:
    text = scraped["text"]
    assert _value(text, "beacon_events_total", path="http", outcome="decided") >= 10
    assert _value(text, "beacon_events_total", path="http", outcome="replayed") == 1
    assert _value(text, "beacon_events_total", path="kafka", outcome="decided") == N_KAFKA
    assert _value(text, "beacon_dlq_total", path="http") == 2  # the bad event and the conflict
    assert _value(text, "beacon_dlq_total", path="http", reason="conflicting_replay") == 1
    assert _value(text, "beacon_decisions_total", path="kafka", channel="internet") == N_KAFKA
    assert _value(text, "beacon_decisions_total", channel="atm") == 3
    for path in ("http", "kafka"):
        assert _value(text, "beacon_decision_latency_seconds_count", path=path) > 0
    for stage in ("state", "models", "rules", "record", "publish"):
        assert _value(text, "beacon_stage_latency_seconds_count", stage=stage) > 0, stage
    assert _value(text, "beacon_rule_fires_total", rule="pin_bruteforce") >= 1
    assert _value(text, "beacon_alerts_total", rule="pin_bruteforce") >= 1
    assert _value(text, "beacon_desk_alerts_total", change="raised") >= 1
    assert _value(text, "beacon_desk_moves_total", action="resolve", by="officer") == 1
    assert _value(text, "beacon_alert_time_to_acknowledge_seconds_count") == 1
    assert _value(text, "beacon_alert_time_to_resolve_seconds_count", disposition="fraud") == 1
    assert _value(text, "beacon_offers_shown_total", channel="mobile") >= 1
    assert _value(text, "beacon_offer_responses_total", response="accepted") == 1
    assert _value(text, "beacon_consumer_lag_records") >= 0 and "beacon_consumer_lag_records{" in text
    for component in ("redis", "broker", "rules"):
        assert _value(text, "beacon_ready", component=component) == 1
    [build] = [s for s in _samples(text) if s.name == "beacon_build_info"]
    assert build.labels["rules"] and build.labels["version"]
    assert _value(text, "process_resident_memory_bytes") > 0


def test_no_label_value_is_an_id_that_went_through(scraped: dict[str, Any]) -> None:
    sent: set[str] = scraped["sent"]
    for sample in _samples(scraped["text"]):
        for name, value in sample.labels.items():
            assert value not in sent, (sample.name, name, value)
            assert len(value) <= 64, (sample.name, name, value)
