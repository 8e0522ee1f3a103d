"""Several generator processes for one phase, when one cannot keep up (``--procs N``).

The parent builds the whole schedule up front and deals it out: on the HTTP path event
*i* goes to process ``i % N``; on the Kafka path each process takes the customers whose
answers come back on its partitions (:func:`loadtest.kafka_driver.owner`), so it reads
only its own answers. Each process sends its share at the intended times of the common
schedule (``time.perf_counter()`` is CLOCK_MONOTONIC on Linux: one clock for every
process), records answers in HDR histograms, and sends back a :class:`Part`; the parent
merges the parts. Each part keeps its process's lateness, so a process that could not
keep up shows in the report.

Processes are started with ``spawn`` (a fork of a process running an event loop and
Kafka client threads is not safe) once per phase group and reused for every job.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from time import perf_counter as clock
from typing import Any, Protocol

from loadtest.hdr import Histogram
from loadtest.openloop import Job, Recorder
from loadtest.part import Part, merged

log = logging.getLogger("loadtest.procs")
PROGRESS_S = 0.5  # how often a process reports progress (only when a progress bar shows)


class Sender(Protocol):
    """What sends one job open loop and measures it (HTTP or Kafka, in any process)."""

    @property
    def current(self) -> Recorder | None: ...

    async def run(self, job: Job, start: float, proc: int = 0) -> Part: ...


@dataclass(frozen=True)
class SenderSpec:
    """How a generator process builds its sender (picklable, crosses the process boundary)."""

    kind: str  # "http" or "kafka"
    urls: tuple[str, ...] = ()
    pool: int = 256
    bootstrap: str = ""
    topic: str = ""  # Kafka: where events go
    answer_topics: tuple[str, ...] = ()  # Kafka: where answers come back
    linger_ms: float = 1.0
    fetch_max_wait_ms: int = 5
    partitions: int = 4  # of the answer topics (the Kafka split)


def split(job: Job, spec: SenderSpec, procs: int) -> list[Job]:
    """Deal a job out to ``procs`` processes (see the module's docstring).

    >>> from loadtest.openloop import Event
    >>> job = Job([Event(str(i), b"C%d" % i, b"{}") for i in range(6)], [i / 10 for i in range(6)], 1.0)
    >>> shares = split(job, SenderSpec("http"), 2)
    >>> [len(j.events) for j in shares], shares[1].offsets
    ([3, 3], [0.1, 0.3, 0.5])
    >>> sum(len(j.events) for j in split(job, SenderSpec("kafka"), 2))
    6
    """
    if spec.kind == "kafka":
        from loadtest.kafka_driver import owner

        who = [owner(ev.key, spec.partitions, procs) for ev in job.events]
    else:
        who = [i % procs for i in range(len(job.events))]
    out = []
    for k in range(procs):
        idx = [i for i, w in enumerate(who) if w == k]
        out.append(
            replace(
                job,
                events=[job.events[i] for i in idx],
                offsets=[job.offsets[i] for i in idx],
                max_in_flight=-(-job.max_in_flight // procs),
                responder=job.responder.fork(k) if job.responder is not None else None,
            )
        )
    return out


@contextlib.asynccontextmanager
async def open_sender(spec: SenderSpec, proc: int = 0, procs: int = 1) -> AsyncIterator[Sender]:
    """A connected sender for ``spec``, in this process."""
    if spec.kind == "http":
        from loadtest import http_driver

        async with http_driver.session(spec.pool) as http:
            yield http_driver.HttpSender(http, spec.urls)
        return
    from loadtest.kafka_driver import KafkaClient

    assign = (procs, proc, spec.partitions) if procs > 1 else None
    client = KafkaClient(
        spec.bootstrap, list(spec.answer_topics), spec.linger_ms, spec.fetch_max_wait_ms, assign
    )
    async with client:
        yield _KafkaSender(client, spec.topic)


class _KafkaSender:
    def __init__(self, client: Any, topic: str) -> None:
        self.client, self.topic = client, topic

    @property
    def current(self) -> Recorder | None:
        return self.client.current  # type: ignore[no-any-return]

    async def run(self, job: Job, start: float, proc: int = 0) -> Part:
        return await self.client.run(self.topic, job, start, proc)  # type: ignore[no-any-return]


# ---- the child ------------------------------------------------------------------------


def child_main(conn: Connection, spec: SenderSpec, proc: int, procs: int, progress: bool) -> None:
    """Entry point of a generator process: serve jobs until told to stop."""
    import uvloop

    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s proc{proc} %(levelname)s %(message)s")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(conn, spec, proc, procs, progress))


async def _serve(conn: Connection, spec: SenderSpec, proc: int, procs: int, progress: bool) -> None:
    async with open_sender(spec, proc, procs) as sender:
        conn.send(("ready", os.getpid()))
        while True:
            job = await asyncio.to_thread(conn.recv)
            if job is None:
                return
            gc.collect()
            gc.freeze()  # the job's events are never scanned again
            conn.send(("armed", None))
            _, start = await asyncio.to_thread(conn.recv)
            gc.disable()  # a collection pause would show as lateness
            reporter = asyncio.get_running_loop().create_task(_report(conn, sender)) if progress else None
            try:
                part = await sender.run(job, start, proc)
            finally:
                gc.enable()
                if reporter is not None:
                    reporter.cancel()
            conn.send(("done", part.to_wire()))


async def _report(conn: Connection, sender: Sender) -> None:
    while True:
        await asyncio.sleep(PROGRESS_S)
        rec = sender.current
        if rec is not None:
            p = rec.part
            conn.send(("progress", (p.sent, p.answered, p.latency.to_dict())))


# ---- the parent -----------------------------------------------------------------------


@dataclass
class Fleet:
    """``procs`` generator processes, each with its own sender built from ``spec``."""

    spec: SenderSpec
    procs: int
    progress: bool = False
    on_pid: Callable[[int], None] | None = None  # e.g. watch each process's CPU
    _children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = field(default_factory=list)
    _live: dict[int, tuple[int, int, Histogram]] = field(default_factory=dict)

    async def __aenter__(self) -> Fleet:
        ctx = multiprocessing.get_context("spawn")
        for k in range(self.procs):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=child_main, args=(theirs, self.spec, k, self.procs, self.progress), daemon=True
            )
            proc.start()
            theirs.close()
            self._children.append((proc, mine))
        try:
            for k, (child, conn) in enumerate(self._children):
                kind, pid = await self._recv(conn, child, timeout=90.0)
                if kind != "ready":
                    raise RuntimeError(f"generator process {k} sent {kind!r} instead of ready")
                if self.on_pid is not None:
                    self.on_pid(pid)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _, conn in self._children:
            with contextlib.suppress(OSError):
                conn.send(None)
        for child, conn in self._children:
            await asyncio.to_thread(child.join, 15.0)
            if child.is_alive():
                child.terminate()
                await asyncio.to_thread(child.join, 5.0)
            conn.close()
        self._children.clear()

    async def run(self, job: Job, lead_s: float = 0.2) -> Part:
        """Deal ``job`` out, start every share at the same instant, merge what they measured."""
        shares = split(job, self.spec, self.procs)
        self._live.clear()
        for (_, conn), share in zip(self._children, shares, strict=True):
            await asyncio.to_thread(conn.send, share)
        for child, conn in self._children:
            await self._recv(conn, child, timeout=60.0)  # armed
        start = clock() + lead_s
        for _, conn in self._children:
            conn.send(("go", start))
        parts = await asyncio.gather(*(self._collect(k) for k in range(self.procs)))
        return merged(parts)

    async def _collect(self, k: int) -> Part:
        child, conn = self._children[k]
        while True:
            kind, body = await self._recv(conn, child, timeout=None)
            if kind == "done":
                return Part.from_wire(body)
            if kind == "progress":
                sent, answered, hist = body
                self._live[k] = (sent, answered, Histogram.from_dict(hist))

    def live(self) -> tuple[int, int, Histogram]:
        """Sent, answered and the latency histogram so far, over every process."""
        hist = Histogram()
        sent = answered = 0
        for s, a, h in self._live.values():
            sent, answered = sent + s, answered + a
            hist.merge(h)
        return sent, answered, hist

    @staticmethod
    async def _recv(
        conn: Connection, child: multiprocessing.process.BaseProcess, timeout: float | None
    ) -> tuple[str, Any]:
        """The next message of a child; fails if it dies or stays silent past ``timeout``."""
        waited = 0.0
        while not await asyncio.to_thread(conn.poll, 0.5):
            waited += 0.5
            if not child.is_alive():
                raise RuntimeError(f"generator process {child.pid} exited ({child.exitcode})")
            if timeout is not None and waited > timeout:
                raise RuntimeError(f"generator process {child.pid} silent for {timeout:.0f} s")
        msg: tuple[str, Any] = conn.recv()
        return msg
