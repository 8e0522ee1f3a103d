"""The phases of a load test: floors (bare broker, Redis, HTTP echo) and the two decision
paths at fixed rates, one worker or two, each measured open loop with the same clients."""

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
from time import perf_counter as clock
from typing import Any, Protocol

import aiohttp
import redis.asyncio as aioredis

from engine.ops.infra import ensure_topics, free_port
from engine.ops.traffic import Population, TrafficGenerator
from engine.settings import Settings
from loadtest import http_driver, promtext
from loadtest.harness import GcPauses, ProcWatch, Worker, freeze, isolated, start_echo, start_worker
from loadtest.hdr import Histogram
from loadtest.kafka_driver import KafkaClient, audit_stats, probe
from loadtest.openloop import Event, Job, Phase, make_events, offsets, phase_result, serial, serial_result
from loadtest.part import Part
from loadtest.procs import Fleet, SenderSpec, open_sender
from loadtest.progress import Bar
from loadtest.responses import Responder
from loadtest.shape import peak
from loadtest.stats import Bounds

log = logging.getLogger("loadtest")
CHANNELS = ("atm", "internet", "mobile")  # what the generator sends
STAGES = ("state", "models", "rules", "record", "publish")  # beacon_stage_latency_seconds


@dataclass
class Options:
    linger_ms: float = 1.0  # client producer
    fetch_max_wait_ms: int = 5  # client consumer
    population: int = 50_000
    http_pool: int = 256
    # The bar for "sustainable": p99 under 25 ms, on both paths.
    http_bounds: Bounds = field(default_factory=lambda: Bounds(p99_ms=25.0))
    kafka_bounds: Bounds = field(default_factory=lambda: Bounds(p99_ms=25.0))
    warm_s: float = 2.0
    drain_s: float = 10.0
    audit: bool = True  # after a Kafka phase, read its audit records for batch sizes
    procs: int = 1  # generator processes
    shape: str = "flat"  # of the arrival rate over a phase (loadtest.shape)
    responses: float = 0.3  # share of the offers shown that customers answer (0: none)
    backlog_s: float = 3.0  # stop a phase once this many seconds of events are unanswered
    progress: bool | None = None  # a progress bar on stderr (None: when it is a terminal)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["http_bounds"] = self.http_bounds.__dict__
        out["kafka_bounds"] = self.kafka_bounds.__dict__
        return out


class Driver(Protocol):
    """Runs jobs open loop, in this process or in several generator processes."""

    async def run(self, job: Job) -> Part: ...

    def live(self) -> tuple[int, int, Histogram]: ...


class _InProcess:
    def __init__(self, sender: Any) -> None:
        self.sender = sender

    async def run(self, job: Job) -> Part:
        part: Part = await self.sender.run(job, clock() + 0.05)
        return part

    def live(self) -> tuple[int, int, Histogram]:
        rec = self.sender.current
        if rec is None:
            return 0, 0, Histogram()
        return rec.part.sent, rec.part.answered, rec.part.latency


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
        self.bar = Bar(enabled=opts.progress)
        self._profiled: dict[str, set[str]] = {}  # customers with a profile, by key prefix

    # ---- traffic ------------------------------------------------------------------

    def events(self, n: int, rate: float) -> list[Event]:
        """``n`` events at a fixed rate (floors, warm-ups, probes)."""
        return self.events_at([i / rate for i in range(n)])

    def events_at(self, offs: Sequence[float]) -> list[Event]:
        """Events stamped with the wall-clock times of a schedule's offsets from now."""
        k = next(self._seq)
        gen = TrafficGenerator(self.pop, seed=1000 + k, id_prefix=f"lt{self.tag}-{k}")
        now = time.time()
        events = make_events(gen, [now + o for o in offs])
        freeze()
        return events

    def job(self, rate: float, duration: float, shape: str = "flat", responses: bool = False) -> Job:
        """A phase's job: its schedule computed up front, its events generated before."""
        offs = offsets(rate, duration, shape)
        responder = None
        if responses and self.opts.responses > 0:
            k = next(self._seq)  # answers' event ids must not repeat across phases (dedupe)
            responder = Responder(share=self.opts.responses, seed=k, id_prefix=f"lt{self.tag}-{k}")
        backlog = max(int(rate * peak(shape) * self.opts.backlog_s), 200)
        return Job(self.events_at(offs), offs, self.opts.drain_s, backlog, responder)

    # ---- drivers ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def driver(self, spec: SenderSpec) -> AsyncIterator[Driver]:
        """A sender for ``spec``: here, or in ``opts.procs`` generator processes."""
        if self.opts.procs <= 1:
            async with open_sender(spec) as sender:
                yield _InProcess(sender)
            return
        fleet = Fleet(spec, self.opts.procs, self.bar.enabled, lambda pid: self.watch.add("client", pid))
        try:
            async with fleet:
                yield fleet
        finally:
            self.watch.procs["client"] = self.watch.procs["client"][:1]  # this process only

    def http_spec(self, urls: Sequence[str]) -> SenderSpec:
        return SenderSpec("http", urls=tuple(urls), pool=self.opts.http_pool)

    def kafka_spec(self, s: Settings, topic: str, answers: Sequence[str]) -> SenderSpec:
        return SenderSpec(
            "kafka",
            bootstrap=s.kafka_bootstrap,
            topic=topic,
            answer_topics=tuple(answers),
            linger_ms=self.opts.linger_ms,
            fetch_max_wait_ms=self.opts.fetch_max_wait_ms,
            partitions=s.partitions,
        )

    # ---- measuring ----------------------------------------------------------------

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
            "%-34s p50 %7.2f  p99 %7.2f  p99.9 %7.2f ms  answered %d/%d  %s%s",
            phase.name,
            s.p50_ms,
            s.p99_ms,
            s.p999_ms,
            s.answered,
            s.sent,
            "sustained" if phase.sustained else "NOT sustained",
            " (stopped early)" if phase.stopped_early else "",
        )
        return phase

    async def measure(
        self,
        drv: Driver,
        name: str,
        path: str,
        rate: float,
        duration: float,
        *,
        bounds: Bounds,
        metrics_urls: Sequence[str] = (),
        workers: int = 1,
        role: str = "ladder",
        responses: bool = False,
        profiles: Settings | None = None,
    ) -> Phase:
        """One open-loop phase: a discarded warm-up at the rate, then the measured run,
        with the workers' own counters read before and after. With ``profiles``, the
        customers' profiles are imported under those settings' keys first."""
        warm = self.job(rate, self.opts.warm_s)
        job = self.job(rate, duration, self.opts.shape, responses)
        if profiles is not None:
            await self.import_profiles(profiles, warm.events + job.events)
        await drv.run(warm)
        before = await scrape_all(metrics_urls)
        self._mark()
        started = time.time()
        async with self.bar.follow(name, len(job.offsets), _reading(drv)):
            part = await drv.run(job)
        cpu = self.watch.cpu()
        server = server_side(before, await scrape_all(metrics_urls), path) if metrics_urls else {}
        phase = phase_result(name, path, rate, duration, part, bounds, **last_hop(part), **server)
        phase.cpu, phase.workers, phase.role, phase.shape = cpu, workers, role, self.opts.shape
        phase.started_at = started
        return self._done(phase)

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
        from engine.domain.events import parse_event
        from engine.service.runtime import Runtime

        s = isolated(self.base, tag=f"{self.tag}e{batch}")
        rt = Runtime.build(s)
        await rt.load_rules()  # seeds this isolated prefix from rules/
        service = rt.service
        events = self.events(n + 10 * batch, 1000.0)
        await self.import_profiles(s, events)
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
        """Produce-then-consume on a fresh topic at ``rate``, with the path's clients."""
        s = isolated(self.base, tag=f"{self.tag}f{next(self._seq)}")
        topic = s.topic("floor.rate")
        await ensure_topics(s, [topic])
        async with self._kafka_client(s.kafka_bootstrap, [topic]) as client:
            await client.serial_floor(topic, self.events(20, 100.0))  # the topic answers
        async with self.driver(self.kafka_spec(s, topic, [topic])) as drv:
            name = f"broker round trip @ {rate:.0f}/s"
            return await self.measure(drv, name, "broker", rate, duration, bounds=self.opts.kafka_bounds)

    async def echo_floor(self, n: int, rates: Sequence[float], duration: float) -> list[Phase]:
        child, url = await start_echo(self.logs)
        self.watch.add("echo", child.proc.pid)
        out: list[Phase] = []
        try:
            async with http_driver.session(self.opts.http_pool) as http:
                await http_driver.serial_floor(http, url, self.events(50, 100.0))
                lat = await http_driver.serial_floor(http, url, self.events(n, 100.0))
                out.append(self._done(serial_result("HTTP echo, serial", "echo", lat)))
            async with self.driver(self.http_spec([url])) as drv:
                for rate in rates:
                    name = f"HTTP echo @ {rate:.0f}/s"
                    out.append(
                        await self.measure(drv, name, "echo", rate, duration, bounds=self.opts.http_bounds)
                    )
        finally:
            self.watch.remove("echo")
            child.stop()
        return out

    # ---- workers ------------------------------------------------------------------

    async def import_profiles(self, s: Settings, events: Sequence[Event] = ()) -> int:
        """Profiles of the customers of ``events`` (all of the population if none are
        given) under the key prefix of ``s``, as a bank loads them (``beacon customers
        import``): without them no offer is eligible, nothing is shown, and the decision
        path does less than in production. Only those not imported yet; returns how many."""
        from engine.store.redisio import connect
        from engine.store.state import StateStore

        done = self._profiled.setdefault(s.key_prefix, set())
        wanted = {e.key.decode() for e in events} if events else {c.customer_id for c in self.pop.customers}
        people = [(cid, self.pop.profile(cid)) for cid in sorted(wanted - done)]
        if not people:
            return 0
        client = connect(s)
        try:
            store = StateStore(client, s)
            for i in range(0, len(people), 5000):
                await store.put_profiles(people[i : i + 5000], s.profile_ttl_s)
        finally:
            await client.aclose()
        done.update(cid for cid, _ in people)
        return len(people)

    async def start_workers(self, n: int = 1) -> list[Worker]:
        """``n`` workers in one consumer group, on fresh topics and keys. They start
        together, so the group forms once instead of rebalancing for each newcomer."""
        s = isolated(self.base, tag=f"{self.tag}w{next(self._seq)}")
        await ensure_topics(s)
        # one group; each its own port and Faust data directory
        mine = [s if k == 0 else s.replace(http_port=free_port()) for k in range(n)]
        mine = [m.replace(data_dir=str(self.logs / f"data-{m.http_port}")) for m in mine]
        t0 = clock()
        started = await asyncio.gather(*(start_worker(m, self.logs) for m in mine), return_exceptions=True)
        log.info("%d worker(s) ready in %.1f s", n, clock() - t0)
        out = [w for w in started if isinstance(w, Worker)]
        for w in out:
            self.watch.add("worker", w.proc.pid)
            self.workers.append({"app_id": s.app_id, "topic_prefix": s.topic_prefix, "log": str(w.log_path)})
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            self.stop_workers(out)
            raise failed[0]
        return out

    def stop_workers(self, workers: Sequence[Worker]) -> None:
        t0 = clock()
        for w in workers:
            self.watch.remove("worker", w.proc.pid)
            w.proc.terminate()  # all at once: each finishes its in-flight events
        for w in workers:
            w.stop()
        log.info("%d worker(s) stopped in %.1f s", len(workers), clock() - t0)

    @contextlib.asynccontextmanager
    async def worker_group(self, n: int = 1) -> AsyncIterator[list[Worker]]:
        workers = await self.start_workers(n)
        try:
            yield workers
        finally:
            self.stop_workers(workers)

    # ---- decision paths -----------------------------------------------------------

    async def http_phase(
        self,
        drv: Driver,
        urls: Sequence[str],
        rate: float,
        duration: float,
        role: str = "ladder",
        profiles: Settings | None = None,
    ) -> Phase:
        """The HTTP path at ``rate`` against the workers at ``urls`` (events round robin),
        whose settings (for the customers' profiles) are ``profiles``."""
        name = _name("HTTP path", len(urls), rate)
        return await self.measure(
            drv,
            name,
            "http",
            rate,
            duration,
            bounds=self.opts.http_bounds,
            metrics_urls=urls,
            workers=len(urls),
            role=role,
            responses=True,
            profiles=profiles,
        )

    async def kafka_phase(
        self, rate: float, duration: float, workers: int = 1, role: str = "ladder"
    ) -> Phase:
        """Fresh workers and fresh topics per phase: the embedded broker's fetch cost grows
        with a partition's history, so phases must not inherit each other's batches."""
        async with self.worker_group(workers) as group:
            return await self.kafka_run(group[0].settings, rate, duration, [w.url for w in group], role)

    async def kafka_run(
        self, s: Settings, rate: float, duration: float, worker_urls: Sequence[str], role: str = "ladder"
    ) -> Phase:
        """The Kafka path at ``rate`` against running workers that use settings ``s``."""
        answers = [s.topic(f"decisions.{c}") for c in CHANNELS]
        topic = s.topic("interactions")
        if len(worker_urls) > 1:
            await wait_assigned(worker_urls, topic, s.partitions)
        async with self._kafka_client(s.kafka_bootstrap, answers) as client:
            waited = await probe(client, topic, self.events(30, 1.0), timeout=90.0)
        async with self.driver(self.kafka_spec(s, topic, answers)) as drv:
            phase = await self.measure(
                drv,
                _name("Kafka path", len(worker_urls), rate),
                "kafka",
                rate,
                duration,
                bounds=self.opts.kafka_bounds,
                metrics_urls=worker_urls,
                workers=max(len(worker_urls), 1),
                role=role,
                responses=True,
                profiles=s,
            )
        phase.extra["first_answer_s"] = round(waited, 2)
        if self.opts.audit:
            phase.extra.update(await audit_stats(s.kafka_bootstrap, s.topic("decisions.audit")))
        return phase


def _name(label: str, workers: int, rate: float) -> str:
    """
    >>> _name("HTTP path", 1, 500.0), _name("Kafka path", 2, 100.0)
    ('HTTP path @ 500/s', 'Kafka path, 2 workers @ 100/s')
    """
    return f"{label}{f', {workers} workers' if workers > 1 else ''} @ {rate:.0f}/s"


def _reading(drv: Driver) -> Any:
    def read() -> tuple[int, int, float]:
        sent, answered, hist = drv.live()
        return sent, answered, hist.percentile(99) * 1000.0 if hist.count else float("nan")

    return read


async def wait_assigned(urls: Sequence[str], topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Wait until the workers' consumer group has settled: every partition of ``topic``
    owned by exactly one worker and every worker owning some (read from their
    ``beacon_consumer_lag_records`` series). A rebalance in the middle of a phase would
    otherwise be measured as the path's latency."""
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < t0 + timeout:
            owned = [_owned(await scrape(http, u), topic) for u in urls]
            every = [p for o in owned for p in o]
            if all(owned) and sorted(every) == list(range(partitions)):
                log.info("consumer group settled in %.1f s: partitions %s", time.monotonic() - t0, owned)
                return
            await asyncio.sleep(0.5)
    log.warning("workers' group did not settle on %s within %.0f s; measuring anyway", topic, timeout)


def _owned(samples: promtext.Samples, topic: str) -> list[int]:
    return [
        int(promtext.label(labels, "partition") or -1)
        for (name, labels), _ in samples.items()
        if name == "beacon_consumer_lag_records" and promtext.label(labels, "topic") == topic
    ]


async def scrape(http: aiohttp.ClientSession, url: str | None) -> promtext.Samples:
    if not url:
        return {}
    with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
        async with http.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return promtext.parse(await resp.text())
    return {}


async def scrape_all(urls: Sequence[str]) -> list[promtext.Samples]:
    """Every worker's /metrics (no credential: auth is off in the load test's settings)."""
    if not urls:
        return []
    async with http_driver.session(4) as http:
        return [await scrape(http, u) for u in urls]


def last_hop(part: Part) -> dict[str, float]:
    """Broker timestamp of each answer (ms resolution) to its arrival at the client: the
    last hop alone, so the rest of a path's latency is the first hop plus the worker."""
    if not part.last_hop.count:
        return {}
    return {
        "last_hop_p50_ms": round(part.last_hop.percentile(50) * 1000.0, 1),
        "last_hop_p99_ms": round(part.last_hop.percentile(99) * 1000.0, 1),
    }


def server_side(
    before: Sequence[promtext.Samples], after: Sequence[promtext.Samples], path: str
) -> dict[str, Any]:
    """What the workers themselves counted during the phase (summed over workers): the
    decisions, their latency, the batch sizes and the latency of each stage."""
    if not any(after):
        return {}
    d = promtext.added(promtext.delta(a, b) for a, b in zip(after, before, strict=True) if a)
    label = f'path="{path}"'
    stages = {}
    for stage in STAGES:
        part = f'stage="{stage}"'
        count = promtext.total(d, "beacon_stage_latency_seconds_count", part)
        if count > 0:
            stages[stage] = {
                "count": int(count),
                "mean_ms": round(promtext.mean_ms(d, "beacon_stage_latency_seconds", part), 3),
                "p50_ms": promtext.quantile_ms(d, "beacon_stage_latency_seconds", 0.5, part),
                "p99_ms": promtext.quantile_ms(d, "beacon_stage_latency_seconds", 0.99, part),
            }
    batches = promtext.total(d, "beacon_batch_size_count")
    return {
        "server_mean_ms": round(promtext.mean_ms(d, "beacon_decision_latency_seconds", label), 3),
        "server_p99_ms": promtext.quantile_ms(d, "beacon_decision_latency_seconds", 0.99, label),
        "server_decided": promtext.total(d, "beacon_events_total", label),
        "server_overloaded": promtext.total(d, "beacon_overloaded_total"),
        "server_degraded": promtext.total(d, "beacon_degraded_decisions_total"),
        "server_store_errors": promtext.total(d, "beacon_store_errors_total"),
        "batch_mean": round(promtext.total(d, "beacon_batch_size_sum") / batches, 2) if batches else None,
        "stages": stages,
    }
