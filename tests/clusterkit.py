"""A failover harness for Redis Cluster tests: a cluster of one's own to break, a load of
acknowledged writes spread over the slots, a master SIGKILLed under it, and the figures
(how long writes failed, how many acknowledged writes the promoted replica never had).

Reuse: ``run_failover(cluster, load)`` takes any ``load(stop, log)`` coroutine that keeps
calling something and notes each call in the :class:`CallLog` (``with log.call(slot):``),
so "decisions under failover" can pass a load of decisions instead of :class:`Counters`.

    with own_cluster(tmp_path) as cluster:
        counters = Counters(cluster_client(cluster.url), keys=spread_keys(48))
        report = asyncio.run(run_failover(cluster, counters.run, victim=counters.keys[0]))
        lost = asyncio.run(counters.lost())
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio.cluster import RedisCluster

from engine.ops.infra import start_redis_cluster
from engine.ops.rediscluster import EmbeddedCluster, key_slot


@contextlib.contextmanager
def own_cluster(workdir: Path, node_timeout_ms: int = 1000) -> Iterator[EmbeddedCluster]:
    """A cluster for one test to break (not the session's ``redis_cluster``)."""
    cluster = start_redis_cluster(workdir / "data", workdir, node_timeout_ms=node_timeout_ms)
    try:
        yield cluster
    finally:
        cluster.stop()


def cluster_client(url: str, timeout_s: float = 0.5) -> RedisCluster:
    """A plain redis-py cluster client, its timeouts short so a dead node costs little."""
    return RedisCluster.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def spread_keys(n: int, prefix: str = "fo") -> list[str]:
    """``n`` keys; by CRC16 they fall all over the 16384 slots, so on every master."""
    return [f"{prefix}:{i}" for i in range(n)]


@dataclass
class Call:
    slot: int
    started: float
    ended: float = 0.0
    error: str = ""  # empty: it succeeded


@dataclass
class CallLog:
    """Every call of a load: when it started and ended, on which slot, and how it failed."""

    calls: list[Call] = field(default_factory=list)

    @contextlib.contextmanager
    def call(self, slot: int) -> Iterator[Call]:
        """Times one call; an exception is noted (as ``error``) and swallowed."""
        c = Call(slot, time.monotonic())
        try:
            yield c
        except Exception as exc:  # noqa: BLE001 - a failed call is what the log is for
            c.error = f"{type(exc).__name__}: {exc}"
        finally:
            c.ended = time.monotonic()
            self.calls.append(c)

    def failed(self, slots: set[int] | None = None, started_after: float = 0.0) -> list[Call]:
        return [c for c in self.calls if c.error and c.started >= started_after and _in(c, slots)]

    def first_success(self, after: float, slots: set[int] | None = None) -> float | None:
        """When the first call started after ``after`` (on those slots) succeeded."""
        ends = [c.ended for c in self.calls if not c.error and c.started >= after and _in(c, slots)]
        return min(ends, default=None)

    def longest_gap(self, slots: set[int] | None = None) -> float:
        """The longest time between two successes (on those slots): the outage seen."""
        ends = sorted(c.ended for c in self.calls if not c.error and _in(c, slots))
        return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)


def _in(call: Call, slots: set[int] | None) -> bool:
    return slots is None or call.slot in slots


Load = Callable[[asyncio.Event, CallLog], Awaitable[None]]

# redis-py 8.1's async cluster client, when a node fails, disconnects connections that other
# tasks are still connecting on: they fail with this AttributeError (not a RedisError), on any
# slot, up to about a second after the failover (seen with 48 concurrent writers).
CLIENT_RACE = "AttributeError: 'NoneType' object has no attribute 'writelines'"


@dataclass
class FailoverReport:
    killed: str  # address of the master killed
    promoted: str  # address of the replica that took over
    dead_slots: set[int]
    killed_at: float
    failover_done_at: float  # when wait_failover saw the replica serve and cluster_state:ok
    log: CallLog

    @property
    def failover_s(self) -> float:
        return self.failover_done_at - self.killed_at

    @property
    def writes_back_s(self) -> float | None:
        """Kill to the first success on the dead master's slots (None: never)."""
        at = self.log.first_success(self.killed_at, self.dead_slots)
        return None if at is None else at - self.killed_at

    def errors_after_failover(self, known_races: bool = True) -> list[Call]:
        """Calls started once the failover was complete that still failed (with
        ``known_races`` false, leaving out the client's own :data:`CLIENT_RACE`)."""
        failed = self.log.failed(started_after=self.failover_done_at)
        return failed if known_races else [c for c in failed if not c.error.startswith(CLIENT_RACE)]

    def error_kinds(self) -> dict[str, int]:
        """Failed calls by error (the message up to its first colon after the type)."""
        out: dict[str, int] = {}
        for c in self.log.failed():
            kind = c.error.split(":")[0] + ": " + c.error.split(": ", 1)[-1][:60]
            out[kind] = out.get(kind, 0) + 1
        return out

    def summary(self) -> str:
        dead, others = self.log.failed(self.dead_slots), self.log.failed()
        back = self.writes_back_s
        return (
            f"killed {self.killed}, {self.promoted} promoted: failover seen complete after "
            f"{self.failover_s:.2f} s; writes to its slots back after "
            f"{'never' if back is None else f'{back:.2f} s'}; longest gap between successes "
            f"{self.log.longest_gap(self.dead_slots):.2f} s on its slots, "
            f"{self.log.longest_gap(set(range(16384)) - self.dead_slots):.2f} s on the others; "
            f"{len(self.log.calls)} calls, {len(others)} failed ({len(dead)} on its slots): "
            + ", ".join(f"{n} x {kind}" for kind, n in sorted(self.error_kinds().items()))
        )


async def run_failover(
    cluster: EmbeddedCluster,
    load: Load,
    victim: str | int,
    warmup_s: float = 1.0,
    after_s: float = 1.0,
    timeout_s: float = 30.0,
) -> FailoverReport:
    """Run ``load``, SIGKILL the master of ``victim`` (a key or slot) after ``warmup_s``,
    wait for its replica to take over, keep the load on ``after_s`` more, then stop it."""
    stop, log = asyncio.Event(), CallLog()
    task = asyncio.create_task(load(stop, log))
    try:
        await asyncio.sleep(warmup_s)
        dead = await asyncio.to_thread(cluster.kill_master_of, victim)
        killed_at = time.monotonic()
        heir = await asyncio.to_thread(cluster.wait_failover, dead, timeout_s)
        done_at = time.monotonic()
        await asyncio.sleep(after_s)
    finally:
        stop.set()
        await task
    slots = {s for lo, hi in dead.slots for s in range(lo, hi + 1)}
    return FailoverReport(dead.address, heir.address, slots, killed_at, done_at, log)


@dataclass
class Counters:
    """The plain load: INCR on keys over every slot, ``lanes`` writers each on its own keys
    (by default one per key, so a call waiting on the dead node holds up no other key).
    An acknowledged INCR that the promoted replica never had shows twice: the next INCR of
    that key answers a number already acknowledged (noted in ``rewound``), and at the end
    the key holds less than the last acknowledged number (see :meth:`lost`)."""

    client: RedisCluster
    keys: list[str]
    lanes: int = 0  # 0: one writer per key
    acked: dict[str, int] = field(default_factory=dict)  # key -> last number acknowledged
    rewound: dict[str, int] = field(default_factory=dict)  # key -> acknowledged numbers given again

    async def run(self, stop: asyncio.Event, log: CallLog) -> None:
        n = self.lanes or len(self.keys)
        await asyncio.gather(*(self._lane(self.keys[i::n], stop, log) for i in range(n)))

    async def _lane(self, keys: list[str], stop: asyncio.Event, log: CallLog) -> None:
        while not stop.is_set():
            for key in keys:
                with log.call(key_slot(key)) as call:
                    self._ack(key, int(await self.client.incr(key)))
                if call.error:
                    await asyncio.sleep(0.01)  # do not spin on a dead node
                if stop.is_set():
                    return

    def _ack(self, key: str, number: int) -> None:
        before = self.acked.get(key, 0)
        if number <= before:
            self.rewound[key] = self.rewound.get(key, 0) + before - number + 1
        self.acked[key] = number

    async def held(self) -> dict[str, int]:
        values = [await self.client.get(k) for k in self.keys]
        return {k: int(v or 0) for k, v in zip(self.keys, values, strict=True)}

    async def lost(self) -> dict[str, int]:
        """Per key, acknowledged increments the cluster lost (keys losing none left out)."""
        held = await self.held()
        out = dict(self.rewound)
        for k in self.keys:
            if held[k] < self.acked.get(k, 0):
                out[k] = out.get(k, 0) + self.acked[k] - held[k]
        return out
