"""Live alert streams on a real worker (issue 14, finding 3): any viewer could take a
worker offline by opening streams, each of which held a Redis pub/sub connection from the
shared pool (redis-py's default of 100): at 120 streams every request, channel decisions
included, failed. Now one subscription per worker is fanned out in process, and streams
are capped per principal and per worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from engine.store.keys import DeskKeys
from engine.store.redisio import connect
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration
STREAMS = 110  # past the pool's 100 connections
PER_PRINCIPAL = 5


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    s = isolated(infra, alert_streams_per_principal=PER_PRINCIPAL)
    with running_worker(s, tmp_path_factory.mktemp("streams")) as w:
        yield w


async def _pubsub_clients(s: Settings) -> int:
    """Subscribers to the desk's change channel (not every subscribed client on the shared
    Redis: the workers' rule and model watchers subscribe and unsubscribe as they wait)."""
    client = connect(s)
    try:
        ((_, n),) = await client.pubsub_numsub(DeskKeys.of(s.key_prefix).channel)
        return int(n)
    finally:
        await client.aclose()


async def _open(http: httpx.AsyncClient, stack: contextlib.AsyncExitStack) -> httpx.Response:
    return await stack.enter_async_context(http.stream("GET", "/v1/alerts/stream"))


async def _first_change(response: httpx.Response, customer: str) -> dict[str, object]:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            change = orjson.loads(line[6:])
            if change["customer_id"] == customer:
                return dict(change)
    raise AssertionError("stream ended")


async def _scenario(w: WorkerProcess) -> None:
    s = w.settings
    before = await _pubsub_clients(s)
    limits = httpx.Limits(max_connections=STREAMS + 10)
    async with httpx.AsyncClient(base_url=w.url, timeout=20, limits=limits) as http:
        async with contextlib.AsyncExitStack() as stack:
            opened = await asyncio.gather(*(_open(http, stack) for _ in range(STREAMS)))
            live = [r for r in opened if r.status_code == 200]
            refused = [r for r in opened if r.status_code != 200]
            assert len(live) == PER_PRINCIPAL
            assert {r.status_code for r in refused} == {429}
            for r in refused[:3]:
                body = orjson.loads(await r.aread())
                assert body["error"]["code"] == "too_many_streams" and r.headers["Retry-After"]
            assert await _pubsub_clients(s) - before <= 1  # one subscription, however many streams
            # Everything else still works.
            assert (await http.get("/v1/alerts")).status_code == 200
            for i in range(3):
                ev = {"event_id": f"S1-p{i}", "customer_id": "S1", "channel": "atm", "type": "pin_failure",
                      "ts": time.time(), "terminal_id": "ATM-9"}  # fmt: skip
                answer = await http.post("/v1/decisions", content=orjson.dumps(ev))
                assert answer.status_code == 200 and not answer.json().get("degraded")
            # And every live stream hears the alert those PIN failures raised.
            changes = await asyncio.wait_for(asyncio.gather(*(_first_change(r, "S1") for r in live)), 20)
            assert {c["change"] for c in changes} == {"raised"}
        # Streams closed: their slots are free again once the worker notices (within its
        # one-second tick), which a client waiting Retry-After would never race.
        for _ in range(20):
            async with http.stream("GET", "/v1/alerts/stream") as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.5)
        assert again.status_code == 200


def test_many_streams_are_capped_share_one_subscription_and_take_nothing_else_down(
    worker: WorkerProcess,
) -> None:
    asyncio.run(_scenario(worker))


async def _fall_behind(s: Settings) -> None:
    from engine.errors import StoreError
    from engine.store.changefeed import ChangeFeed

    client = connect(s)
    try:
        feed = ChangeFeed(client, "test-feed", queue_size=2)
        async with feed.listen() as slow, feed.listen() as quick:
            await asyncio.sleep(0.3)  # subscribed
            got = []
            for i in range(4):  # quick reads each change as it comes; slow reads none
                await client.publish("test-feed", orjson.dumps({"n": i}))
                change = await anext(quick)
                while change is None:
                    change = await anext(quick)
                got.append(change["n"])
            assert got == [0, 1, 2, 3]
            with pytest.raises(StoreError):
                while True:
                    await anext(slow)
            assert feed.listeners == 1
        assert feed.listeners == 0
    finally:
        await client.aclose()


def test_a_stream_that_falls_behind_is_ended_and_the_others_go_on(infra: Settings) -> None:
    asyncio.run(_fall_behind(infra))
