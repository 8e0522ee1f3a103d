"""Shadow rules on real workers, Redis and broker (issue 18, item 3).

A candidate version published with ``beacon rules publish --shadow`` runs beside the live
one on every decision and acts on nothing: the channel's answers are the same, byte for
byte but for the batch timings, with and without it over the same events; what it would
have done differently goes to ``decisions.shadow`` (signed, per its schema) and to the
``beacon_shadow_*`` metrics, and a planted rule is counted there exactly as often as a
hand count of the events says. ``beacon rules promote`` makes it live, ``beacon rules
shadow --stop`` ends it, and an unsigned one is refused like an unsigned live bundle.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from engine.cli.main import main
from engine.contract import topic_schema
from engine.domain.recordsig import verify
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.rules import RuleStore
from engine.store.ruleshadow import ShadowChanged, ShadowStore
from tests.helpers import consume_until, isolated, running_worker, signing_keys
from tests.rulebundles import bundle

pytestmark = pytest.mark.integration

PLANTED = "shadow_large_withdrawal"
PLANTED_PACK = f"""kind: risk
rules:
  - id: {PLANTED}
    name: Large cash withdrawal (candidate)
    severity: medium
    when: event.type == "withdrawal" && event.amount >= 700.0 && event.terminal_id in ["T-9000", "T-9001", "T-9002"]
    reason: "withdrawal of {{event.amount:.2f}}"
    action: review
"""
CUSTOMERS, PER_CUSTOMER = 40, 8
T0 = time.time() - 3600  # one event time line for every run of this module
KINDS = (("atm", "withdrawal"), ("atm", "balance_inquiry"), ("mobile", "login"), ("internet", "transfer"))


def events() -> list[list[dict[str, Any]]]:
    """Per customer, their events in order (the same list for every run)."""
    rng = random.Random(18)
    out = []
    for c in range(CUSTOMERS):
        mine = []
        for j in range(PER_CUSTOMER):
            channel, etype = KINDS[rng.randrange(len(KINDS))]
            event: dict[str, Any] = {"event_id": f"s{c}-{j}", "customer_id": f"SH{c:03d}", "channel": channel,
                                     "type": etype, "ts": round(T0 + j * 30 + c * 0.01, 3)}  # fmt: skip
            if etype in ("withdrawal", "transfer"):
                event["amount"] = float(rng.choice((20, 60, 200, 650, 699.99, 700, 750, 1200)))
            if etype == "withdrawal":
                # One terminal per customer: the live pack raises no alert on these events, so no
                # answer depends on when the alert desk files one (state.open_alerts is its inbox).
                event["terminal_id"] = f"T-{9000 + c % 3}"
            mine.append(event)
        out.append(mine)
    return out


def hand_count(per_customer: list[list[dict[str, Any]]]) -> int:
    return sum(1 for mine in per_customer for e in mine if e["type"] == "withdrawal" and e["amount"] >= 700.0)


def shadow_folder(tmp_path: Path, settings: Settings) -> Path:
    folder = tmp_path / "candidate"
    shutil.copytree(settings.rules_path(), folder)
    (folder / "planted.yaml").write_text(PLANTED_PACK, encoding="utf-8")
    return folder


def sample(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def until(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def rules_status(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/rules", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def drive(url: str, per_customer: list[list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every customer's events in order, all customers at once; the answers by event id."""
    answers: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def one(mine: list[dict[str, Any]]) -> None:
            for event in mine:
                r = await http.post("/v1/decisions", content=orjson.dumps(event))
                assert r.status_code == 200, r.text
                answers[event["event_id"]] = r.json()

        await asyncio.gather(*(one(mine) for mine in per_customer))
    return answers


async def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], s: Settings, *argv: str
) -> str:
    """``beacon rules ...`` as an analyst runs it (in a thread: it runs its own event loop)."""
    monkeypatch.setenv("BEACON_SIGNING_KEY_FILE", s.signing_key_file)
    code = await asyncio.to_thread(
        main, ["rules", *argv, "--redis-url", s.redis_url, "--key-prefix", s.key_prefix]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    return out


async def test_shadow_rules_change_no_answer_and_count_the_planted_rule(
    infra: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = signing_keys()
    options = {"rules_poll_s": 0.5, "record_signing_key": "shadow-test-secret", **keys}
    per_customer = events()
    n = CUSTOMERS * PER_CUSTOMER

    plain = isolated(infra, **options)
    with running_worker(plain, tmp_path / "logs-a") as worker:
        without = await drive(worker.url, per_customer)
        assert rules_status(worker.url)["shadow"] is None
        assert sample(worker.url, "beacon_shadow_evaluations_total") == 0

    shadowed = isolated(infra, **options)
    with running_worker(shadowed, tmp_path / "logs-b") as worker:
        out = await cli(
            monkeypatch, capsys, shadowed, "publish", "--shadow", str(shadow_folder(tmp_path, shadowed))
        )
        assert "\nSHADOW v2-" in out, out
        await until(
            "the shadow version to run", lambda: (rules_status(worker.url)["shadow"] or {}).get("running")
        )
        with_shadow = await drive(worker.url, per_customer)
        await until(
            "every event to be shadowed", lambda: sample(worker.url, "beacon_shadow_evaluations_total") == n
        )
        fires = sample(worker.url, "beacon_shadow_fires_total", rule=PLANTED)
        dropped = sample(worker.url, "beacon_shadow_dropped_total")
        differing = sample(worker.url, "beacon_shadow_differences_total", kind="alerts")
        live_fires = sample(worker.url, "beacon_rule_fires_total", rule=PLANTED)
        disagree = sample(worker.url, "beacon_shadow_disagreements_total", rule=PLANTED, channel="atm")
        status = rules_status(worker.url)
        topic = shadowed.topic("decisions.shadow")
        expected = hand_count(per_customer)
        records = await consume_until(shadowed.kafka_bootstrap, [topic], want=expected, timeout=60)

    # Zero effect on the channels: the same answers, but for the batch timings.
    assert set(with_shadow) == set(without) and len(without) == n
    assert not any(a["alerts"] for a in without.values())  # the premise of comparing (see events())
    for event_id, answer in without.items():
        theirs = dict(with_shadow[event_id])
        assert {**answer, "timing_ms": None} == {**theirs, "timing_ms": None}, event_id
        assert all(a["rule_id"] != PLANTED for a in theirs["alerts"])  # the shadow never acts

    # The planted rule, counted by hand and by the shadow.
    assert expected > 20
    assert dropped == 0 and live_fires == 0
    assert fires == expected and differing == expected
    assert status["shadow"]["version"].startswith("v2-") and status["live"]["version"].startswith("v1-")
    assert len(records) == expected, [orjson.loads(r[2]) for r in records]
    planted = {e["event_id"] for mine in per_customer for e in mine
               if e["type"] == "withdrawal" and e["amount"] >= 700.0}  # fmt: skip
    validator = Draft202012Validator(topic_schema("decisions.shadow"))
    secret = {shadowed.record_key_id: b"shadow-test-secret"}
    seen = set()
    for got_topic, key, value, headers in records:
        record = orjson.loads(value)
        doc = {"key": None if key is None else key.decode(), "value": record,
               "headers": {name: bytes(v).decode() for name, v in headers}}  # fmt: skip
        errors = list(validator.iter_errors(doc))
        assert not errors, errors[0].message
        assert verify(got_topic, key, value, headers, secret) is None  # signed like decisions.audit
        assert record["rules_added"] == [PLANTED] and record["rules_removed"] == []
        assert PLANTED in record["shadow"]["alerts"] and PLANTED not in record["live"]["alerts"]
        assert record["versions"] == {
            "live": status["live"]["version"],
            "shadow": status["shadow"]["version"],
        }
        seen.add(record["event_id"])
    assert seen == planted
    # A verdict disagreement wherever the live verdict was milder than the planted rule's review.
    milder = [e for e in planted if without[e]["risk"]["verdict"] == "allow"]
    assert disagree == len(milder) and milder


async def test_promote_makes_the_shadow_live_and_stop_ends_it(
    infra: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = isolated(infra, rules_poll_s=0.5, **signing_keys())
    candidate = shadow_folder(tmp_path, s)
    with running_worker(s, tmp_path / "logs") as worker:
        assert "shadow version: none" in await cli(monkeypatch, capsys, s, "shadow")
        out = await cli(monkeypatch, capsys, s, "publish", "--shadow", str(candidate))
        shadow = out.split("\nSHADOW ")[1].split()[0]
        assert "NOT PUBLISHED" in await cli(monkeypatch, capsys, s, "publish", "--shadow", str(candidate))
        assert f"shadow version: {shadow}, since" in await cli(monkeypatch, capsys, s, "shadow")
        assert f"shadow version: {shadow} (run beside it" in await cli(monkeypatch, capsys, s, "show")
        await until("the shadow to run", lambda: (rules_status(worker.url)["shadow"] or {}).get("running"))
        assert sample(worker.url, "beacon_shadow_running") == 1

        out = await cli(monkeypatch, capsys, s, "promote", "--note", "reviewed")
        live = out.split("is now the live version ")[1].split(";")[0]
        assert live.startswith("v3-") and live.split("-")[1] == shadow.split("-")[1]  # same files
        await until(
            "the promoted version to run", lambda: rules_status(worker.url)["live"]["running"] == live
        )
        assert rules_status(worker.url)["shadow"] is None
        await until("the shadow to stop", lambda: sample(worker.url, "beacon_shadow_running") == 0)
        big = {"event_id": "p1", "customer_id": "P1", "channel": "atm", "type": "withdrawal",
               "amount": 900.0, "terminal_id": "T-9001", "ts": time.time()}  # fmt: skip
        answer = httpx.post(f"{worker.url}/v1/decisions", content=orjson.dumps(big), timeout=10).json()
        assert PLANTED in [a["rule_id"] for a in answer["alerts"]]  # live now, and acted on
        history = await cli(monkeypatch, capsys, s, "history")
        assert "promote" in history and "shadow" in history

        # Another candidate (the original packs), then stopped: the live version stays.
        out = await cli(monkeypatch, capsys, s, "publish", "--shadow", str(s.rules_path()))
        await until("the second shadow", lambda: (rules_status(worker.url)["shadow"] or {}).get("running"))
        assert "SHADOW STOPPED" in await cli(monkeypatch, capsys, s, "shadow", "--stop")
        assert "nothing changed" in await cli(monkeypatch, capsys, s, "shadow", "--stop")
        await until("the shadow to stop", lambda: sample(worker.url, "beacon_shadow_running") == 0)
        assert rules_status(worker.url) == {"live": {"version": live, "running": live}, "shadow": None}

        # An unsigned shadow bundle is refused, like an unsigned live one.
        client = connect(s)
        try:
            unsigned = await ShadowStore(client, s.key_prefix).start({"risk.yaml": PLANTED_PACK}, "mallory")
        finally:
            await client.aclose()
        await until("the refusal", lambda: sample(worker.url, "beacon_rules_reload_failures_total") >= 1)
        status = rules_status(worker.url)
        assert status["shadow"]["version"] == unsigned and status["shadow"]["running"] is False
        assert sample(worker.url, "beacon_shadow_running") == 0
        log = worker.log()
    assert f"shadow version {unsigned} refused" in log and "not signed" in log


async def test_the_shadow_bundle_is_kept_while_it_runs_and_a_stale_promotion_is_refused(
    infra: Settings,
) -> None:
    s = isolated(infra)
    client = connect(s)
    try:
        store, shadow = RuleStore(client, s.key_prefix, keep=2), ShadowStore(client, s.key_prefix, keep=2)
        await store.publish(bundle("live"), "t")
        candidate = await shadow.start(bundle("candidate"), "ana", "try it")
        for i in range(4):  # more publishes than kept versions: the shadow's bundle stays
            await store.publish(bundle(f"p{i}"), "t")
        got = await shadow.signed()
        assert got is not None and got[0] == candidate and got[1] == bundle("candidate")
        status = await shadow.status()
        assert status is not None and (status["version"], status["author"], status["note"]) == (
            candidate,
            "ana",
            "try it",
        )
        newer = await shadow.start(bundle("candidate2"), "ana")  # replaces it
        with pytest.raises(ShadowChanged):
            await shadow.promote(candidate, bundle("candidate"), "bob")  # checked against the old one
        assert await shadow.stop("ana") == newer and await shadow.stop("ana") is None
        await store.publish(bundle("after"), "t")
        assert await client.hlen(store.keys.bundles) <= 2  # no longer the shadow: trimmed like any
        actions = [e["action"] for e in await store.history(20)]
        assert actions[:4] == ["publish", "shadow_stop", "shadow", "publish"]
    finally:
        await client.aclose()


async def _kafka_answers(
    s: Settings, per_customer: list[list[dict[str, Any]]], n: int
) -> dict[str, dict[str, Any]]:
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for j in range(PER_CUSTOMER):  # interleaved: every customer's events in their order
            for mine in per_customer:
                event = mine[j]
                await producer.send(
                    s.topic("interactions"), orjson.dumps(event), key=event["customer_id"].encode()
                )
        await producer.flush()
    finally:
        await producer.stop()
    topics = [s.topic(f"decisions.{c}") for c in ("atm", "mobile", "internet")]
    records = await consume_until(s.kafka_bootstrap, topics, want=n, timeout=90)
    return {orjson.loads(v)["event_id"]: orjson.loads(v) for _, _, v, _ in records}


async def test_the_kafka_path_answers_the_same_with_a_shadow_version(
    infra: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    per_customer = events()
    n = CUSTOMERS * PER_CUSTOMER
    options = {"rules_poll_s": 0.5, **signing_keys()}
    plain = isolated(infra, **options)
    with running_worker(plain, tmp_path / "logs-a"):
        without = await _kafka_answers(plain, per_customer, n)
    shadowed = isolated(infra, **options)
    with running_worker(shadowed, tmp_path / "logs-b") as worker:
        await cli(
            monkeypatch, capsys, shadowed, "publish", "--shadow", str(shadow_folder(tmp_path, shadowed))
        )
        await until(
            "the shadow version to run", lambda: (rules_status(worker.url)["shadow"] or {}).get("running")
        )
        with_shadow = await _kafka_answers(shadowed, per_customer, n)
        await until(
            "every event to be shadowed", lambda: sample(worker.url, "beacon_shadow_evaluations_total") == n
        )
        assert sample(worker.url, "beacon_shadow_fires_total", rule=PLANTED) == hand_count(per_customer)
    assert len(without) == n and set(with_shadow) == set(without)
    assert not any(a["alerts"] for a in without.values())  # the premise of comparing (see events())
    for event_id, answer in without.items():
        assert {**answer, "timing_ms": None} == {**with_shadow[event_id], "timing_ms": None}, event_id
