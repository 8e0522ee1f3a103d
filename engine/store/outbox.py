"""The outbox: the records each commit wrote, read back for the relay to deliver.

The commit script (engine/store/lua/commit.lua) appends one entry per decision to the
stream ``P:outbox`` (on a Redis Cluster, the stream of the customer's slot group:
engine/store/layout.py) in the same atomic step as the state: its audit record, the alerts
it raised, the label its event carries. The relay (agents/relay.py) reads the entries as
one consumer of the group ``relay`` (one consumer per worker), hands the records to
Kafka and deletes an entry once all its records are delivered. An entry a relay read and
did not delete (its worker died, or the broker refused it) is claimed again after
``claim_idle_s`` by whichever relay looks first: delivery is at least once, and the
consumers downstream dedupe (the desk by alert id, the trainer by decision id and label).

On a cluster the relay cannot block on one stream: it reads every group's stream in one
round trip (one command per group, each node's sent at once) and, while they are all
empty, waits a little longer each time, up to the read's ``block_ms``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from engine.settings import Settings
from engine.store.clusterline import ClusterLine
from engine.store.layout import KeyLayout
from engine.store.redisio import guarded, redis_errors

GROUP = "relay"
_FIRST_WAIT_MS = 5  # a cluster relay's first wait after finding every stream empty


@dataclass(frozen=True, slots=True)
class Entry:
    """One decision's outgoing records: topic name (unprefixed) -> values, keyed by customer;
    and the stream it is in."""

    id: bytes
    customer: bytes
    records: tuple[tuple[str, bytes], ...]
    stream: str = ""


def entry_of(entry_id: bytes, fields: dict[bytes, bytes], stream: str = "") -> Entry:
    """An outbox entry as the relay sends it: ``a`` the audit record, ``al1``, ``al2``... the
    alert records, ``f`` a label.

    >>> e = entry_of(b"1-0", {b"c": b"C1", b"a": b"{}", b"al1": b'{"x":1}', b"al2": b'{"y":2}', b"f": b"{}"})
    >>> [topic for topic, _ in e.records], e.customer
    (['decisions.audit', 'risk.alerts', 'risk.alerts', 'feedback'], b'C1')
    """
    records: list[tuple[str, bytes]] = [("decisions.audit", fields[b"a"])]
    records += [("risk.alerts", value) for name, value in fields.items() if name.startswith(b"al")]
    if b"f" in fields:
        records.append(("feedback", fields[b"f"]))
    return Entry(entry_id, fields.get(b"c", b""), tuple(records), stream)


class Outbox:
    def __init__(self, client: aioredis.Redis, settings: Settings, consumer: str | None = None) -> None:
        self._redis = client
        self.layout = KeyLayout.of(settings.key_prefix, settings.redis_cluster, settings.redis_slot_groups)
        self.keys = self.layout.outboxes
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._claim_idle_ms = int(settings.outbox_claim_idle_s * 1000)
        self._cursors = dict.fromkeys(self.keys, b"0-0")
        self._idle_wait_ms = _FIRST_WAIT_MS
        self._line = ClusterLine(client)  # script calls, one per stream, sent together
        self._done = client.register_script(
            resources.files("engine.store").joinpath("lua", "outbox_done.lua").read_text()
        )

    @property
    def key(self) -> str:
        """The one stream on one Redis (the first group's on a cluster)."""
        return self.keys[0]

    async def ensure_group(self) -> None:
        """Create the relay group on each stream, reading from its start (idempotent)."""
        with redis_errors("outbox group"):
            for key in self.keys:
                try:
                    await self._redis.xgroup_create(key, GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def forget_idle_consumers(self, idle_ms: int) -> int:
        """Drop consumers (workers gone) with nothing pending, idle ``idle_ms``: each
        worker start adds one, and the group would otherwise keep them all."""
        me, gone = self.consumer.encode(), 0
        with redis_errors("outbox consumers"):
            for key in self.keys:
                try:
                    consumers = await self._redis.xinfo_consumers(key, GROUP)
                except ResponseError as exc:  # a stream no relay has made yet: nobody to forget
                    if "no such key" not in str(exc).lower() and "NOGROUP" not in str(exc):
                        raise
                    continue
                names = [
                    c["name"] for c in consumers
                    if int(c["pending"]) == 0 and int(c["idle"]) >= idle_ms and c["name"] != me
                ]  # fmt: skip
                for name in names:
                    await self._redis.xgroup_delconsumer(key, GROUP, name)
                gone += len(names)
        return gone

    async def read(self, count: int, block_ms: int | None) -> list[Entry]:
        """Entries no relay has read yet, waiting up to ``block_ms`` for the first (None:
        not at all; 0 would wait for ever)."""
        if len(self.keys) == 1:
            reply: Any = await guarded(
                "outbox read",
                self._redis.xreadgroup(GROUP, self.consumer, {self.key: ">"}, count=count, block=block_ms),
            )
            return _entries(reply[0][1] if reply else [], self.key)
        entries = await self._read_all(count)
        if entries or not block_ms:
            self._idle_wait_ms = _FIRST_WAIT_MS
            return entries
        await asyncio.sleep(min(self._idle_wait_ms, block_ms) / 1000)
        self._idle_wait_ms = min(self._idle_wait_ms * 2, block_ms)
        return []

    async def _read_all(self, count: int) -> list[Entry]:
        with redis_errors("outbox read"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in self.keys:
                    # The node named: XREADGROUP's key is not at a fixed place, so redis-py
                    # would ask the server (COMMAND GETKEYS) for every stream, every read.
                    node = self._redis.get_node_from_key(key)  # type: ignore[attr-defined]
                    args = ("GROUP", GROUP, self.consumer, "COUNT", count, "STREAMS", key, ">")
                    pipe.execute_command("XREADGROUP", *args, target_nodes=node)
                replies = await pipe.execute()
        entries: list[Entry] = []
        for key, reply in zip(self.keys, replies, strict=True):
            if reply:
                entries += _entries(reply[0][1], key)
        return entries

    async def claim(self, count: int) -> list[Entry]:
        """Entries read but not deleted for ``claim_idle_s`` (a relay died, or the broker
        refused them), now this consumer's; walks each pending list a page per call."""
        with redis_errors("outbox claim"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in self.keys:
                    pipe.xautoclaim(
                        key,
                        GROUP,
                        self.consumer,
                        self._claim_idle_ms,
                        start_id=self._cursors[key],
                        count=count,
                    )
                replies = await pipe.execute()
        entries: list[Entry] = []
        for key, reply in zip(self.keys, replies, strict=True):
            self._cursors[key] = reply[0]
            entries += _entries(reply[1], key)
        return entries

    async def done(self, entries: Sequence[Entry]) -> None:
        """Delivered: acknowledge and delete, so each stream holds only what is pending."""
        if not entries:
            return
        by_stream: dict[str, list[bytes]] = {}
        for e in entries:
            by_stream.setdefault(e.stream or self.key, []).append(e.id)
        calls = [(self._done, [key], [GROUP, *ids]) for key, ids in by_stream.items()]
        with redis_errors("outbox delete"):
            await self._line.run(calls)

    async def backlog(self) -> int:
        """Entries not delivered yet (read or not), over every stream."""
        with redis_errors("outbox length"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in self.keys:
                    pipe.xlen(key)
                return sum(int(n) for n in await pipe.execute())


def _entries(raw: Sequence[Any], stream: str) -> list[Entry]:
    # XAUTOCLAIM lists entries deleted meanwhile as (id, None): nothing left to send.
    return [entry_of(entry_id, fields, stream) for entry_id, fields in raw if fields]
