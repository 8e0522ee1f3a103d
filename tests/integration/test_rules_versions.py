"""Rule versions in real Redis: publish, history, rollback, retention, seeding races,
refused versions, and a live worker switching versions under HTTP traffic."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from engine.cli.main import main
from engine.domain.scoring import BuiltinScorer
from engine.errors import StoreError
from engine.ops.launcher import isolated
from engine.service.decisions import DecisionService
from engine.service.metrics import Metrics
from engine.service.rulewatch import RuleWatcher
from engine.settings import Settings
from engine.store.keys import RuleKeys
from engine.store.redisio import connect
from engine.store.rules import RuleStore, UnknownVersion
from engine.store.signkeys import signer
from engine.store.state import StateStore
from tests.helpers import running_worker
from tests.rulebundles import broken, bundle, version_of, write

pytestmark = pytest.mark.integration


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture
def settings(infra: Settings) -> Settings:
    return isolated(infra)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    c = connect(settings)
    try:
        yield c
    finally:
        await c.aclose()


async def test_publish_current_history_rollback_round_trip(
    client: aioredis.Redis, settings: Settings
) -> None:
    store = RuleStore(client, settings.key_prefix)
    assert await store.current() is None and await store.history() == []
    a, b = bundle("a"), bundle("b")
    va = await store.publish(a, "alice", "first")
    vb = await store.publish(b, "bob", "second")
    assert (va, vb) == (version_of(1, a), version_of(2, b))
    assert await store.current() == (vb, b) and await store.current_version() == vb
    assert await store.rollback(va, "carol", "b was wrong") is True
    assert await store.current() == (va, a)  # same version string, same bundle
    assert await store.rollback(va, "carol") is False  # already current: nothing recorded
    history = await store.history()
    assert [(e["version"], e["action"], e["author"]) for e in history] == [
        (va, "rollback", "carol"),
        (vb, "publish", "bob"),
        (va, "publish", "alice"),
    ]
    assert history[0]["note"] == "b was wrong" and history[0]["digest"] == va.split("-")[1]
    assert abs(history[0]["published_at"] - time.time()) < 60
    assert [e["version"] for e in await store.history(limit=1)] == [va]
    assert await store.bundle(vb) == b
    vc = await store.publish(b, "bob", "again")  # same files: new number, same digest
    assert vc == version_of(3, b)  # the rollback took no number: n counts publishes
    with pytest.raises(UnknownVersion, match="not stored"):
        await store.rollback("v99-0123456789ab", "x")
    with pytest.raises(UnknownVersion, match="not a rules version"):
        await store.rollback("latest", "x")


async def test_retention_is_bounded_and_keeps_the_current_version(
    client: aioredis.Redis, settings: Settings
) -> None:
    store = RuleStore(client, settings.key_prefix, keep=3, history_cap=4)
    keys = RuleKeys.of(settings.key_prefix)
    first = await store.publish(bundle("r0"), "t")
    for i in range(1, 8):
        await store.publish(bundle(f"r{i}"), "t")
        if i == 2:
            assert await store.rollback(first, "t")  # current again: ranks newest
        current = await store.current()
        assert current is not None and await store.bundle(current[0]) == current[1]
        assert await client.hlen(keys.bundles) <= 3 and await client.zcard(keys.ranks) <= 3
        assert await client.llen(keys.history) <= 4
    stored = sorted(_text(k) for k in await client.hkeys(keys.bundles))
    assert stored == sorted(version_of(n, bundle(f"r{n - 1}")) for n in (6, 7, 8))
    with pytest.raises(UnknownVersion, match="keeps the last 3 versions"):
        await store.bundle(first)
    # One namespace, five keys, none growing without bound (no TTL: rules must not vanish);
    # the sixth, the shadow version's, exists only while one runs (tests/integration/test_shadow_rules.py).
    names = sorted(_text(k) for k in await client.keys(f"{settings.key_prefix}:rules:*"))
    assert names == sorted(k for k in keys.writes() if k != keys.shadow)
    assert all(n.startswith(f"{settings.key_prefix}:rules:") for n in names)


async def test_two_workers_seeding_at_once_publish_one_version(infra: Settings) -> None:
    for _ in range(5):
        s = isolated(infra)
        one, two = connect(s), connect(s)
        try:
            results = await asyncio.gather(
                RuleStore(one, s.key_prefix).seed_if_empty(bundle("one"), "w1"),
                RuleStore(two, s.key_prefix).seed_if_empty(bundle("two"), "w2"),
            )
            winners = [r for r in results if r is not None]
            assert len(winners) == 1 and winners[0].startswith("v1-")
            history = await RuleStore(one, s.key_prefix).history()
            assert [(e["version"], e["action"]) for e in history] == [(winners[0], "seed")]
            assert await RuleStore(one, s.key_prefix).seed_if_empty(bundle("late"), "w3") is None
        finally:
            await one.aclose()
            await two.aclose()


async def test_redis_failures_become_store_errors() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    store = RuleStore(dead, "nobody")
    try:
        for call in (store.current(), store.publish(bundle("x"), "t"), store.history()):
            with pytest.raises(StoreError, match=r"rules .* failed"):
                await call
    finally:
        await dead.aclose()


def _watcher(settings: Settings, client: aioredis.Redis, metrics: Metrics) -> RuleWatcher:
    service = DecisionService(settings, StateStore(client, settings), None, BuiltinScorer(), metrics)
    readiness = {"redis": True, "broker": True, "rules": False}
    store = RuleStore(client, settings.key_prefix, signer=signer(settings))  # as `beacon rules publish`
    return RuleWatcher(store, service, settings, metrics, readiness)


async def test_refused_version_leaves_the_running_version_in_force(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings.replace(rules_dir=str(write(tmp_path, bundle("old"))), rules_poll_s=0.2)
    client, metrics = connect(s), Metrics()
    try:
        watcher = _watcher(s, client, metrics)
        await watcher.load_initial()  # Redis was empty: seeded from rules_dir
        old = version_of(1, bundle("old"))
        running = watcher.service.rules
        assert running is not None and running.version == old and watcher.readiness["rules"]
        store = watcher.store
        bad = await store.publish(broken("bad"), "mallory", "skipped validation")
        assert await watcher.check() is False and await watcher.check() is False
        assert watcher.service.rules is running and watcher.refused == bad
        assert metrics.registry.get_sample_value("beacon_rules_reload_failures_total") == 1.0
        assert metrics.registry.get_sample_value("beacon_build_info", {"version": "0.1.0", "rules": old}) == 1
        new = await store.publish(bundle("new"), "alice")
        assert await watcher.check() is True
        assert watcher.service.rules is not None and watcher.service.rules.version == new
        assert metrics.registry.get_sample_value("beacon_rules_reloads_total") == 2.0
    finally:
        await client.aclose()


async def test_a_worker_stays_unready_until_a_valid_version_exists(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings.replace(rules_dir=str(write(tmp_path, broken("local"))), rules_poll_s=0.1)
    client = connect(s)
    try:
        watcher = _watcher(s, client, Metrics())
        loading = asyncio.create_task(watcher.load_initial())
        await asyncio.sleep(0.5)
        assert not loading.done() and not watcher.readiness["rules"] and watcher.service.rules is None
        assert await watcher.store.current() is None  # invalid local packs were not seeded
        good = await watcher.store.publish(bundle("good"), "alice")
        await asyncio.wait_for(loading, 5)
        assert watcher.active == good and watcher.readiness["rules"]
    finally:
        await client.aclose()


async def test_announcement_switches_faster_than_the_poll(settings: Settings, tmp_path: Path) -> None:
    s = settings.replace(rules_dir=str(write(tmp_path, bundle("old"))), rules_poll_s=30.0)
    client = connect(s)
    watcher = _watcher(s, client, Metrics())
    try:
        await watcher.load_initial()
        watching = asyncio.create_task(watcher.watch())
        await asyncio.sleep(0.3)  # subscribed
        started = time.perf_counter()
        new = await watcher.store.publish(bundle("new"), "alice")
        while watcher.active != new and time.perf_counter() - started < 5:
            await asyncio.sleep(0.01)
        assert watcher.active == new and time.perf_counter() - started < 5  # the poll is 30 s
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching
    finally:
        await client.aclose()


# -- a live worker switching versions under traffic ------------------------------------


@dataclass
class Answer:
    sent: float
    received: float
    status: int
    at: float  # wall clock at receipt, comparable with Redis's published_at on this host
    rules: str = ""
    fallback: str = ""
    alerts: tuple[str, ...] = ()


async def _drive(url: str, stop: asyncio.Event, answers: list[Answer], lane: int) -> None:
    """POST decisions back to back until stopped, recording what each answer ran."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        i = 0
        while not stop.is_set():
            i += 1
            body = {"event_id": f"sw-{lane}-{i}", "customer_id": f"SW{lane}-{i % 20}", "channel": "internet",
                    "type": "login", "ts": time.time()}  # fmt: skip
            sent = time.perf_counter()
            r = await http.post("/v1/decisions", content=orjson.dumps(body))
            a = Answer(sent, time.perf_counter(), r.status_code, time.time())
            if r.status_code == 200:
                d = r.json()
                a.rules, a.fallback = d["versions"]["rules"], d["actions"][0]["id"]
                a.alerts = tuple(x["rule_id"] for x in d["alerts"])
            answers.append(a)


def _tag(version_answer: Answer, old: str, new: str) -> str:
    return {old: "old", new: "new"}.get(version_answer.rules, "?")


async def test_worker_switches_versions_under_traffic_without_a_failed_decision(
    infra: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = isolated(infra, rules_dir=str(write(tmp_path / "old", bundle("old"))), rules_poll_s=2.0)
    monkeypatch.setenv("BEACON_SIGNING_KEY_FILE", s.signing_key_file)  # the publisher signs
    old, new = version_of(1, bundle("old")), version_of(2, bundle("new"))
    new_dir = write(tmp_path / "new", bundle("new"))
    with running_worker(s, tmp_path / "logs") as worker:
        stop, answers = asyncio.Event(), list[Answer]()
        lanes = [asyncio.create_task(_drive(worker.url, stop, answers, n)) for n in range(4)]
        await asyncio.sleep(1.0)
        cli = ["rules", "publish", str(new_dir), "--redis-url", s.redis_url, "--key-prefix", s.key_prefix]
        assert await asyncio.to_thread(main, [*cli, "--note", "e2e switch"]) == 0
        returned = time.perf_counter()
        while not any(a.rules == new for a in answers) and time.perf_counter() - returned < 10:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*lanes)
        metrics = httpx.get(f"{worker.url}/metrics").text
        client = connect(s)
        try:
            published_at = (await RuleStore(client, s.key_prefix).history(1))[0]["published_at"]
        finally:
            await client.aclose()

    assert "PUBLISHED " + new in capsys.readouterr().out
    assert answers and {a.status for a in answers} == {200}, "a decision failed during the switch"
    assert {a.rules for a in answers} == {old, new}
    for a in answers:  # each decision ran one whole bundle
        tag = _tag(a, old, new)
        assert (a.fallback, a.alerts) == (f"fb_{tag}", (f"marker_{tag}",)), a
    first_new = min(a.received for a in answers if a.rules == new)
    assert all(a.rules == new for a in answers if a.sent > first_new), "went back to the old version"
    last_old = max((a.at for a in answers if a.rules == old), default=0.0)
    switch_s = min(a.at for a in answers if a.rules == new) - published_at
    print(f"\nswitch: first decision on {new} {switch_s * 1000:.0f} ms after the publish was stored in Redis "
          f"(last old one {(last_old - published_at) * 1000:.0f} ms after); {len(answers)} decisions, all 200")  # fmt: skip
    assert switch_s < 5.0
    assert f'beacon_build_info{{rules="{new}",version="0.1.0"}} 1.0' in metrics
    assert "beacon_rules_reloads_total 2.0" in metrics


async def test_worker_refuses_a_broken_version_and_keeps_deciding(infra: Settings, tmp_path: Path) -> None:
    s = isolated(infra, rules_dir=str(write(tmp_path / "rules", bundle("good"))), rules_poll_s=0.5)
    good = version_of(1, bundle("good"))
    with running_worker(s, tmp_path / "logs") as worker:
        client = connect(s)
        try:
            bad = await RuleStore(client, s.key_prefix, signer=signer(s)).publish(broken("bad"), "mallory")
        finally:
            await client.aclose()
        deadline = time.monotonic() + 10
        text = ""
        while "beacon_rules_reload_failures_total 1.0" not in text and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            text = httpx.get(f"{worker.url}/metrics").text
        assert "beacon_rules_reload_failures_total 1.0" in text
        body = {"event_id": "rf-1", "customer_id": "RF", "channel": "atm", "type": "login", "ts": time.time()}
        r = httpx.post(f"{worker.url}/v1/decisions", content=orjson.dumps(body))
        assert r.status_code == 200 and r.json()["versions"]["rules"] == good
        assert httpx.get(f"{worker.url}/readyz").status_code == 200
        log = worker.log()
    assert re.search(rf"version {bad} refused, {good} stays in force: risk.yaml: rule marker_bad", log)
