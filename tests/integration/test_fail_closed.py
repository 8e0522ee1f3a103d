"""Issue 14, finding 1: risk controls fail closed when customer state is unavailable.

A real worker on a Redis of its own. With Redis refusing writes (out of memory, as in a
failover or a flood) or paused beyond the HTTP budget, the channel still gets an answer
(``degraded: true``), but a third PIN failure or a large transfer from a new device is
stepped up or blocked, never allowed; a balance inquiry may still degrade to allow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engine.ops.infra import ensure_topics
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import consume_until, isolated, start_worker
from tests.integration.test_failures import Server, assert_not_crashed, private_redis

pytestmark = pytest.mark.integration
CLOSED = ("step_up", "block")


def _event(eid: str, cid: str, etype: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": eid, "customer_id": cid, "type": etype, "ts": time.time(), **extra}


def _pin(eid: str, cid: str) -> dict[str, Any]:
    return _event(eid, cid, "pin_failure", channel="atm", terminal_id="T-1")


def _transfer(eid: str, cid: str, amount: float, device: str) -> dict[str, Any]:
    return _event(eid, cid, "transfer", channel="internet", amount=amount, device_id=device)


def _inquiry(eid: str, cid: str) -> dict[str, Any]:
    return _event(eid, cid, "balance_inquiry", channel="mobile", device_id="phone-1")


async def _decide(http: httpx.AsyncClient, event: dict[str, Any], token: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = await http.post("/v1/decisions", content=orjson.dumps(event), headers=headers)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def _history(http: httpx.AsyncClient, tag: str) -> None:
    """Two PIN failures and a small transfer from a known device, with state."""
    for i in (1, 2):
        assert (await _decide(http, _pin(f"{tag}-pin{i}", f"{tag}-P")))["risk"]["verdict"] == "allow"
    known = await _decide(http, _transfer(f"{tag}-t0", f"{tag}-T", 20.0, "laptop-1"))
    assert known["risk"]["verdict"] == "allow" and not known["degraded"]


async def _while_unavailable(http: httpx.AsyncClient, tag: str) -> dict[str, dict[str, Any]]:
    return {
        "pin": await _decide(http, _pin(f"{tag}-pin3", f"{tag}-P")),
        "transfer": await _decide(http, _transfer(f"{tag}-t1", f"{tag}-T", 5000.0, "laptop-new")),
        "inquiry": await _decide(http, _inquiry(f"{tag}-b1", f"{tag}-T")),
    }


def _assert_fail_closed(answers: dict[str, dict[str, Any]], how: str) -> None:
    summary = {k: (a["degraded"], a["risk"]["verdict"]) for k, a in answers.items()}
    assert all(a["degraded"] for a in answers.values()), (how, summary)
    assert answers["pin"]["risk"]["verdict"] in CLOSED, (how, summary)
    assert answers["transfer"]["risk"]["verdict"] in CLOSED, (how, summary)
    assert answers["inquiry"]["risk"]["verdict"] == "allow", (how, summary)
    for a in (answers["pin"], answers["transfer"]):
        assert any("state unavailable" in r for r in a["risk"]["reasons"]), (how, a["risk"])
        assert not [x for x in a["actions"] if x["kind"] in ("offer", "retention")], (how, a["actions"])


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Server]:
    with private_redis(tmp_path / "redis") as server:
        yield server


async def _config(settings: Settings, **values: str) -> None:
    client = connect(settings)
    try:
        for name, value in values.items():  # one at a time: this Redis takes one pair per call
            await client.execute_command("CONFIG", "SET", name.replace("_", "-"), value)
    finally:
        await client.aclose()


async def test_pin_failures_and_new_device_transfers_fail_closed_without_state(
    infra: Settings, redis: Server, tmp_path: Path
) -> None:
    settings = isolated(infra, redis_url=redis.address)
    await ensure_topics(settings)
    worker = await asyncio.to_thread(start_worker, settings, tmp_path / "logs")
    try:
        async with httpx.AsyncClient(base_url=worker.url, timeout=30) as http:
            # With state: the third PIN failure blocks, a new device's 5,000 steps up.
            await _history(http, "ok")
            normal = await _while_unavailable(http, "ok")
            assert normal["pin"]["risk"]["verdict"] == "block" and not normal["pin"]["degraded"]
            assert normal["transfer"]["risk"]["verdict"] == "step_up"

            # Redis refuses every write: out of memory (a failover or a flood look the same).
            await _history(http, "oom")
            await _config(settings, maxmemory_policy="noeviction", maxmemory="1")
            try:
                oom = await _while_unavailable(http, "oom")
            finally:
                await _config(settings, maxmemory="0")

            # Redis answers nothing for longer than the HTTP budget.
            await _history(http, "hung")
            redis.pause()
            try:
                started = time.perf_counter()
                hung = await _while_unavailable(http, "hung")
                took = time.perf_counter() - started
            finally:
                redis.resume()
        answers = [*oom.values(), *hung.values()]
        audits = await _audits_of(settings, answers)
        assert_not_crashed(worker)
    finally:
        worker.stop()

    _assert_fail_closed(oom, "redis out of memory")
    _assert_fail_closed(hung, "redis paused")
    assert took < 3 * (2 * settings.decision_timeout_s + 1.0), f"three requests took {took:.2f} s"

    # The audit trail holds what the channel received, and the stateful decision made
    # once Redis was back says which answer it follows.
    for answer in answers:
        did = answer["decision_id"]
        got = [
            (r["degraded"], r["risk"]["verdict"], r["explain"].get("answered_degraded")) for r in audits[did]
        ]
        sent = [r for r in audits[did] if r["degraded"]]
        assert len(sent) == 1, (answer["event_id"], got)
        assert sent[0]["risk"] == answer["risk"] and sent[0]["actions"] == answer["actions"], got
        later = [r for r in audits[did] if not r["degraded"]]
        assert later and all(r["explain"].get("answered_degraded") == did for r in later), (
            answer["event_id"],
            got,
        )


async def _audits_of(settings: Settings, answers: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The decisions.audit records of these answers' decisions, once each has its degraded
    record and a stateful one (or after the timeout)."""
    wanted = {a["decision_id"] for a in answers}

    def by_decision(records: list[Any]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {did: [] for did in wanted}
        for _, _, value, _ in records:
            record = orjson.loads(value)
            if record["decision_id"] in wanted:
                out[record["decision_id"]].append(record)
        return out

    def complete(records: list[Any]) -> bool:
        return all({r["degraded"] for r in rs} == {True, False} for rs in by_decision(records).values())

    topic = [settings.topic("decisions.audit")]
    return by_decision(await consume_until(settings.kafka_bootstrap, topic, 10**6, timeout=60, done=complete))


async def test_with_auth_on_a_verified_token_still_gets_a_fail_closed_decision_while_redis_is_paused(
    infra: Settings, redis: Server, tmp_path: Path
) -> None:
    """The token check itself needs Redis: a token verified before the pause is taken
    from the worker's cache (past its 1 s fresh window: Redis is asked, fails, and the
    token stands), and the decision fails closed; an unknown token is never let through."""
    settings = isolated(infra, redis_url=redis.address, auth_required=True, auth_cache_s=1.0)
    await ensure_topics(settings)
    client = connect(settings)
    try:
        store = AuthStore(client, settings.key_prefix)
        atm, internet = [await store.add_token("channel", f"{c}-switch", c) for c in ("atm", "internet")]
    finally:
        await client.aclose()
    worker = await asyncio.to_thread(start_worker, settings, tmp_path / "logs")
    try:
        async with httpx.AsyncClient(base_url=worker.url, timeout=30) as http:
            assert not (await _decide(http, _pin("au-pin1", "au-P"), atm))["degraded"]
            assert not (await _decide(http, _transfer("au-t0", "au-T", 20.0, "laptop-1"), internet))[
                "degraded"
            ]
            redis.pause()
            try:
                await asyncio.sleep(1.5)  # past the fresh window
                pin = await _decide(http, _pin("au-pin2", "au-P"), atm)
                transfer = await _decide(http, _transfer("au-t1", "au-T", 5000.0, "laptop-new"), internet)
                stranger = await http.post(
                    "/v1/decisions",
                    content=orjson.dumps(_pin("au-pin3", "au-P")),
                    headers={"Authorization": "Bearer bk_000000000000_not-a-real-secret"},
                )
            finally:
                redis.resume()
        assert_not_crashed(worker)
    finally:
        worker.stop()
    for answer in (pin, transfer):
        assert answer["degraded"] and answer["risk"]["verdict"] in CLOSED, answer["risk"]
    assert stranger.status_code in (401, 503), stranger.text
