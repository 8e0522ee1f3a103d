"""HTTP status mapping of the API handlers (a fake store: this is pure logic)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson

from engine.api import Api
from engine.errors import StoreError
from engine.events import Event
from engine.metrics import Metrics
from engine.scoring import BuiltinScorer
from engine.service import DecisionService
from engine.settings import Settings
from engine.state import Snapshot
from tests.unit.rulefixture import fixture_rules


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def ingest(self, events: Sequence[Event]) -> list[Snapshot]:
        if self.fail:
            raise StoreError("redis down")
        return [Snapshot(windows={}) for _ in events]

    async def commit(self, customer_ids: Sequence[str], payloads: Sequence[bytes]) -> list[dict[str, Any]]:
        # No caps, no suppression: the first candidates, as the commit script would pick.
        replies = []
        for raw in payloads:
            p = orjson.loads(raw)
            picked = list(range(min(p["max"], len(p["cands"]))))
            frags = [p["cands"][i]["frag"] for i in picked] or [p["fallback"]["frag"]]
            alerts = ",".join(a["frag"] for a in p["alerts"])
            body = f"{p['head']}[{','.join(frags)}]{p['mid']}[{alerts}]{p['mid2']}[{p['dropped']}]{p['tail']}"
            replies.append(
                {"body": body, "picked": picked, "capped": [], "alerts": list(range(len(p["alerts"])))}
            )
        return replies


def api_with(store: FakeStore, **settings: object) -> Api:
    s = Settings.build(env={}, **settings)
    service = DecisionService(s, store, fixture_rules(), BuiltinScorer())  # type: ignore[arg-type]
    return Api(service, Metrics(), lambda: {"redis": True, "broker": False, "rules": True})


def body(event_id: str = "a1") -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "customer_id": "c", "channel": "atm", "type": "login", "ts": time.time()}
    )


async def test_decision_ok() -> None:
    api = api_with(FakeStore())
    api.service.batcher.start()
    reply = await api.post_decision(body())
    assert reply.status == 200 and orjson.loads(reply.body)["event_id"] == "a1"
    await api.service.batcher.stop()


async def test_store_down_is_503_with_retry_after() -> None:
    api = api_with(FakeStore(fail=True))
    api.service.batcher.start()
    reply = await api.post_decision(body())
    assert reply.status == 503 and reply.headers["Retry-After"] == "1"
    assert orjson.loads(reply.body)["error"]["code"] == "state_unavailable"
    await api.service.batcher.stop()


async def test_full_queue_is_429_with_retry_after() -> None:
    api = api_with(FakeStore(), batch_max=1)  # a queue of 8, and the decision loop is not running
    waiting = [asyncio.create_task(api.post_decision(body(f"e{i}"))) for i in range(8)]
    await asyncio.sleep(0)  # let the eight take their places in the queue
    last = await api.post_decision(body("e8"))
    assert last.status == 429 and last.headers["Retry-After"] == "1"
    assert orjson.loads(last.body)["error"]["code"] == "overloaded"
    for task in waiting:
        task.cancel()


def test_readiness_reports_each_check() -> None:
    reply = api_with(FakeStore()).readyz()
    assert reply.status == 503 and orjson.loads(reply.body) == {
        "ready": False,
        "checks": {"redis": True, "broker": False, "rules": True},
    }
