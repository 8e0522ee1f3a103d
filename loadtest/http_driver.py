"""Open-loop HTTP load: ``POST /v1/decisions`` with aiohttp's client and a connection pool.

Each request is started at its intended time as its own task, however many are still in
flight; if the pool is exhausted the request waits for a connection and that wait counts
in its latency. With several URLs (several workers) the events are dealt round robin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from time import perf_counter as clock

import aiohttp
import orjson

from loadtest.openloop import Event, Job, Recorder, respond, run_job, serial
from loadtest.part import Part

HEADERS = {"Content-Type": "application/json"}
# A decision made without the customer's state (the worker's deadline passed) says so;
# the load test counts it as a failure, not as a decision (orjson writes no spaces).
DEGRADED = b'"degraded":true'


def session(pool: int = 256, timeout_s: float = 10.0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=pool, limit_per_host=pool, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))


class HttpSender:
    """Runs jobs (shares of a phase) against one or more workers' HTTP APIs."""

    def __init__(self, http: aiohttp.ClientSession, urls: str | Sequence[str]) -> None:
        self.http = http
        self.targets = [u.rstrip("/") + "/v1/decisions" for u in ([urls] if isinstance(urls, str) else urls)]
        self.current: Recorder | None = None  # the job running now (the progress bar reads it)

    async def run(self, job: Job, start: float, proc: int = 0) -> Part:
        """Send ``job.events[i]`` at ``start + job.offsets[i]``; returns what was measured."""
        rec = Recorder([start + o for o in job.offsets], start, proc, job.max_in_flight)
        self.current = rec
        tasks: set[asyncio.Task[None]] = set()
        responder, targets, http = job.responder, self.targets, self.http

        async def post(i: int, event: Event) -> None:
            try:
                async with http.post(targets[i % len(targets)], data=event.value, headers=HEADERS) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        rec.fail(i, str(resp.status))
                        return
                    at = clock()
                    if DEGRADED in body:  # answered without state, past the worker's deadline
                        rec.fail(i, "degraded")
                        return
                    rec.answer(i, at)
                    if responder is not None:
                        responder.seen(orjson.loads(body), at)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                rec.fail(i, type(exc).__name__)

        async def fire(i: int) -> None:
            event = respond(responder, job.events[i])
            if event is not job.events[i]:
                rec.part.responses += 1
            task = asyncio.get_running_loop().create_task(post(i, event))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            return await run_job(rec, fire, job.drain_s)
        finally:
            self.current = None
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def warm_up(
    http: aiohttp.ClientSession, urls: str | Sequence[str], events: Sequence[Event], rate: float
) -> None:
    """Open connections and warm caches at the phase's rate; results are discarded."""
    job = Job(list(events), [i / rate for i in range(len(events))], drain_s=10.0)
    await HttpSender(http, urls).run(job, clock() + 0.01)


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
