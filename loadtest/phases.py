"""The phases of a load test: floors (bare broker, Redis, HTTP echo) and the two decision
paths at fixed rates, each measured open loop with the same clients."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from engine.infra import ensure_topics
from engine.settings import Settings
from loadtest import http_driver, promtext
from loadtest.generator import Population, TrafficGenerator
from loadtest.harness import GcPauses, ProcWatch, Worker, freeze, isolated, start_echo, start_worker
from loadtest.kafka_driver import KafkaClient, audit_stats, probe
from loadtest.openloop import Event, Phase, make_events, phase_result, plan, serial, serial_result
from loadtest.stats import Bounds, percentile

log = logging.getLogger("loadtest")
CHANNELS = ("atm", "internet", "mobile")  # what the generator sends


@dataclass
class Options:
    linger_ms: float = 1.0  # client producer
    fetch_max_wait_ms: int = 5  # client consumer
    population: int = 50_000
    http_pool: int = 256
    http_bounds: Bounds = field(default_factory=lambda: Bounds(p99_ms=50.0))
    kafka_bounds: Bounds = field(default_factory=lambda: Bounds(p99_ms=100.0))
    warm_s: float = 2.0
    drain_s: float = 10.0
    audit: bool = True  # after a Kafka phase, read its audit records for batch sizes

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["http_bounds"] = self.http_bounds.__dict__
        out["kafka_bounds"] = self.kafka_bounds.__dict__
        return out


class Lab:
    """One run: base settings (servers), the traffic generator, watchers and logs."""

    def __init__(self, base: Settings, run_dir: Path, opts: Options, watch: ProcWatch) -> None:
        self.base = base
        self.run_dir = run_dir
        self.logs = run_dir / "logs"
        self.opts = opts
        self.watch = watch
        self.tag = uuid.uuid4().hex[:6]
        self.pop = Population(opts.population, seed=17)
        self._seq = itertools.count()
        self.phases: list[Phase] = []
        self.workers: list[dict[str, Any]] = []  # settings of each worker started
        self.gc = GcPauses()

    def events(self, n: int, rate: float) -> list[Event]:
        k = next(self._seq)
        gen = TrafficGenerator(self.pop, seed=1000 + k, id_prefix=f"lt{self.tag}-{k}")
        events = make_events(gen, n, time.time(), rate)
        freeze()
        return events

    def _mark(self) -> None:
        """Start measuring a phase: CPU of every process; the client's garbage collector
        is off until :meth:`_done` so its pauses are not charged to the system (a loaded
        phase with thousands of requests in flight otherwise sees 100-500 ms pauses)."""
        self.watch.mark()
        self.gc.reset()
        gc.disable()

    def _done(self, phase: Phase) -> Phase:
        gc.enable()
        phase.extra["broker_rss_mb"] = self.watch.current_rss_mb("broker")
        if phase.cpu:
            for key, value in self.gc.summary().items():
                phase.extra.setdefault(key, value)
        if "worker" in phase.cpu:  # CPU cost per decision: robust to a slow or shared machine
            decided = phase.extra.get("server_decided") or phase.summary.answered
            worker_s = phase.cpu["worker"] / 100.0 * self.watch.window_s
            per_event = round(worker_s * 1000.0 / decided, 3) if decided else None
            phase.extra["worker_cpu_ms_per_event"] = per_event
        self.phases.append(phase)
        s = phase.summary
        log.info(
            "%-28s rate %6.0f  p50 %7.2f  p99 %7.2f  max %8.2f ms  answered %d/%d  %s",
            phase.name,
            phase.rate,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.answered,
            s.sent,
            "sustained" if phase.sustained else "NOT sustained",
        )
        return phase

    # ---- floors -------------------------------------------------------------------

    async def redis_floor(self, n: int) -> list[Phase]:
        client = aioredis.Redis.from_url(self.base.redis_url)
        try:
            await client.ping()
            script = client.register_script("redis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[1])")
            key = f"lt{self.tag}:floor"
            await script(keys=[key])  # loads it: the rest are EVALSHA

            async def ping() -> None:
                await client.ping()

            async def evalsha() -> None:
                await script(keys=[key])

            out = [
                serial_result("redis PING, serial", "redis", await serial(n, ping)),
                serial_result("redis EVALSHA, serial", "redis", await serial(n, evalsha)),
            ]
            await client.delete(key)
        finally:
            await client.aclose()
        return [self._done(p) for p in out]

    async def engine_floor(self, n: int, batch: int) -> Phase:
        """The engine alone, in this process: parse + ``DecisionService.decide_batch`` (two
        Redis script calls per batch) on batches of ``batch`` events, no Kafka, no HTTP.
        Its CPU per event is the ceiling of one worker whatever the transport."""
        from engine.events import parse_event
        from engine.runtime import Runtime

        rt = Runtime.build(isolated(self.base, tag=f"{self.tag}e{batch}"))
        await rt.load_rules()  # seeds this isolated prefix from rules/
        service = rt.service
        events = self.events(n + 10 * batch, 1000.0)
        now = time.time() + 60.0
        try:
            await service.decide_batch([parse_event(e.value, service.settings, now) for e in events[:batch]])
            t0, c0 = time.perf_counter(), time.process_time()
            lat: list[float] = []
            for i in range(10 * batch, len(events), batch):
                b0 = time.perf_counter()
                chunk = events[i : i + batch]
                await service.decide_batch([parse_event(e.value, service.settings, now) for e in chunk])
                lat += [time.perf_counter() - b0] * len(chunk)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            client = getattr(service.store, "_redis", None)  # the store has no close()
            with contextlib.suppress(Exception):
                if client is not None:
                    await client.aclose()
        phase = serial_result(
            f"engine alone, batches of {batch}",
            "engine",
            lat,
            cpu_ms_per_event=round(cpu * 1000.0 / len(lat), 3),
        )
        phase.achieved_rate = round(len(lat) / wall, 1)
        phase.duration_s = round(wall, 2)
        return self._done(phase)

    def _kafka_client(self, bootstrap: str, topics: list[str]) -> KafkaClient:
        return KafkaClient(bootstrap, topics, self.opts.linger_ms, self.opts.fetch_max_wait_ms)

    async def kafka_floor_serial(self, n: int) -> Phase:
        s = isolated(self.base, tag=f"{self.tag}f")
        topic = s.topic("floor.serial")
        await ensure_topics(s, [topic])
        async with self._kafka_client(s.kafka_bootstrap, [topic]) as client:
            await client.serial_floor(topic, self.events(20, 100.0))  # warm-up
            lat = await client.serial_floor(topic, self.events(n, 100.0))
        return self._done(serial_result("broker round trip, serial", "broker", lat, topic=topic))

    async def kafka_floor_rate(self, rate: float, duration: float) -> Phase:
        s = isolated(self.base, tag=f"{self.tag}f{int(rate)}")
        topic = s.topic("floor.rate")
        await ensure_topics(s, [topic])
        async with self._kafka_client(s.kafka_bootstrap, [topic]) as client:
            await client.serial_floor(topic, self.events(20, 100.0))
            await client.open_loop(topic, *self._warm(rate))
            events = self.events(int(rate * duration), rate)
            client.last_hop_ms.clear()
            self._mark()
            rec, lag = await client.open_loop(topic, events, plan(rate, duration), self.opts.drain_s)
            cpu = self.watch.cpu()
        phase = phase_result(
            f"broker round trip @ {rate:.0f}/s",
            "broker",
            rate,
            duration,
            rec,
            self.opts.kafka_bounds,
            lag,
            **last_hop(client.last_hop_ms),
        )
        phase.cpu = cpu
        return self._done(phase)

    def _warm(self, rate: float) -> tuple[list[Event], list[float], float]:
        n = max(int(rate * self.opts.warm_s), 1)
        return self.events(n, rate), plan(rate, self.opts.warm_s), self.opts.drain_s

    async def echo_floor(self, n: int, rates: Sequence[float], duration: float) -> list[Phase]:
        child, url = await start_echo(self.logs)
        self.watch.add("echo", child.proc.pid)
        out: list[Phase] = []
        try:
            async with http_driver.session(self.opts.http_pool) as http:
                await http_driver.serial_floor(http, url, self.events(50, 100.0))
                lat = await http_driver.serial_floor(http, url, self.events(n, 100.0))
                out.append(self._done(serial_result("HTTP echo, serial", "echo", lat)))
                for rate in rates:
                    phase = await self.http_phase(http, url, rate, duration, "echo", "HTTP echo")
                    out.append(phase)
        finally:
            self.watch.remove("echo")
            child.stop()
        return out

    # ---- decision paths -----------------------------------------------------------

    async def http_phase(
        self,
        http: aiohttp.ClientSession,
        url: str,
        rate: float,
        duration: float,
        path: str = "http",
        label: str = "HTTP path",
    ) -> Phase:
        await http_driver.warm_up(http, url, self.events(max(int(rate * self.opts.warm_s), 1), rate), rate)
        events = self.events(int(rate * duration), rate)
        before = await scrape(http, url)
        self._mark()
        rec, lag = await http_driver.open_loop(http, url, events, plan(rate, duration), self.opts.drain_s)
        cpu = self.watch.cpu()
        server = server_side(before, await scrape(http, url), "http")
        phase = phase_result(
            f"{label} @ {rate:.0f}/s", path, rate, duration, rec, self.opts.http_bounds, lag, **server
        )
        phase.cpu = cpu
        return self._done(phase)

    async def worker(self) -> Worker:
        s = isolated(self.base, tag=f"{self.tag}w{next(self._seq)}")
        await ensure_topics(s)
        w = await start_worker(s, self.logs)
        self.watch.add("worker", w.proc.pid)
        self.workers.append({"app_id": s.app_id, "topic_prefix": s.topic_prefix, "log": str(w.log_path)})
        return w

    def _stop_worker(self, w: Worker) -> None:
        self.watch.remove("worker")
        w.stop()

    @contextlib.asynccontextmanager
    async def http_worker(self) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
        """One fresh worker for a whole HTTP ramp (HTTP does not read the broker's history)."""
        w = await self.worker()
        try:
            async with http_driver.session(self.opts.http_pool) as http:
                yield http, w.url
        finally:
            self._stop_worker(w)

    async def kafka_phase(self, rate: float, duration: float) -> Phase:
        """A fresh worker and fresh topics per rate: the embedded broker's fetch cost grows
        with a partition's history, so phases must not inherit each other's batches."""
        w = await self.worker()
        try:
            return await self.kafka_run(w.settings, rate, duration, w.url)
        finally:
            self._stop_worker(w)

    async def kafka_run(self, s: Settings, rate: float, duration: float, worker_url: str | None) -> Phase:
        """The Kafka path at ``rate`` against a running worker that uses settings ``s``."""
        answers = [s.topic(f"decisions.{c}") for c in CHANNELS]
        topic = s.topic("interactions")
        async with self._kafka_client(s.kafka_bootstrap, answers) as client:
            waited = await probe(client, topic, self.events(30, 1.0), timeout=90.0)
            await client.open_loop(topic, *self._warm(rate))
            events = self.events(int(rate * duration), rate)
            async with http_driver.session(4) as http:
                before = await scrape(http, worker_url)
                client.last_hop_ms.clear()
                self._mark()
                rec, lag = await client.open_loop(topic, events, plan(rate, duration), self.opts.drain_s)
                cpu = self.watch.cpu()
                server = server_side(before, await scrape(http, worker_url), "kafka")
        server.update(self.gc.summary())
        gc.enable()
        if self.opts.audit:
            server.update(await audit_stats(s.kafka_bootstrap, s.topic("decisions.audit")))
        phase = phase_result(
            f"Kafka path @ {rate:.0f}/s",
            "kafka",
            rate,
            duration,
            rec,
            self.opts.kafka_bounds,
            lag,
            first_answer_s=round(waited, 2),
            unexpected=client.unexpected,
            **last_hop(client.last_hop_ms),
            **server,
        )
        phase.cpu = cpu
        return self._done(phase)


async def scrape(http: aiohttp.ClientSession, url: str | None) -> promtext.Samples:
    if not url:
        return {}
    with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
        async with http.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return promtext.parse(await resp.text())
    return {}


def last_hop(ms: list[float]) -> dict[str, float]:
    """Broker timestamp of each answer (ms resolution) to its arrival at the client: the
    last hop alone, so the rest of a path's latency is the first hop plus the worker."""
    return {
        "last_hop_p50_ms": round(percentile(ms, 50), 1),
        "last_hop_p99_ms": round(percentile(ms, 99), 1),
    }


def server_side(before: promtext.Samples, after: promtext.Samples, path: str) -> dict[str, Any]:
    """What the worker itself counted during the phase."""
    if not after:
        return {}
    d = promtext.delta(after, before)
    label = f'path="{path}"'
    return {
        "server_mean_ms": round(promtext.mean_ms(d, "beacon_decision_latency_seconds", label), 3),
        "server_decided": promtext.total(d, "beacon_events_total", label),
        "server_overloaded": promtext.total(d, "beacon_overloaded_total"),
        "server_store_errors": promtext.total(d, "beacon_store_errors_total"),
    }
