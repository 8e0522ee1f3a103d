"""Open-loop HTTP load: ``POST /v1/decisions`` with aiohttp's client and a connection pool.

Each request is started at its intended time as its own task, however many are still in
flight; if the pool is exhausted the request waits for a connection and that wait counts
in its latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from time import perf_counter as clock

import aiohttp

from loadtest.openloop import Event, Recorder, run_schedule, serial

HEADERS = {"Content-Type": "application/json"}


def session(pool: int = 256, timeout_s: float = 10.0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=pool, limit_per_host=pool, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))


async def open_loop(
    http: aiohttp.ClientSession, url: str, events: Sequence[Event], intended: list[float], drain_s: float
) -> tuple[Recorder, float]:
    """Send ``events[i]`` at ``intended[i]``; returns the recorder and the client's worst lag."""
    rec = Recorder(intended)
    tasks: set[asyncio.Task[None]] = set()
    target = url + "/v1/decisions"

    async def post(i: int) -> None:
        try:
            async with http.post(target, data=events[i].value, headers=HEADERS) as resp:
                await resp.read()
                if resp.status == 200:
                    rec.answer(i, clock())
                else:
                    rec.fail(i, str(resp.status))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            rec.fail(i, type(exc).__name__)

    async def fire(i: int) -> None:
        task = asyncio.get_running_loop().create_task(post(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    lag = await run_schedule(intended, fire)
    await rec.wait(drain_s)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rec, lag


async def warm_up(http: aiohttp.ClientSession, url: str, events: Sequence[Event], rate: float) -> None:
    """Open connections and warm caches at the phase's rate; results are discarded."""
    intended = [clock() + 0.01 + i / rate for i in range(len(events))]
    await open_loop(http, url, events, intended, drain_s=10.0)


async def serial_floor(http: aiohttp.ClientSession, url: str, events: Sequence[Event]) -> list[float]:
    """One request at a time: the round trip with nothing queued."""
    it = iter(events)
    target = url + "/v1/decisions"

    async def one() -> None:
        async with http.post(target, data=next(it).value, headers=HEADERS) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{target} answered {resp.status}: {(await resp.read())[:200]!r}")

    return await serial(len(events), one)
